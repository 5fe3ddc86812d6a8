"""Audits: the security checklist run against the live hosts (`audit.security`), one line per item with its evidence.

Each host answers one read-only question (SECURITY_FACTS, as root); the site is asked from this
machine as a visitor would (HTTP, HTTPS, CORS, the database port). Every verdict is a pure function
of those answers, so the rules are tested without hosts.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field

from vigil.commands import Command, script
from vigil.facts import sections

# One round trip per host, read-only. $1: the site's name ("" on a host without one); the rest: the
# secrets files secrets.push writes. TLS versions are tried against the host's own nginx (old ones with
# OpenSSL's security level 0, so that a refusal is the server's, not this client's).
SECURITY_FACTS = r'''
site=$1; shift
echo "@sshd"; sshd -T 2>/dev/null | grep -Ei '^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication|permitemptypasswords) '
echo "@ufw"; ufw status verbose 2>/dev/null
echo "@envfiles"; for file in "$@"; do [ -e "$file" ] && stat -c '%n %a %U' -- "$file"; done
echo "@upgrades"; printf '%s %s\n' "$(systemctl is-enabled unattended-upgrades.service 2>/dev/null)" "$(systemctl is-active unattended-upgrades.service 2>/dev/null)"
echo "@nginx"; command -v nginx >/dev/null && nginx -T 2>/dev/null | grep -E '^[[:space:]]*limit_req ' | sed 's/^[[:space:]]*//' | sort -u
echo "@tls"; [ -n "$site" ] && for version in tls1 tls1_1 tls1_2 tls1_3; do
    if echo | timeout 5 openssl s_client -connect 127.0.0.1:443 -servername "$site" "-$version" -cipher 'DEFAULT:@SECLEVEL=0' >/dev/null 2>&1
    then echo "$version accepted"; else echo "$version refused"; fi
done
echo "@end"
'''

SSH_HARDENED = {"permitrootlogin": "no", "passwordauthentication": "no", "kbdinteractiveauthentication": "no",
                "permitemptypasswords": "no"}
SECURITY_HEADERS = ("Strict-Transport-Security", "Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options",
                    "Referrer-Policy")
FOREIGN_ORIGIN = "https://audit.invalid"


def security_facts_command(site: str, secrets_files: list[str]) -> Command:
    return script(SECURITY_FACTS, site, *secrets_files)


@dataclass
class SecurityFacts:
    sshd: dict[str, str] = field(default_factory=dict)
    ufw: list[str] = field(default_factory=list)
    env_files: list[tuple[str, str, str]] = field(default_factory=list)  # path, mode, owner
    upgrades: tuple[str, str] = ("", "")
    nginx: list[str] = field(default_factory=list)
    tls: dict[str, bool] = field(default_factory=dict)  # tls1_2 -> accepted


TLS_NAMES = {"tls1": "TLSv1", "tls1_1": "TLSv1.1", "tls1_2": "TLSv1.2", "tls1_3": "TLSv1.3"}


def parse_security_facts(stdout: str) -> SecurityFacts:
    facts = SecurityFacts()
    for section, text in sections(stdout):
        if section == "sshd":
            key, _, value = text.partition(" ")
            facts.sshd[key.lower()] = value.strip().lower()
        elif section == "ufw":
            facts.ufw.append(text)
        elif section == "envfiles" and len(text.split()) == 3:
            path, mode, owner = text.split()
            facts.env_files.append((path, mode, owner))
        elif section == "upgrades":
            enabled, _, active = text.partition(" ")
            facts.upgrades = (enabled, active)
        elif section == "nginx":
            facts.nginx.append(text)
        elif section == "tls" and text.split()[0] in TLS_NAMES:
            version, _, answer = text.partition(" ")
            facts.tls[version] = answer == "accepted"
    return facts


@dataclass(frozen=True)
class Item:
    """One line of the checklist: what, on which host, pass or fail, and the evidence."""

    name: str
    host: str
    ok: bool
    evidence: str


def host_items(host: str, facts: SecurityFacts, web: bool, database: bool, app_user: str, database_port: int = 5432) -> list[Item]:
    """The checklist items a host's own answer settles."""
    items = []
    wrong = {key: facts.sshd.get(key, "?") for key, wanted in SSH_HARDENED.items() if facts.sshd.get(key) != wanted}
    items.append(Item("SSH hardened", host, not wrong,
                      "; ".join(f"{key} {value}" for key, value in wrong.items()) if wrong
                      else "no root login, no passwords, no keyboard-interactive, no empty passwords"))
    status = next((line for line in facts.ufw if line.startswith("Status:")), "Status: unknown")
    default = next((line for line in facts.ufw if line.startswith("Default:")), "")
    active = status == "Status: active" and "deny (incoming)" in default
    items.append(Item("firewall active", host, active, f"{status}; {default or 'no default policy'}"))
    if database:
        open_to_all = [line for line in facts.ufw if re.match(rf"^{database_port}(/tcp)?\b", line)
                       and re.search(r"\bAnywhere\b", line.split("ALLOW", 1)[-1])]
        items.append(Item("PostgreSQL not open to the world (firewall)", host, active and not open_to_all,
                          "; ".join(open_to_all) if open_to_all else
                          f"{database_port} allowed only from the listed sources" if active else "the firewall is not active"))
    if web:
        loose = [f"{path} {mode} {owner}" for path, mode, owner in facts.env_files if mode != "600" or owner != app_user]
        items.append(Item("secrets files 0600, owned by the app user", host, bool(facts.env_files) and not loose,
                          "; ".join(loose) if loose else f"{len(facts.env_files)} files, 0600 {app_user}"
                          if facts.env_files else "no env files found: run secrets.push"))
        accepted = [TLS_NAMES[version] for version, ok in facts.tls.items() if ok]
        refused = [TLS_NAMES[version] for version, ok in facts.tls.items() if not ok]
        items.append(Item("only TLS 1.2 and 1.3", host, bool(accepted) and set(accepted) <= {"TLSv1.2", "TLSv1.3"},
                          f"accepts {', '.join(accepted) or 'nothing'}; refuses {', '.join(refused) or 'nothing'}"
                          if facts.tls else "no TLS handshake could be tried"))
        limits = [line for line in facts.nginx if line.startswith("limit_req ")]
        items.append(Item("rate limiting active", host, bool(limits), limits[0].rstrip(";") if limits else "no limit_req in nginx -T"))
    enabled, running = facts.upgrades
    items.append(Item("unattended upgrades on", host, enabled == "enabled" and running == "active",
                      f"unattended-upgrades.service {enabled or '?'}, {running or '?'}"))
    return items


