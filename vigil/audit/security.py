"""`audit.security`: the security checklist against the live hosts.

Each host answers one read-only question (SECURITY_FACTS, as root); the site is asked from this
machine as a visitor would (HTTP, HTTPS, CORS, the database port).
"""

from __future__ import annotations

import re
import socket
import urllib.parse
from dataclasses import dataclass, field

from vigil.audit.checklist import Item, status_items
from vigil.core.commands import Command, script
from vigil.core.errors import ConfigError
from vigil.core.facts import sections
from vigil.core.fanout import Unreachable, on_hosts, unreachable
from vigil.core.inventory import Host, HostVars, load_inventory
from vigil.core.roles import load_role
from vigil.core.topology import inventory_repository_ends
from vigil.incident.endpoints import site_of
from vigil.incident.status import gather
from vigil.vault.paths import SecretsError, SecretsPaths
from vigil.vault.scan import scan_forms, scan_repository
from vigil.vault.schema import load_schema
from vigil.vault.store import load

# One round trip per host, read-only. $1: the site's name ("" on a host without one); the rest: the
# secrets files secrets.push writes. TLS versions are tried against the host's own nginx (old ones with
# OpenSSL's security level 0, so that a refusal is the server's, not this client's).
SECURITY_FACTS = r"""
site=$1; app=$2; deploy=$3; shift 3
echo "@sshd"; sshd -T 2>/dev/null \
    | grep -Ei '^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication|permitemptypasswords) '
echo "@ufw"; ufw status verbose 2>/dev/null
echo "@envfiles"; for file in "$@"; do [ -e "$file" ] && stat -c '%n %a %U' -- "$file"; done
echo "@upgrades"; printf '%s %s\n' \
    "$(systemctl is-enabled unattended-upgrades.service 2>/dev/null)" \
    "$(systemctl is-active unattended-upgrades.service 2>/dev/null)"
echo "@nginx"; command -v nginx >/dev/null \
    && nginx -T 2>/dev/null | grep -E '^[[:space:]]*limit_req ' | sed 's/^[[:space:]]*//' | sort -u
echo "@tls"; [ -n "$site" ] && for version in tls1 tls1_1 tls1_2 tls1_3; do
    if echo | timeout 5 openssl s_client -connect 127.0.0.1:443 -servername "$site" "-$version" \
        -cipher 'DEFAULT:@SECLEVEL=0' >/dev/null 2>&1
    then echo "$version accepted"; else echo "$version refused"; fi
done
# Each of vigil's units as systemd-analyze rates it (a template through an instance of its own).
echo "@exposure"; for file in /etc/systemd/system/vigil-*.service /etc/systemd/system/"$app"-*.service; do
    [ -f "$file" ] || continue
    unit=$(basename -- "$file"); case "$unit" in *@.service) unit="${unit%@.service}@audit.service" ;; esac
    score=$(systemd-analyze security --no-pager -- "$unit" 2>/dev/null \
        | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    printf '%s %s\n' "$unit" "${score:-?}"
done
echo "@groups"; [ -n "$deploy" ] && id -nG -- "$deploy" 2>/dev/null
echo "@lockdir"; [ -e /run/vigil ] && stat -c '%a %U %F' /run/vigil
echo "@end"
"""

# At most this exposure for each of vigil's units (systemd-analyze security: 0 safe, 10 unsafe).
MOST_EXPOSURE = 2.0
# Groups that read the whole journal (sudo lines, sshd, PostgreSQL): the deploy user is in neither.
JOURNAL_GROUPS = {"systemd-journal", "adm"}

SSH_HARDENED = {"permitrootlogin": "no", "passwordauthentication": "no", "kbdinteractiveauthentication": "no",
                "permitemptypasswords": "no"}
SECURITY_HEADERS = ("Strict-Transport-Security", "Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options",
                    "Referrer-Policy")
FOREIGN_ORIGIN = "https://audit.invalid"


def security_facts_command(site: str, secrets_files: list[str], app: str = "", deploy: str = "") -> Command:
    return script(SECURITY_FACTS, site, app, deploy, *secrets_files)


@dataclass
class SecurityFacts:
    sshd: dict[str, str] = field(default_factory=dict)
    ufw: list[str] = field(default_factory=list)
    env_files: list[tuple[str, str, str]] = field(default_factory=list)  # path, mode, owner
    upgrades: tuple[str, str] = ("", "")
    nginx: list[str] = field(default_factory=list)
    tls: dict[str, bool] = field(default_factory=dict)  # tls1_2 -> accepted
    exposure: dict[str, float | None] = field(default_factory=dict)  # unit -> systemd-analyze's rating
    deploy_groups: list[str] = field(default_factory=list)
    lock_dir: tuple[str, str, str] | None = None  # mode, owner, kind; None: not there (yet)


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
        elif section == "exposure" and len(text.split()) == 2:
            unit, score = text.split()
            facts.exposure[unit] = float(score) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", score) else None
        elif section == "groups":
            facts.deploy_groups = text.split()
        elif section == "lockdir" and len(text.split(maxsplit=2)) == 3:
            mode, owner, kind = text.split(maxsplit=2)
            facts.lock_dir = (mode, owner, kind)
    return facts


