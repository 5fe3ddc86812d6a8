"""Incident: what is wrong, at a glance (`incident.status`), and maintenance mode (`incident.maintenance`).

Status asks each host one read-only question (HOST_STATUS, as root through the
admin user's sudo) and checks the site from outside over HTTPS; every verdict
is a pure function of those answers, so the rules are tested without hosts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from vigil.commands import REDACTOR, Command, script
from vigil.facts import sections
from vigil.operations import Absent, File

# roles/nginx's site answers 503 with the maintenance page (and Retry-After) while this file exists.
MAINTENANCE_FLAG = "/var/www/together-pray/maintenance.on"
BACKUP_STATUS = "/var/lib/vigil/backup-status.json"

OK, WARN, FAIL = "ok", "warn", "fail"
# Thresholds: a disk this full, memory this scarce, a certificate this close to expiry, a backup this old.
DISK_WARN, DISK_FAIL = 80, 90
MEMORY_WARN = 10  # % available
CERT_WARN_DAYS, CERT_FAIL_DAYS = 21, 7
BACKUP_WARN_HOURS, BACKUP_FAIL_HOURS = 26, 50


def set_maintenance(env: str, on: bool, limit: str | None, reporter=None, check: bool = False):
    """Maintenance mode on every selected web host; (exit code, the hosts where it failed)."""
    import io

    from vigil.config import load_inventory
    from vigil.errors import ConfigError
    from vigil.play import run_plans
    from vigil.report import Environment, Reporter
    from vigil.runner import HostPlan, RunOptions

    inventory = load_inventory(env)
    hosts = [host for host in inventory.select(limit) if host.name in inventory.hosts_in("web", where="incident.maintenance")]
    if not hosts:
        raise ConfigError(f"--limit {limit or 'all'} selects no web host in inventory/{env}.yml")
    if reporter is None:
        quiet = io.StringIO()
        reporter = Reporter(Environment(stdout=quiet, stderr=quiet), json_output=True)
    plans = [HostPlan(host.as_admin(), maintenance_operations(on)) for host in hosts]
    code, results = run_plans(f"incident.maintenance {'on' if on else 'off'}", inventory, plans, RunOptions(check=check), reporter)
    return code, [result.host for result in results if result.failed or result.unreachable]


def maintenance_operations(on: bool) -> list:
    """Maintenance mode on a web host: the flag file nginx checks (the app keeps running)."""
    if on:
        return [File(MAINTENANCE_FLAG, "on\n", mode="0644",
                     name="Ensure maintenance mode is on: the site answers 503 with Retry-After.")]
    return [Absent(MAINTENANCE_FLAG, name="Ensure maintenance mode is off.")]


# One round trip per host, read-only. $1: units to ask systemd about (space-separated); $2: the
# TLS certificate (or ""); the rest: directories whose filesystems matter.
HOST_STATUS = r'''
units=$1; certificate=$2; shift 2
echo "@units"; for unit in $units; do printf '%s %s\n' "$unit" "$(systemctl is-active -- "$unit" 2>/dev/null)"; done
echo "@failed"; systemctl list-units --state=failed --no-legend --plain 2>/dev/null | awk '{print $1}'
echo "@disk"; for dir in / "$@"; do [ -d "$dir" ] && df -P -- "$dir" | awk -v d="$dir" 'NR==2 {print d, $5}'; done
echo "@memory"; awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {print t, a}' /proc/meminfo
echo "@load"; printf '%s %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)"
echo "@certificate"; [ -n "$certificate" ] && openssl x509 -enddate -noout -in "$certificate" 2>/dev/null | cut -d= -f2
echo "@backup"; cat /var/lib/vigil/backup-status.json 2>/dev/null | tr -d '\n'; echo
echo "@maintenance"; [ -e /var/www/together-pray/maintenance.on ] && echo on
echo "@now"; date -u +%Y-%m-%dT%H:%M:%SZ
echo "@end"
'''


def host_status_command(units: list[str], certificate: str, directories: list[str]) -> Command:
    return script(HOST_STATUS, " ".join(units), certificate, *directories)


@dataclass
class HostFacts:
    """One host's answer to HOST_STATUS."""

    units: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    disks: dict[str, int] = field(default_factory=dict)  # directory -> % used
    memory: tuple[int, int] = (0, 0)  # kB total, available
    load: tuple[float, int] = (0.0, 1)  # 1-minute load, cores
    certificate_end: str = ""
    backup: dict = field(default_factory=dict)
    maintenance: bool = False
    now: str = ""