def site_items(host: str, server_name: str, verify, allowed_origin: str, get=None, options=None) -> list[Item]:
    """What a visitor sees: HTTP sends to HTTPS, HSTS and the other security headers, CORS for the
    configured origin only."""
    import requests

    get = get or requests.get
    options = options or requests.options
    items = []
    try:
        plain = get(f"http://{server_name}/", allow_redirects=False, timeout=10)
        location = plain.headers.get("Location", "")
        items.append(Item("HTTP redirects to HTTPS", host, plain.status_code in (301, 308) and location.startswith("https://"),
                          f"HTTP {plain.status_code} -> {location or 'no Location'}"))
    except requests.RequestException as error:
        items.append(Item("HTTP redirects to HTTPS", host, False, type(error).__name__))
    try:
        page = get(f"https://{server_name}/", verify=verify, timeout=10)
        hsts = page.headers.get("Strict-Transport-Security", "")
        age = re.search(r"max-age=(\d+)", hsts)
        items.append(Item("HSTS", host, bool(age) and int(age.group(1)) >= 15552000, hsts or "no Strict-Transport-Security header"))
        missing = [name for name in SECURITY_HEADERS[1:] if name not in page.headers]
        items.append(Item("security headers", host, not missing,
                          f"missing {', '.join(missing)}" if missing else ", ".join(SECURITY_HEADERS[1:])))
    except requests.RequestException as error:
        items += [Item(name, host, False, type(error).__name__) for name in ("HSTS", "security headers")]
    try:
        answers = {origin: options(f"https://{server_name}/api/prayers", verify=verify, timeout=10,
                                   headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
                   for origin in (allowed_origin, FOREIGN_ORIGIN)}
        foreign = answers[FOREIGN_ORIGIN].headers.get("Access-Control-Allow-Origin", "")
        own = answers[allowed_origin].headers.get("Access-Control-Allow-Origin", "")
        items.append(Item("CORS restricted to the configured origin", host, foreign in ("", "null") and own == allowed_origin,
                          f"{allowed_origin} -> {own or 'not allowed'}; {FOREIGN_ORIGIN} -> {foreign or 'not allowed'}"))
    except requests.RequestException as error:
        items.append(Item("CORS restricted to the configured origin", host, False, type(error).__name__))
    return items


ROUTE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def protected_routes(vars) -> list[tuple[str, str]]:
    """app_protected_routes, checked: (method, path) pairs."""
    from vigil.errors import ConfigError

    routes = vars["app_protected_routes"] or []
    where = vars.where("app_protected_routes")
    if not isinstance(routes, list):
        raise ConfigError(f"{where}: expected a list of {{method, path}}")
    found = []
    for number, route in enumerate(routes, start=1):
        if not (isinstance(route, dict) and route.get("method") in ROUTE_METHODS and isinstance(route.get("path"), str)
                and re.fullmatch(r"/[A-Za-z0-9._~/%?=&-]{0,200}", route["path"])):
            raise ConfigError(f"{where}: route {number}: expected {{method: {'|'.join(ROUTE_METHODS)}, path: /...}}, got {route!r}")
        found.append((route["method"], route["path"]))
    return found


def authentication_item(host: str, server_name: str, verify, routes: list[tuple[str, str]], send=None) -> Item:
    """Each protected route, asked without credentials, must answer 401 or 403."""
    import requests

    send = send or requests.request
    if not routes:
        return Item("authentication on protected routes", host, True, "the app declares no protected route (app_protected_routes)")
    open_routes, answers = [], []
    for method, path in routes:
        try:
            status = send(method, f"https://{server_name}{path}", verify=verify, timeout=10, allow_redirects=False).status_code
        except requests.RequestException as error:
            status = type(error).__name__
        answers.append(f"{method} {path} -> {status}")
        if status not in (401, 403):
            open_routes.append(f"{method} {path} -> {status}")
    return Item("authentication on protected routes", host, not open_routes, "; ".join(open_routes or answers))


def origin_of(url: str) -> str:
    """The origin a browser sends for pages under `url` (scheme://host[:port], no path)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def port_closed_item(host: str, address: str, port: int, connect=None) -> Item:
    """The database port, dialled from this machine (outside the private network): refused or silent."""
    connect = connect or (lambda: socket.create_connection((address, port), timeout=3).close())
    try:
        connect()
    except OSError as error:
        return Item("PostgreSQL not reachable from outside", host, True, f"{address}:{port} from here: {error.__class__.__name__}")
    return Item("PostgreSQL not reachable from outside", host, False, f"{address}:{port} accepted a connection from here")


def repository_item(env: str) -> Item:
    """No plaintext secret in this repository's tree or history (secrets.scan's rules, the env's values)."""
    from vigil import secrets as S

    paths = S.SecretsPaths.default()
    schema = S.load_schema(paths)
    try:
        values = {env: S.load(env, paths, schema)}
    except S.SecretsError:
        values = {}
    findings = S.scan_repository(paths.root.parent, S.scan_forms(values, schema), history=True)
    return Item("no plaintext secret in git", "here", not findings,
                "; ".join(f"{finding.where}: {finding.what}" for finding in findings[:3]) if findings
                else f"tree and history scanned ({'the env values and ' if values else ''}token patterns)")


def status_items(reports) -> list[Item]:
    """Certificates and backups, as incident.status judges them."""
    wanted = {"TLS certificate": "certificate not close to expiry", "last backup": "backups recent",
              "last verify": "backups verified", "backup failure": "no backup failure since the last good one"}
    return [Item(wanted[check.name], report.host, check.state == "ok", check.detail)
            for report in reports for check in report.checks if check.name in wanted]


def security(env: str, limit: str | None) -> list[Item]:
    """Every checklist item on the env's hosts (and this repository), in checklist order per host."""
    import dataclasses as dc

    from vigil import incident as I
    from vigil import secrets
    from vigil.config import load_inventory, load_role
    from vigil.runner import HostPlan, HostResult, RunOptions, run
    from vigil.transport import SSHTransport

    inventory = load_inventory(env)
    schema = secrets.load_schema()
    web, database = I.app_and_database_hosts(inventory, schema)
    roles = [load_role(name) for name in ("app", "nginx", "postgresql")]
    hosts = inventory.select(limit)
    answers: dict[str, list[Item]] = {}

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        name = host_plan.host.name
        site = I.site_of(inventory.vars_for(host_plan.host, roles))[0] if name in web else ""
        files = [f"{schema.config_dir}/{service}.env" for service in schema.services]
        facts = parse_security_facts(transport.run(security_facts_command(site, files), timeout=120).stdout)
        answers[name] = host_items(name, facts, name in web, name == database, schema.app_user)
        return HostResult(name)

    results = run([HostPlan(host.as_admin(), []) for host in hosts],
                  lambda host: SSHTransport(dc.replace(host, bootstrap_user=None), inventory.known_hosts, inventory.env),
                  RunOptions(), None, work=work)
    items = [Item("reachable over SSH", r.host, False, r.unreachable or r.error) for r in results if r.unreachable or r.error]
    try:
        origin = origin_of(secrets.load(env).get("FRONTEND_URL", ""))
    except secrets.SecretsError:
        origin = ""
    for host in hosts:
        items += answers.get(host.name, [])
        if host.name in web:
            vars = inventory.vars_for(host, roles)
            server_name, _, verify = I.site_of(vars)
            items += site_items(host.name, server_name, verify, origin)
            items.append(authentication_item(host.name, server_name, verify, protected_routes(vars)))
        if host.name == database:
            items.append(port_closed_item(host.name, host.address, 5432))
    items += status_items(I.gather(env, limit))
    items.append(repository_item(env))
    return items


# --- performance ------------------------------------------------------------------------------------

PAGE_LOAD_TARGET = 2.0  # seconds: the plan's "< 2 s load time"
HEADROOM = {"cpu": 20, "memory": 20, "disk": 80}  # % CPU idle above, % memory available above, % disk used below
# Two samples of the CPU counters a second apart: how idle the CPUs are now (the load average lags by minutes).
CPU_SAMPLE = "head -n 1 /proc/stat; sleep 1; head -n 1 /proc/stat"


def cpu_idle(stdout: str) -> float | None:
    """% idle between two `cpu ...` lines of /proc/stat (idle and iowait count as idle)."""
    samples = [[int(value) for value in line.split()[1:]] for line in stdout.splitlines() if line.startswith("cpu ")]
    if len(samples) != 2 or len(samples[0]) < 5:
        return None
    deltas = [after - before for before, after in zip(*samples)]
    total = sum(deltas)
    return 100 * (deltas[3] + deltas[4]) / total if total > 0 else None
# The sample backend's pool (data-source.ts: DATABASE_POOL_SIZE, else 10); each web host may run two colors at once.
POOL_DEFAULT = 10


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) + 1)) - 1))]


