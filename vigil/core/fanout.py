"""Fan-out: ask each of several hosts one question at once, and get every answer back in one shape.

Status screens, audits, runbook steps and deploy listings all read hosts this way. A host that cannot
be asked (no connection, a refused key, a dropped session, sudo wanting a password) answers
`Unreachable` with the reason, never an exception: one host's trouble never hides the others' answers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

from vigil.core.connectors import Transport
from vigil.core.connectors.ssh import SSHTransport
from vigil.core.inventory import Host, Inventory
from vigil.core.redaction import REDACTOR
from vigil.core.runner import Connector, HostPlan, HostResult, RunOptions, run

Answer = TypeVar("Answer")


@dataclass(frozen=True)
class Unreachable:
    """A host that gave no answer, and why."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def connect(inventory: Inventory, host: Host, admin: bool = True, bootstrap_fallback: bool = False) -> SSHTransport:
    """A connection to `host` (not yet open) as its admin user, root through sudo, or with admin=False as the
    deploy user. Not as the bootstrap user, unless bootstrap_fallback: then, on a server whose admin user
    does not exist yet, as the bootstrap user (onboarding, and the single-host backup and certificate reads).

    Example: with connect(inventory, db) as transport: transport.run(cmd("uptime"))
    """
    login = host.as_admin() if admin else host
    if not bootstrap_fallback:
        login = dataclasses.replace(login, bootstrap_user=None)
    return SSHTransport(login, inventory.known_hosts, inventory.env)


def on_hosts(inventory: Inventory, hosts: Iterable[Host], ask: Callable[[Transport, Host], Answer], admin: bool = True,
             forks: int = 10, connector: Connector | None = None) -> dict[str, Answer | Unreachable]:
    """`ask(transport, host)` on every host at once; host name -> its answer or Unreachable, in `hosts` order.

    admin: log in as the admin user (root through sudo); False: as the deploy user. An exception `ask`
    raises (a HostError on a lost connection) makes that host Unreachable with the reason.
    connector: how to reach a host (default: SSH, per `connect`); another transport plugs in here.
    Example: on_hosts(inventory, inventory.select("web"), lambda transport, host: transport.run(cmd("uptime")).stdout)
    """
    hosts = list(hosts)
    answers: dict[str, Answer] = {}

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        answers[host_plan.host.name] = ask(transport, host_plan.host)
        return HostResult(host_plan.host.name)

    results = run([HostPlan(host, []) for host in hosts], connector or (lambda host: connect(inventory, host, admin)),
                  RunOptions(forks=forks), None, work=work)
    failed = {result.host: Unreachable(REDACTOR.redact(result.unreachable or result.error))
              for result in results if result.unreachable or result.error}
    return {host.name: failed.get(host.name, answers.get(host.name)) for host in hosts}


def answered(answers: dict[str, Answer | Unreachable]) -> dict[str, Answer]:
    """Only the hosts that answered."""
    return {host: answer for host, answer in answers.items() if not isinstance(answer, Unreachable)}


def unreachable(answers: dict[str, object]) -> dict[str, str]:
    """Host name -> why it gave no answer, for the hosts that did not."""
    return {host: answer.reason for host, answer in answers.items() if isinstance(answer, Unreachable)}
