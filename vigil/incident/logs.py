"""`incident.logs`: the journal of a service on every host that runs it, merged by time, secrets masked."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from vigil.core.commands import Command
from vigil.core.errors import HostError
from vigil.core.fanout import answered, on_hosts, unreachable
from vigil.core.inventory import Host, load_inventory
from vigil.deploy.settings import app_name
from vigil.incident.services import SERVICE_UNITS, hosts_running
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
    """Every host's lines in one list, by time."""
    return sorted((line for lines in per_host for line in lines), key=lambda line: (line.time, line.host))


def gather_logs(env: str, services: list[str], since: str, lines: int, limit: str | None):
    """(merged lines, {host: why it could not be read}) for `services` on the hosts that run them."""
    inventory = load_inventory(env)
    load_for_masking(env)  # a log line quoting one of the env's values is masked
    topology = load_schema().topology(inventory)
    runs_on = {service: {host.name for host in hosts_running(topology, service)} for service in services}
    app = app_name(inventory)

    def ask(transport, host: Host) -> list[LogLine]:
        patterns = [pattern.format(app=app) for service in services if host.name in runs_on[service]
                    for pattern in SERVICE_UNITS[service]]
        answer = transport.run(journal_command(patterns, since, lines))
        if not answer.ok:
            raise HostError(host.name, answer.stderr.strip()[-300:])
        return parse_journal(host.name, answer.stdout)

    hosts = [host for host in inventory.select(limit) if any(host.name in runs_on[service] for service in services)]
    answers = on_hosts(inventory, hosts, ask)
    return merge_logs(list(answered(answers).values())), unreachable(answers)
