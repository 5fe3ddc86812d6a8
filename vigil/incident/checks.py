"""The runbook checks on real hosts: each reads, one round trip per host, and returns Findings (a host,
what was looked at, ok or not, why). CHECKS is the registry the runbooks' `check:` names resolve in.

Commands are built as data here (tested in tests/unit) and run as root through the admin user's sudo,
like incident.status.
"""

from __future__ import annotations

from typing import Callable

from vigil.core.commands import Command, script
from vigil.core.fanout import Unreachable
from vigil.core.topology import database_cluster
from vigil.database.cluster import Cluster
from vigil.incident.endpoints import HTTP_ENDPOINTS, site_of
from vigil.incident.engine import Finding
from vigil.incident.hosts import EnvHosts
from vigil.incident.services import APP_SERVICES
from vigil.incident.status_rules import certificate_days

# Each path's filesystem once: "<mount point> <use%> <path asked>".
DISK_USAGE = r'''
for dir in "$@"; do [ -d "$dir" ] && df -P -- "$dir" | awk -v d="$dir" 'NR==2 {print $6, $5, d}'; done | sort -u -k1,1
'''

DATABASE_ANSWERS = r'''
pg_isready -q -t 5 || { echo "pg_isready: not accepting connections"; exit 1; }
runuser -u postgres -- psql -X -q -d "$1" -Atc 'select 1' 2>&1 | tail -n 1
'''

CERTIFICATE_END = r'''
openssl x509 -enddate -noout -in "$1" 2>/dev/null | cut -d= -f2; date -u +%Y-%m-%dT%H:%M:%SZ
'''

# Each path through this host's own nginx, by the site's name (SNI and Host) but to 127.0.0.1: the answer is
# this host's, whatever DNS or a load balancer would pick. "<path> <expected text found: 1|0> <status> <seconds>".
# TLS is not verified here: the certificate check is about that.
HTTP_THROUGH_NGINX = r"""
name=$1; shift
while [ "$#" -ge 2 ]; do
    path=$1; expect=$2; shift 2
    body=$(curl -sk --max-time 10 --resolve "$name:443:127.0.0.1" -w '\n@@%{http_code} %{time_total}' \
        "https://$name$path" 2>&1)
    case $body in *"$expect"*) found=1 ;; *) found=0 ;; esac
    echo "$path $found ${body##*@@}"
done
"""
POSTGRESQL_INSTANCES = (
    "systemctl list-units --all --plain --no-legend 'postgresql@*.service' | awk '{print $1, $3, $4}'"
)
LISTENING = 'ss -Hltn "sport = :$1" | head -n 1'


def http_command(server_name: str, services: list[str]) -> Command:
    """Each service's page through this host's own nginx, by the site's name."""
    return script(HTTP_THROUGH_NGINX, server_name,
                  *[part for service in services for part in HTTP_ENDPOINTS[service][1:]])


def parse_http(host: str, stdout: str, services: list[str]) -> list[Finding]:
    """HTTP_THROUGH_NGINX's lines -> one Finding per service: ok when it answered 200 with the expected text."""
    answers = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            answers[parts[0]] = parts[1:]
    findings = []
    for service in services:
        path = HTTP_ENDPOINTS[service][1]
        found, status, seconds = answers.get(path, ("0", "000", "0"))
        ms = f"{float(seconds) * 1000:.0f} ms" if seconds.replace(".", "", 1).isdigit() else "?"
        detail = f"HTTP {status} in {ms}" if status != "000" else "no answer from nginx"
        findings.append(Finding(host, service, status == "200" and found == "1", detail))
    return findings


def disk_command(paths: list[str]) -> Command:
    """The filesystem of each of `paths`, once each."""
    return script(DISK_USAGE, *paths)


def database_command(database: str) -> Command:
    """Whether PostgreSQL accepts connections and answers a query in `database`."""
    return script(DATABASE_ANSWERS, database)


def parse_disk(host: str, stdout: str, max_used: int) -> list[Finding]:
    """DISK_USAGE's lines -> one Finding per filesystem: ok below `max_used` percent."""
    findings = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].rstrip("%").isdigit():
            used = int(parts[1].rstrip("%"))
            findings.append(Finding(host, f"filesystem {parts[0]}", used < max_used, f"{used}% used (max {max_used}%)"))
    return findings


def flatten(answers: dict[str, list[Finding] | Unreachable]) -> list[Finding]:
    """Every host's findings in one list, by host; a host that could not be asked is one failed finding."""
    findings = []
    for host, answer in sorted(answers.items()):
        findings += [Finding(host, "ssh", False, answer.reason)] if isinstance(answer, Unreachable) else answer
    return findings


def check_http(hosts: EnvHosts, params: dict) -> list[Finding]:
    """The app's pages through each web host's own nginx, so a failure is pinned to its host."""
    def ask(transport, host):
        server_name, _, _ = site_of(hosts.vars(host))
        return parse_http(host, transport.run(http_command(server_name, params["services"]), timeout=60).stdout,
                          params["services"])

    return flatten(hosts.on_hosts(hosts.running("backend"), ask))