@dataclass(frozen=True)
class Timing:
    first_byte: float  # seconds to the response's headers
    full: float  # seconds to the whole HTML


def page_items(host: str, timings: list[Timing], target: float = PAGE_LOAD_TARGET) -> list[Item]:
    first = [timing.first_byte for timing in timings]
    full = [timing.full for timing in timings]
    return [Item("page load (p95 of the full HTML)", host, bool(full) and percentile(full, 0.95) < target,
                 f"{len(full)} loads: time to first byte p50 {percentile(first, 0.5) * 1000:.0f} ms, p95 "
                 f"{percentile(first, 0.95) * 1000:.0f} ms; full HTML p50 {percentile(full, 0.5) * 1000:.0f} ms, p95 "
                 f"{percentile(full, 0.95) * 1000:.0f} ms (target {target:.0f} s)" if full else "no page loaded")]


def measure_page(url: str, verify, count: int) -> tuple[list[Timing], dict]:
    """`count` sequential loads of the page (bounded: a few seconds each at most); and the last response's headers."""
    import time

    import requests

    timings, headers = [], {}
    with requests.Session() as session:
        for _ in range(count):
            began = time.perf_counter()
            with session.get(url, verify=verify, timeout=10, stream=True, headers={"Accept-Encoding": "gzip"}) as response:
                first = time.perf_counter() - began
                response.content  # noqa: B018 - the whole body, to time the full HTML
                timings.append(Timing(first, time.perf_counter() - began))
                headers = dict(response.headers)
                html = response.text
    return timings, {"headers": headers, "html": html}


