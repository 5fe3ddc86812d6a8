"""What would stop a deploy on its hosts, asked of every host at once before anything is built, backed
up or changed: a sudo that would want a password, too little disk, another deploy's live lock, a host
onboarded before boots started the color nginx serves.

A deploy that is bound to fail says so in seconds, before the build and before the pre-migration
backup, instead of after them.
"""

from __future__ import annotations

from vigil.core.errors import ExitCode, VigilError
from vigil.core.fanout import on_hosts, unreachable
from vigil.core.inventory import Host, Inventory
from vigil.core.runner import Connector
from vigil.deploy.scripts import PREFLIGHT, as_deploy
from vigil.deploy.settings import SERVED_COLORS_HELPER, SWITCH_HELPER, UNIT_HELPER, Settings
from vigil.deploy.state import holder_line, parse_json_object


class PreflightFailed(VigilError):
    """A host would stop the deploy; nothing was built, backed up or changed."""

    def __init__(self, problems: dict[str, list[str]], unreached: bool):
        lines = "; ".join(f"{host}: {problem}" for host, found in problems.items() for problem in found)
        super().__init__(f"the deploy would fail, so nothing was built, backed up or changed: {lines}")
        self.problems = problems
        self.exit_code = ExitCode.UNREACHABLE if unreached else ExitCode.HOST_FAILED


def preflight_command(settings: Settings, check_lock: bool):
    """PREFLIGHT for one service on one host."""
    layout = settings.layout
    return as_deploy(PREFLIGHT, layout.base, str(settings.min_free_mb), layout.lock, str(settings.lock_lease),
                     "1" if check_lock else "0", SERVED_COLORS_HELPER, UNIT_HELPER, SWITCH_HELPER)


def parse_problems(stdout: str) -> list[str]:
    """PREFLIGHT's lines as problems a person reads (a held lock with its holder, as the lock step says it)."""
    problems = []
    for line in (line.strip() for line in stdout.splitlines() if line.strip()):
        if line.startswith("@lock "):
            _, silent, owner = line.split(" ", 2)
            line = (f"lock: another deploy holds it: {holder_line(parse_json_object(owner) or {})}, its heartbeat "
                    f"{silent} s ago; wait for it with --lock-wait")
        problems.append(line)
    return problems


def preflight(inventory: Inventory, hosts: list[Host], settings: dict[str, Settings], lock_wait: float,
              connector: Connector | None = None) -> None:
    """Ask every host at once (one round trip each) as the deploy user; PreflightFailed naming each
    problem by host. connector: how to reach a host (default: SSH)."""

    def ask(transport, host: Host) -> list[str]:
        result = transport.run(preflight_command(settings[host.name], check_lock=lock_wait <= 0))
        return parse_problems(result.stdout) if result.ok else [f"the preflight check failed: {result.stderr[-200:]}"]

    answers = on_hosts(inventory, hosts, ask, admin=False, connector=connector)
    gone = unreachable(answers)
    problems = {host: [f"unreachable: {gone[host]}"] if host in gone else answer
                for host, answer in answers.items() if host in gone or answer}
    if problems:
        raise PreflightFailed(problems, unreached=set(problems) <= set(gone))