def parse_host_status(stdout: str) -> HostFacts:
    facts = HostFacts()
    for section, text in sections(stdout):
        if section == "units":
            unit, _, state = text.partition(" ")
            facts.units[unit] = state or "unknown"
        elif section == "failed":
            facts.failed.append(text)
        elif section == "disk":
            directory, _, used = text.rpartition(" ")
            if used.rstrip("%").isdigit():
                facts.disks[directory] = int(used.rstrip("%"))
        elif section == "memory" and len(text.split()) == 2:
            total, available = text.split()
            facts.memory = (int(total), int(available))
        elif section == "load" and len(text.split()) == 4:
            one, _, _, cores = text.split()
            facts.load = (float(one), int(cores))
        elif section == "certificate":
            facts.certificate_end = text
        elif section == "backup":
            try:
                facts.backup = json.loads(text)
            except ValueError:
                facts.backup = {"unreadable": text[:100]}
        elif section == "maintenance":
            facts.maintenance = text == "on"
        elif section == "now":
            facts.now = text
    return facts


@dataclass(frozen=True)
class Check:
    """One line of the status screen."""

    name: str
    state: str  # ok, warn, fail
    detail: str


def _hours_since(when: str, now: str) -> float | None:
    try:
        parse = lambda text: datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)  # noqa: E731
        return (parse(now) - parse(when)).total_seconds() / 3600
    except (TypeError, ValueError):
        return None


