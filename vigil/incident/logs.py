"""`incident.logs`: the journal of a service on every host that runs it, merged by time, secrets masked;
with --archive, what the hosts shipped to the monitor host (a host that is gone included)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from vigil.core.commands import Command, script
from vigil.core.errors import ConfigError, HostError
from vigil.core.fanout import answered, connect, on_hosts, unreachable
from vigil.core.inventory import Host, load_inventory, private_address
from vigil.deploy.settings import app_name
from vigil.incident.services import SERVICE_UNITS, hosts_running
from vigil.monitor.prometheus import require_monitor
from vigil.vault.schema import load_schema
from vigil.vault.store import load_for_masking

SINCE = re.compile(r"^[A-Za-z0-9 :.+-]{1,40}$")


@dataclass(frozen=True)
class LogLine:
    """One journal entry of one host."""

    time: int  # microseconds since the epoch
    host: str
    unit: str
    message: str

    def render(self) -> str:
        when = datetime.fromtimestamp(self.time / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return f"{when} {self.host} {self.unit.removesuffix('.service')}: {self.message}"


def journal_command(patterns: list[str], since: str, lines: int, grep: str = "") -> Command:
    return Command(("journalctl", "--no-pager", "--quiet", "-o", "json", "--since", since, "-n", str(lines),
                    *[arg for pattern in patterns for arg in ("-u", pattern)],
                    *([f"--grep={grep}"] if grep else [])), sudo=True)


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
    """Every host's lines in one list, by time."""
    return sorted((line for lines in per_host for line in lines), key=lambda line: (line.time, line.host))


def gather_logs(env: str, services: list[str], since: str, lines: int, limit: str | None, grep: str = ""):
    """(merged lines, {host: why it could not be read}) for `services` on the hosts that run them."""
    inventory = load_inventory(env)
    load_for_masking(env)  # a log line quoting one of the env's values is masked
    topology = load_schema().topology(inventory)
    runs_on = {service: {host.name for host in hosts_running(topology, service)} for service in services}
    app = app_name(inventory)

    def ask(transport, host: Host) -> list[LogLine]:
        patterns = [pattern.format(app=app) for service in services if host.name in runs_on[service]
                    for pattern in SERVICE_UNITS[service]]
        answer = transport.run(journal_command(patterns, since, lines, grep))
        if not answer.ok:
            raise HostError(host.name, answer.stderr.strip()[-300:])
        return parse_journal(host.name, answer.stdout)

    hosts = [host for host in inventory.select(limit) if any(host.name in runs_on[service] for service in services)]
    answers = on_hosts(inventory, hosts, ask)
    return merge_logs(list(answered(answers).values())), unreachable(answers)


# On the monitor host (roles/journal): what each host shipped, one file per host, read there as root.
ARCHIVE = r'''
set -f  # the unit and file patterns are journalctl's to match, not the shell's
dir=$1 since=$2 lines=$3 grep=$4
shift 4
units=""
while [ "$1" != "--" ]; do units="$units -u $1"; shift; done
shift
for pair in "$@"; do
    host=${pair%%=*} address=${pair#*=}
    echo "@host $host"
    if out=$(journalctl --no-pager --quiet -o json --since "$since" -n "$lines" $units ${grep:+--grep="$grep"} \
        --file="$dir/remote-$address*.journal" 2>&1); then
        printf '%s\n' "$out"
    else
        printf '@error %s\n' "$(printf '%s' "$out" | tail -n 1)"
    fi
done
'''
ARCHIVE_DIR = "/var/log/journal/remote"


def archive_command(hosts: dict[str, str], patterns: list[str], since: str, lines: int, grep: str) -> Command:
    """hosts: inventory name -> the private address it ships from (journal-remote names its file by it)."""
    return script(ARCHIVE, ARCHIVE_DIR, since, str(lines), grep, *patterns, "--",
                  *(f"{name}={address}" for name, address in hosts.items()))


def split_archive(stdout: str) -> tuple[dict[str, str], dict[str, str]]:
    """The ARCHIVE script's output: (host -> its journal's JSON lines, host -> why they could not be read)."""
    parts: dict[str, list[str]] = {}
    problems: dict[str, str] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("@host "):
            current = line[6:].strip()
            parts[current] = []
        elif line.startswith("@error ") and current is not None:
            problems[current] = line[7:].strip() or "journalctl failed"
        elif current is not None:
            parts[current].append(line)
    return {host: "\n".join(lines) for host, lines in parts.items()}, problems


def gather_archive(env: str, services: list[str] | None, since: str, lines: int, limit: str | None,
                   grep: str = "") -> tuple[list[LogLine], dict[str, str]]:
    """(the journal lines the selected hosts shipped to the monitor host (roles/journal), merged by time,
    {host: why its lines could not be read}): a host that is down, or gone, included.
    services: only these services' units (None: every line); grep: only lines that match (journalctl --grep)."""
    inventory = load_inventory(env)
    load_for_masking(env)
    monitor = require_monitor(inventory, "incident.logs --archive")
    hosts = {host.name: private_address(host, inventory) for host in inventory.select(limit)
             if host.name != monitor.name}
    if not hosts:
        raise ConfigError(f"--limit {limit}: no host but the monitor host itself, whose journal is not shipped")
    app = app_name(inventory)
    patterns = sorted({pattern.format(app=app) for service in services or [] for pattern in SERVICE_UNITS[service]})
    with connect(inventory, monitor) as transport:
        answer = transport.run(archive_command(hosts, patterns, since, lines, grep), timeout=300)
    if not answer.ok:
        raise HostError(monitor.name, answer.stderr.strip()[-300:] or f"journalctl exited {answer.status}")
    texts, problems = split_archive(answer.stdout)
    return merge_logs([parse_journal(host, text) for host, text in texts.items()]), problems