def check_systemd(hosts: EnvHosts, params: dict) -> list[Finding]:
    """The live color's unit of each app service, nginx, and PostgreSQL's cluster units: active or not."""
    def ask(transport, host):
        app = [service for service in params["services"] if service in APP_SERVICES and host in hosts.running(service)]
        units = dict(hosts.live_units(transport, host, app)) if app else {}
        if "nginx" in params["services"] and host in hosts.running("nginx"):
            units["nginx"] = "nginx.service"
        findings = []
        if "postgresql" in params["services"] and host in hosts.running("postgresql"):
            # postgresql.service only wraps the clusters (it stays "active" when one dies): ask the instances.
            instances = [
                line.split() for line in transport.run(script(POSTGRESQL_INSTANCES)).stdout.splitlines() if line.strip()
            ]
            findings.append(
                Finding(
                    host,
                    "postgresql",
                    bool(instances) and all(state == "active" for _, state, _ in instances),
                    ", ".join(f"{unit} {state} ({sub})" for unit, state, sub in instances) or "no cluster unit",
                )
            )
        for service, unit in units.items():
            if unit is None:
                findings.append(Finding(host, service, False, "no release is live"))
                continue
            state = (
                transport.run(Command(("systemctl", "is-active", "--", unit), sudo=True)).stdout.strip() or "unknown"
            )
            findings.append(Finding(host, service, state == "active", f"{unit} {state}"))
        return findings

    names = sorted({name for service in params["services"] for name in hosts.running(service)})
    return flatten(hosts.on_hosts(names, ask))


def check_disk(hosts: EnvHosts, params: dict) -> list[Finding]:
    """How full the filesystems of the given paths are, on a group of hosts."""
    def ask(transport, host):
        answer = transport.run(disk_command(params["paths"]))
        return parse_disk(host, answer.stdout, params["max_used"]) or [
            Finding(host, "disk", False, "df answered nothing")
        ]

    return flatten(hosts.on_hosts(hosts.group(params["hosts"]), ask))


def check_database(hosts: EnvHosts, params: dict) -> list[Finding]:
    """PostgreSQL accepts connections and answers a query in the app's database."""
    database = hosts.running("postgresql")
    if not database:
        return [Finding("-", "postgresql", False, "the inventory runs no database host")]

    def ask(transport, host):
        answer = transport.run(database_command(hosts.vars(host)["postgresql_database"]))
        ok = answer.ok and answer.stdout.strip() == "1"
        return [
            Finding(host, "postgresql", ok, "answers queries" if ok else (answer.stdout + answer.stderr).strip()[-200:])
        ]

    return flatten(hosts.on_hosts(database, ask))


def check_certificate(hosts: EnvHosts, params: dict) -> list[Finding]:
    """Days left on each web host's certificate, against the minimum the runbook wants."""
    def ask(transport, host):
        _, certificate, _ = site_of(hosts.vars(host))
        answer = transport.run(script(CERTIFICATE_END, certificate))
        lines = answer.stdout.strip().splitlines()
        days = certificate_days(lines[0], lines[-1]) if len(lines) == 2 else None
        if days is None:
            return [Finding(host, "certificate", False, f"{certificate} is not readable")]
        return [
            Finding(
                host,
                "certificate",
                days >= params["min_days"],
                f"{days} days left (at least {params['min_days']} wanted)",
            )
        ]

    return flatten(hosts.on_hosts(hosts.running("nginx"), ask))


def check_port(hosts: EnvHosts, params: dict) -> list[Finding]:
    """Whether something listens on a TCP port, on a group of hosts (and whether it should)."""
    def ask(transport, host):
        listening = bool(transport.run(script(LISTENING, str(params["port"]))).stdout.strip())
        return [Finding(host, f"port {params['port']}", listening == params["listening"],
                        "listening" if listening else "not listening")]

    return flatten(hosts.on_hosts(hosts.group(params["hosts"]), ask))


def check_cluster(hosts: EnvHosts, params: dict) -> list[Finding]:
    """The database cluster (vigil.database): a running leader (require: leader), or a leader and every
    member streaming from it (require: healthy)."""
    if not database_cluster(hosts.inventory):
        return [Finding("-", "cluster", False, "the inventory has no database cluster (three or more database hosts)")]
    status = Cluster.of(hosts.inventory, "the runbook's cluster check").status()
    leader = status.leader
    if params["require"] == "leader":
        return [Finding(leader.name if leader else "-", "leader", leader is not None,
                        "leads" if leader else "; ".join(status.problems()))]
    problems = status.problems()
    return [Finding(leader.name if leader else "-", "cluster", not problems,
                    "; ".join(problems) or "leads; every member streams from it")]


# What a runbook's `check: NAME` runs (its parameters are validated by runbooks.CHECKS).
CHECKS: dict[str, Callable[[EnvHosts, dict], list[Finding]]] = {
    "http": check_http,
    "systemd": check_systemd,
    "disk": check_disk,
    "database": check_database,
    "certificate": check_certificate,
    "port": check_port,
    "cluster": check_cluster,
}