def delivery_items(host: str, page: dict, asset_headers: dict | None) -> list[Item]:
    encoding = page["headers"].get("Content-Encoding", "")
    items = [Item("compression on", host, encoding in ("gzip", "br", "zstd"), f"the page came {encoding or 'uncompressed'}")]
    cache = (asset_headers or {}).get("Cache-Control", "")
    age = re.search(r"max-age=(\d+)", cache)
    items.append(Item("static assets cached", host, bool(age) and int(age.group(1)) >= 86400,
                      f"Cache-Control: {cache}" if cache else "no static asset, or no Cache-Control on it"))
    return items


def static_asset(html: str) -> str | None:
    """The first Next.js static asset the page links to."""
    match = re.search(r'(/_next/static/[A-Za-z0-9_./-]+\.(?:js|css))', html)
    return match.group(1) if match else None


def headroom_items(host: str, facts, idle: float | None) -> list[Item]:
    """From incident.status's answer (HostFacts) and a CPU sample: CPU, memory and disk to spare."""
    one, cores = facts.load
    total, available = facts.memory
    free = round(100 * available / total) if total else 0
    fullest = max(facts.disks.items(), key=lambda pair: pair[1], default=("/", 0))
    return [
        Item("CPU headroom", host, idle is not None and idle > HEADROOM["cpu"],
             f"{idle:.0f}% idle over a second; load {one:.2f} on {cores} cores" if idle is not None else "no CPU sample"),
        Item("memory headroom", host, free > HEADROOM["memory"], f"{free}% available of {total // 1024} MiB"),
        Item("disk headroom", host, fullest[1] < HEADROOM["disk"], f"{fullest[0]} {fullest[1]}% used"),
    ]