def host_items(
    host: str, facts: SecurityFacts, web: bool, database: bool, app_user: str, database_port: int = 5432
) -> list[Item]:
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
        items.append(
            Item(
                "PostgreSQL not open to the world (firewall)",
                host,
                active and not open_to_all,
                "; ".join(open_to_all)
                if open_to_all
                else f"{database_port} allowed only from the listed sources"
                if active
                else "the firewall is not active",
            )
        )
    if web:
        loose = [
            f"{path} {mode} {owner}" for path, mode, owner in facts.env_files if mode != "600" or owner != app_user
        ]
        items.append(Item("secrets files 0600, owned by the app user", host, bool(facts.env_files) and not loose,
                          "; ".join(loose) if loose else f"{len(facts.env_files)} files, 0600 {app_user}"
                          if facts.env_files else "no env files found: run secrets.push"))
        accepted = [TLS_NAMES[version] for version, ok in facts.tls.items() if ok]
        refused = [TLS_NAMES[version] for version, ok in facts.tls.items() if not ok]
        items.append(Item("only TLS 1.2 and 1.3", host, bool(accepted) and set(accepted) <= {"TLSv1.2", "TLSv1.3"},
                          f"accepts {', '.join(accepted) or 'nothing'}; refuses {', '.join(refused) or 'nothing'}"
                          if facts.tls else "no TLS handshake could be tried"))
        limits = [line for line in facts.nginx if line.startswith("limit_req ")]
        items.append(
            Item(
                "rate limiting active",
                host,
                bool(limits),
                limits[0].rstrip(";") if limits else "no limit_req in nginx -T",
            )
        )
    items += hardening_items(host, facts, web)
    enabled, running = facts.upgrades
    items.append(Item("unattended upgrades on", host, enabled == "enabled" and running == "active",
                      f"unattended-upgrades.service {enabled or '?'}, {running or '?'}"))
    return items


def hardening_items(host: str, facts: SecurityFacts, web: bool) -> list[Item]:
    """vigil's units confined, the deploy user kept out of the journal, the locks where only root reaches."""
    exposed = {unit: score for unit, score in facts.exposure.items() if score is None or score > MOST_EXPOSURE}
    # A host may run none of vigil's own units (the monitor host runs Debian's): nothing to rate, nothing exposed.
    items = [Item("systemd units rated OK", host, not exposed,
                  "; ".join(f"{unit} {'unrated' if score is None else score}" for unit, score in exposed.items())
                  + f" (at most {MOST_EXPOSURE} wanted)" if exposed
                  else ", ".join(f"{unit} {score}" for unit, score in facts.exposure.items())
                  or "none of vigil's units on this host")]
    if web:
        reading = sorted(JOURNAL_GROUPS & set(facts.deploy_groups))
        items.append(Item("deploy user reads only its app's logs", host, bool(facts.deploy_groups) and not reading,
                          f"in {', '.join(reading)}: the whole journal" if reading
                          else "not in systemd-journal or adm" if facts.deploy_groups else "no deploy user found"))
    lock = facts.lock_dir
    items.append(Item("lock directory root-only", host, lock is None or (lock[0], lock[1], lock[2]) == (
        "700", "root", "directory"), "/run/vigil not created yet" if lock is None else f"/run/vigil {' '.join(lock)}"))
    return items