def certificate_days(end: str, now: str) -> int | None:
    """Whole days from `now` (ISO) to openssl's -enddate ("Nov 26 03:00:00 2027 GMT")."""
    try:
        expires = datetime.strptime(re.sub(r"\s+", " ", end), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=timezone.utc)
        current = datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int((expires - current).total_seconds() // 86400)


def host_checks(facts: HostFacts, expected_units: list[str], database: bool, web: bool,
                release_tasks: tuple[str, ...] = ()) -> list[Check]:
    """The verdict on one host's facts, a line per concern.

    release_tasks: unit name prefixes of the app's release tasks ("together-pray-backend-migrate@"): one
    left failed by a deploy is that deploy's story (it marked the release bad and said so), so it warns.
    """
    checks = []
    for unit in expected_units:
        state = facts.units.get(unit, "unknown")
        checks.append(Check(unit, OK if state == "active" else FAIL, state))
    left_by_deploys = [unit for unit in facts.failed if unit.startswith(release_tasks)] if release_tasks else []
    others = [unit for unit in facts.failed if unit not in left_by_deploys]
    if others:
        checks.append(Check("failed units", FAIL, ", ".join(others)))
    if left_by_deploys:
        checks.append(Check("failed release tasks", WARN, f"{', '.join(left_by_deploys)} (a failed deploy's; "
                                                          "deploy.releases shows the release marked bad)"))
    for directory, used in sorted(facts.disks.items()):
        state = FAIL if used >= DISK_FAIL else WARN if used >= DISK_WARN else OK
        checks.append(Check(f"disk {directory}", state, f"{used}% used"))
    total, available = facts.memory
    if total:
        free = round(100 * available / total)
        checks.append(Check("memory", WARN if free < MEMORY_WARN else OK, f"{free}% available of {total // 1024} MiB"))
    one, cores = facts.load
    checks.append(Check("load", WARN if one > 2 * cores else OK, f"{one:.2f} on {cores} cores"))
    if web:
        days = certificate_days(facts.certificate_end, facts.now)
        if days is None:
            checks.append(Check("TLS certificate", FAIL, "not readable"))
        else:
            state = FAIL if days < CERT_FAIL_DAYS else WARN if days < CERT_WARN_DAYS else OK
            checks.append(Check("TLS certificate", state, f"{days} days left"))
        if facts.maintenance:
            checks.append(Check("maintenance mode", WARN, "on: visitors get the maintenance page"))
    if database:
        checks += backup_checks(facts.backup, facts.now)
    return checks


def backup_checks(status: dict, now: str) -> list[Check]:
    """The newest backup's age, the last verification, and the last failure if it came after them."""
    checks = []
    created = status.get("create", {})
    age = _hours_since(created.get("at", ""), now) if created.get("ok") else None
    if age is None:
        checks.append(Check("last backup", FAIL, "none recorded"))
    else:
        state = FAIL if age > BACKUP_FAIL_HOURS else WARN if age > BACKUP_WARN_HOURS else OK
        checks.append(Check("last backup", state, f"{created.get('id', '?')}, {age:.1f} h ago"))
    verified = status.get("verify")
    if verified:
        checks.append(Check("last verify", OK if verified.get("ok") else FAIL,
                            f"{verified.get('id', '?')} at {verified.get('at', '?')}"
                            + ("" if verified.get("ok") else f": {verified.get('error', 'failed')}")))
    else:
        checks.append(Check("last verify", WARN, "never verified"))
    failure = status.get("last_failure")
    if failure and failure.get("at", "") > max(created.get("at", "") if created.get("ok") else "", (verified or {}).get("at", "")):
        checks.append(Check("backup failure", FAIL, f"{failure.get('command')} at {failure.get('at')}: {failure.get('error', '')}"))
    return checks


def release_checks(rows: dict[str, dict]) -> list[Check]:
    """From deploy.status rows (service -> row): the current release, its age, and what is wrong."""
    return [Check(f"{service} release", FAIL if row["problems"] else OK,
                  "; ".join(row["problems"]) if row["problems"] else f"{row['release']} ({row['age']} ago, {row['live']})")
            for service, row in rows.items()]


def verdict(checks: list[Check]) -> str:
    states = {check.state for check in checks}
    return "unhealthy" if FAIL in states else "degraded" if WARN in states else "healthy"


# --- gathering: one connection per host, then HTTPS from here -----------------------------------


def site_of(vars) -> tuple[str, str, str | bool]:
    """(server name, certificate path on the host, what verifies it from here) as roles/nginx sets them up."""
    from vigil.tls import CA_DIR

    server_name = vars.get("nginx_server_name") or vars.host.address
    if vars["nginx_tls"] == "certbot":
        return server_name, f"/etc/letsencrypt/live/{server_name}/fullchain.pem", True
    return server_name, f"/etc/ssl/vigil/{server_name}.crt", str(CA_DIR / "ca.crt")


# What a visitor's request must get back from each app service, through nginx over HTTPS.
HTTP_ENDPOINTS = {"backend": ("backend health (https)", "/api/health", '"status":"ok"'),
                  "frontend": ("frontend page (https)", "/", "</html>")}
APP_SERVICES = tuple(HTTP_ENDPOINTS)


def https_checks(server_name: str, verify: str | bool, get=None, services: tuple[str, ...] | list[str] = APP_SERVICES) -> list[Check]:
    """The backend's health and the frontend's page, as a visitor reaches them (nginx, TLS, the app)."""
    import requests

    get = get or requests.get
    checks = []
    for name, path, expect in (HTTP_ENDPOINTS[service] for service in services):
        try:
            response = get(f"https://{server_name}{path}", verify=verify, timeout=10)
            good = response.status_code == 200 and expect in response.text
            checks.append(Check(name, OK if good else FAIL, f"HTTP {response.status_code} in "
                                                            f"{response.elapsed.total_seconds() * 1000:.0f} ms"))
        except requests.RequestException as error:
            checks.append(Check(name, FAIL, type(error).__name__))
    return checks


@dataclass
class HostReport:
    host: str
    roles: list[str]
    checks: list[Check] = field(default_factory=list)
    unreachable: str = ""

    @property
    def verdict(self) -> str:
        return "unreachable" if self.unreachable else verdict(self.checks)


def app_and_database_hosts(inventory, schema) -> tuple[set[str], str | None]:
    """The hosts that run the app's services (the secrets schema's groups), and the database host (None:
    the inventory runs none, or several)."""
    from vigil import secrets
    from vigil.errors import VigilError

    app = {name for service in schema.services.values()
           for name in inventory.hosts_in(service.hosts, where="secrets/schema.yml: services")}
    try:
        return app, secrets.database_host(inventory).name
    except VigilError:
        return app, None


def gather(env: str, limit: str | None) -> list[HostReport]:
    """Every selected host's checks (a host that cannot be reached says why)."""
    import dataclasses as dc
    import time as clock

    from vigil import secrets
    from vigil.config import load_inventory, load_role
    from vigil.deploy import parse_states, states_command
    from vigil.deploy_report import status_row
    from vigil.runner import HostPlan, HostResult, RunOptions, run
    from vigil.transport import SSHTransport

    inventory = load_inventory(env)
    schema = secrets.load_schema()
    web_group, database = app_and_database_hosts(inventory, schema)
    roles = [load_role(name) for name in ("app", "nginx", "postgresql", "backup")]
    reports: dict[str, HostReport] = {}

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        from vigil.deploy import settings_from_vars

        host = host_plan.host
        vars = inventory.vars_for(host, roles)
        web, db = host.name in web_group, host.name == database
        report = reports[host.name] = HostReport(host.name, [role for role, on in (("web", web), ("database", db)) if on])
        settings = [settings_from_vars(vars, service) for service in schema.services] if web else []
        rows = {}
        if settings:
            # As root: the admin user is not in the app's group, which alone may read the releases.
            answer = transport.run(dc.replace(states_command(settings), sudo=True))
            states = parse_states(answer.stdout) if answer.ok else {}
            rows = {one.layout.service: status_row(states[one.layout.service], one, clock.time())
                    for one in settings if one.layout.service in states}
        live_units = [one.layout.unit(rows[one.layout.service]["live"].split(":")[0]) for one in settings
                      if rows.get(one.layout.service, {}).get("live")]
        units = (["nginx.service"] if web else []) + live_units + (["postgresql.service"] if db else [])
        server_name, certificate, _ = site_of(vars) if web else ("", "", True)
        directories = [vars.path("backup_dir")] if db else []
        answer = transport.run(host_status_command(units, certificate, directories))
        facts = parse_host_status(answer.stdout)
        tasks = tuple(f"{vars['app_name']}-{service}-{task}@" for service, service_tasks in (vars["app_release_tasks"] or {}).items()
                      for task in (service_tasks or {})) if web else ()
        report.checks = host_checks(facts, units, database=db, web=web, release_tasks=tasks) + release_checks(rows)
        return HostResult(host.name, started=clock.time(), finished=clock.time())

    hosts = inventory.select(limit)
    results = run([HostPlan(host.as_admin(), []) for host in hosts],
                  lambda host: SSHTransport(dc.replace(host, bootstrap_user=None), inventory.known_hosts, inventory.env),
                  RunOptions(), None, work=work)
    for result in results:
        if result.unreachable or result.error:
            reports[result.host] = HostReport(result.host, [], unreachable=result.unreachable or result.error)
    for host in hosts:
        if host.name in web_group and not reports[host.name].unreachable:
            server_name, _, verify = site_of(inventory.vars_for(host, roles))
            reports[host.name].checks += https_checks(server_name, verify)
    return [reports[host.name] for host in hosts]


# --- logs: every matching host's journal, merged by time ------------------------------------------

# journalctl -u patterns per service ({app}: app_name); a release task's units are the backend's too.
SERVICE_UNITS = {
    "backend": ("{app}-backend@*", "{app}-backend-*@*"),
    "frontend": ("{app}-frontend@*",),
    "nginx": ("nginx.service",),
    "postgresql": ("postgresql*",),
}
SINCE = re.compile(r"^[A-Za-z0-9 :.+-]{1,40}$")


@dataclass(frozen=True)
class LogLine:
    time: int  # microseconds since the epoch
    host: str
    unit: str
    message: str

    def render(self) -> str:
        when = datetime.fromtimestamp(self.time / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return f"{when} {self.host} {self.unit.removesuffix('.service')}: {self.message}"


def journal_command(patterns: list[str], since: str, lines: int) -> Command:
    return Command(("journalctl", "--no-pager", "--quiet", "-o", "json", "--since", since, "-n", str(lines),
                    *[arg for pattern in patterns for arg in ("-u", pattern)]), sudo=True)


def parse_journal(host: str, stdout: str) -> list[LogLine]:
    """journalctl -o json's lines; a MESSAGE journald stored as bytes (not UTF-8) is decoded leniently."""
    found = []
    for text in stdout.splitlines():
        try:
            entry = json.loads(text)
            when = int(entry["__REALTIME_TIMESTAMP"])
        except (ValueError, KeyError, TypeError):
            continue
        message = entry.get("MESSAGE", "")
        if isinstance(message, list):
            message = bytes(value for value in message if isinstance(value, int)).decode(errors="replace")
        unit = entry.get("_SYSTEMD_UNIT") or entry.get("SYSLOG_IDENTIFIER") or "?"
        found.append(LogLine(when, host, unit, str(message)))
    return found


def merge_logs(per_host: list[list[LogLine]]) -> list[LogLine]:
    return sorted((line for lines in per_host for line in lines), key=lambda line: (line.time, line.host))


def gather_logs(env: str, services: list[str], since: str, lines: int, limit: str | None):
    """(merged lines, {host: why it could not be read}) for `services` on the hosts that run them."""
    import dataclasses as dc

    from vigil import secrets
    from vigil.config import load_inventory, load_role
    from vigil.errors import VigilError
    from vigil.runner import HostPlan, HostResult, RunOptions, run
    from vigil.transport import SSHTransport

    inventory = load_inventory(env)
    try:
        secrets.load(env)  # registers the env's values, so a log line quoting one is masked
    except VigilError:
        pass  # no identity here: URL passwords are still masked by the redaction of each line
    web, database = app_and_database_hosts(inventory, secrets.load_schema())
    runs_on = {"backend": web, "frontend": web, "nginx": web, "postgresql": {database} if database else set()}
    app = inventory.vars_for(next(iter(inventory.hosts.values())), [load_role("app")]).string("app_name", r"[a-z][a-z0-9-]{0,30}")
    collected: dict[str, list[LogLine]] = {}

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        name = host_plan.host.name
        patterns = [pattern.format(app=app) for service in services if name in runs_on[service] for pattern in SERVICE_UNITS[service]]
        result = HostResult(name)
        answer = transport.run(journal_command(patterns, since, lines))
        if answer.ok:
            collected[name] = parse_journal(name, answer.stdout)
        else:
            result.error = answer.stderr.strip()[-300:]
        return result

    hosts = [host for host in inventory.select(limit) if any(host.name in runs_on[service] for service in services)]
    results = run([HostPlan(host.as_admin(), []) for host in hosts],
                  lambda host: SSHTransport(dc.replace(host, bootstrap_user=None), inventory.known_hosts, inventory.env),
                  RunOptions(), None, work=work)
    problems = {r.host: r.unreachable or r.error for r in results if r.unreachable or r.error}
    return merge_logs(list(collected.values())), problems


# NAME=value and "name": "value" pairs whose name says they hold a secret (a dumped environment, a config),
# and HTTP credentials: the value is masked whole, quoted or not.
SECRET_NAME = r"\w*(?:password|passwd|passphrase|secret|token|dsn|credential|key)\w*"
SECRET_ASSIGNMENT = re.compile(rf"""(?i)\b({SECRET_NAME}["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s"';]+)""")
HTTP_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}")


def mask_line(text: str) -> str:
    """A log line as it may be shown: registered secrets, any URL's password, values named as secrets, and
    HTTP credentials masked."""
    from vigil.deploy import mask_url_passwords

    def assignment(match: re.Match) -> str:
        value = match.group(2)
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{match.group(1)}{quote}***{quote}"

    masked = SECRET_ASSIGNMENT.sub(assignment, REDACTOR.redact(mask_url_passwords(text)))
    return HTTP_CREDENTIALS.sub(r"\1 ***", masked)