def pool_item(host: str, pool_size: int, web_hosts: int, max_connections: int, reserved: int = 3) -> Item:
    """Each backend pools its connections; all of them at once (two colors per host mid-deploy) must fit."""
    wanted = pool_size * web_hosts * 2
    return Item("database connection pooling", host, 0 < pool_size and wanted <= max_connections - reserved,
                f"pool of {pool_size} per backend x {web_hosts} web hosts x 2 colors = {wanted}, "
                f"max_connections {max_connections} ({reserved} reserved)")


POOL_FACTS = r'''
grep -h '^DATABASE_POOL_SIZE=' "$1"/backend.env 2>/dev/null | tail -n 1 | cut -d= -f2 | tr -d "'\""
'''
MAX_CONNECTIONS = "runuser -u postgres -- psql -X -Atc 'show max_connections'"


def performance(env: str, limit: str | None, count: int) -> list[Item]:
    """The performance checklist: page loads from here, delivery, pooling, and each host's headroom."""
    import dataclasses as dc

    import requests

    from vigil import incident as I
    from vigil import secrets
    from vigil.config import load_inventory, load_role
    from vigil.runner import HostPlan, HostResult, RunOptions, run
    from vigil.transport import SSHTransport

    inventory = load_inventory(env)
    schema = secrets.load_schema()
    web, database = I.app_and_database_hosts(inventory, schema)
    roles = [load_role("nginx")]
    hosts = inventory.select(limit)
    answers: dict[str, dict] = {}

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        name = host_plan.host.name
        answers[name] = {"facts": I.parse_host_status(transport.run(I.host_status_command([], "", [])).stdout),
                         "idle": cpu_idle(transport.run(Command(("sh", "-c", CPU_SAMPLE), sudo=False)).stdout)}
        if name in web:
            size = transport.run(script(POOL_FACTS, schema.config_dir)).stdout.strip()
            answers[name]["pool"] = int(size) if size.isdigit() else POOL_DEFAULT
        if name == database:
            found = transport.run(Command(("sh", "-c", MAX_CONNECTIONS), sudo=True)).stdout.strip()
            answers[name]["max_connections"] = int(found) if found.isdigit() else 0
        return HostResult(name)

    results = run([HostPlan(host.as_admin(), []) for host in hosts],
                  lambda host: SSHTransport(dc.replace(host, bootstrap_user=None), inventory.known_hosts, inventory.env),
                  RunOptions(), None, work=work)
    items = [Item("reachable over SSH", r.host, False, r.unreachable or r.error) for r in results if r.unreachable or r.error]
    for host in hosts:
        if host.name in web:
            server_name, _, verify = I.site_of(inventory.vars_for(host, roles))
            try:
                timings, page = measure_page(f"https://{server_name}/", verify, count)
                asset = static_asset(page["html"])
                asset_headers = dict(requests.get(f"https://{server_name}{asset}", verify=verify, timeout=10).headers) if asset else None
                items += page_items(host.name, timings) + delivery_items(host.name, page, asset_headers)
            except requests.RequestException as error:
                items.append(Item("page load (p95 of the full HTML)", host.name, False, type(error).__name__))
        if host.name in answers:
            items += headroom_items(host.name, answers[host.name]["facts"], answers[host.name]["idle"])
    if database and database in answers:
        pools = [answers[name]["pool"] for name in answers if "pool" in answers[name]]
        if pools:
            items.append(pool_item(database, max(pools), len(web), answers[database]["max_connections"]))
    return items