def site_items(host: str, server_name: str, verify, allowed_origin: str, get=None, options=None) -> list[Item]:
    """What a visitor sees: HTTP sends to HTTPS, HSTS and the other security headers, CORS for the
    configured origin only."""
    # requests on first use: every task imports this module, few ask a site anything (CLI start-up).
    import requests  # noqa: PLC0415

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
        items.append(
            Item(
                "HSTS", host, bool(age) and int(age.group(1)) >= 15552000, hsts or "no Strict-Transport-Security header"
            )
        )
        missing = [name for name in SECURITY_HEADERS[1:] if name not in page.headers]
        items.append(Item("security headers", host, not missing,
                          f"missing {', '.join(missing)}" if missing else ", ".join(SECURITY_HEADERS[1:])))
        server = page.headers.get("Server", "")
        items.append(Item("server hides its version", host, not re.search(r"[0-9]", server),
                          f"Server: {server}" if server else "no Server header"))
    except requests.RequestException as error:
        items += [Item(name, host, False, type(error).__name__)
                  for name in ("HSTS", "security headers", "server hides its version")]
    try:
        answers = {origin: options(f"https://{server_name}/api/prayers", verify=verify, timeout=10,
                                   headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
                   for origin in (allowed_origin, FOREIGN_ORIGIN)}
        foreign = answers[FOREIGN_ORIGIN].headers.get("Access-Control-Allow-Origin", "")
        own = answers[allowed_origin].headers.get("Access-Control-Allow-Origin", "")
        items.append(
            Item(
                "CORS restricted to the configured origin",
                host,
                foreign in ("", "null") and own == allowed_origin,
                f"{allowed_origin} -> {own or 'not allowed'}; {FOREIGN_ORIGIN} -> {foreign or 'not allowed'}",
            )
        )
    except requests.RequestException as error:
        items.append(Item("CORS restricted to the configured origin", host, False, type(error).__name__))
    return items


ROUTE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def protected_routes(vars: HostVars) -> list[tuple[str, str]]:
    """app_protected_routes, checked: (method, path) pairs."""
    routes = vars["app_protected_routes"] or []
    where = vars.where("app_protected_routes")
    if not isinstance(routes, list):
        raise ConfigError(f"{where}: expected a list of {{method, path}}")
    found = []
    for number, route in enumerate(routes, start=1):
        if not (isinstance(route, dict) and route.get("method") in ROUTE_METHODS and isinstance(route.get("path"), str)
                and re.fullmatch(r"/[A-Za-z0-9._~/%?=&-]{0,200}", route["path"])):
            raise ConfigError(
                f"{where}: route {number}: expected {{method: {'|'.join(ROUTE_METHODS)}, path: /...}}, got {route!r}"
            )
        found.append((route["method"], route["path"]))
    return found


def authentication_item(host: str, server_name: str, verify, routes: list[tuple[str, str]], send=None) -> Item:
    """Each protected route, asked without credentials, must answer 401 or 403."""
    # requests on first use: every task imports this module, few ask a site anything (CLI start-up).
    import requests  # noqa: PLC0415

    send = send or requests.request
    if not routes:
        return Item(
            "authentication on protected routes",
            host,
            True,
            "the app declares no protected route (app_protected_routes)",
        )
    open_routes, answers = [], []
    for method, path in routes:
        try:
            status = send(
                method, f"https://{server_name}{path}", verify=verify, timeout=10, allow_redirects=False
            ).status_code
        except requests.RequestException as error:
            status = type(error).__name__
        answers.append(f"{method} {path} -> {status}")
        if status not in (401, 403):
            open_routes.append(f"{method} {path} -> {status}")
    return Item("authentication on protected routes", host, not open_routes, "; ".join(open_routes or answers))


def origin_of(url: str) -> str:
    """The origin a browser sends for pages under `url` (scheme://host[:port], no path)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def port_closed_item(host: str, address: str, port: int, connect=None) -> Item:
    """The database port, dialled from this machine (outside the private network): refused or silent."""
    connect = connect or (lambda: socket.create_connection((address, port), timeout=3).close())
    try:
        connect()
    except OSError as error:
        return Item(
            "PostgreSQL not reachable from outside",
            host,
            True,
            f"{address}:{port} from here: {error.__class__.__name__}",
        )
    return Item(
        "PostgreSQL not reachable from outside", host, False, f"{address}:{port} accepted a connection from here"
    )


def repository_item(env: str) -> Item:
    """No plaintext secret in this repository's tree or history (secrets.scan's rules, the env's values)."""
    paths = SecretsPaths.default()
    schema = load_schema(paths)
    try:
        values = {env: load(env, paths, schema)}
    except SecretsError:
        values = {}
    findings = scan_repository(paths.root.parent, scan_forms(values, schema), history=True)
    return Item("no plaintext secret in git", "here", not findings,
                "; ".join(f"{finding.where}: {finding.what}" for finding in findings[:3]) if findings
                else f"tree and history scanned ({'the env values and ' if values else ''}token patterns)")


def security(env: str, limit: str | None) -> list[Item]:
    """Every checklist item on the env's hosts (and this repository), in checklist order per host."""
    inventory = load_inventory(env)
    schema = load_schema()
    topology = schema.topology(inventory)
    database = topology.database_or_none()
    roles = [load_role(name) for name in ("app", "nginx", "postgresql")]
    hosts = inventory.select(limit)
    files = [f"{schema.config_dir}/{service}.env" for service in schema.services]

    def ask(transport, host: Host) -> list[Item]:
        web = topology.runs_app(host.name)
        site = site_of(inventory.vars_for(host, roles))[0] if web else ""
        vars = inventory.vars_for(host, roles)
        command = security_facts_command(site, files, vars.string("app_name"), vars.string("app_owner"))
        facts = parse_security_facts(transport.run(command, timeout=120).stdout)
        return host_items(host.name, facts, web, database is not None and host.name == database.name, schema.app_user)

    answers = on_hosts(inventory, hosts, ask)
    items = [Item("reachable over SSH", host, False, reason) for host, reason in unreachable(answers).items()]
    try:
        origin = origin_of(load(env).get("FRONTEND_URL", ""))
    except SecretsError:
        origin = ""
    for host in hosts:
        answer = answers[host.name]
        items += [] if isinstance(answer, Unreachable) else answer
        if topology.runs_app(host.name):
            vars = inventory.vars_for(host, roles)
            server_name, _, verify = site_of(vars)
            items += site_items(host.name, server_name, verify, origin)
            items.append(authentication_item(host.name, server_name, verify, protected_routes(vars)))
        if database is not None and host.name == database.name:
            items.append(port_closed_item(host.name, host.address, 5432))
    items += status_items(gather(env, limit), inventory_repository_ends(inventory) is not None)
    items.append(repository_item(env))
    return items
