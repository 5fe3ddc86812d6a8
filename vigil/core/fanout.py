"""Fan-out: ask each of several hosts one question at once, and get every answer back in one shape.

Status screens, audits, runbook steps and deploy listings all read hosts this way. A host that cannot
be asked (no connection, a refused key, a dropped session, sudo wanting a password) answers
`Unreachable` with the reason, never an exception: one host's trouble never hides the others' answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
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


class Connections:
    """Connections to hosts, each opened on its first use and kept for the next run of the same task (a deploy's
    preflight, then the deploy on each host), closed together at the end. An SSH handshake costs more than a
    round trip: a rollback within its window is otherwise mostly handshakes. A connection whose use raised is
    closed and forgotten, so the next use opens a new one; so is one left idle longer than `max_idle` seconds
    (a deploy's build in between), rather than trusted after a NAT or firewall may have dropped it.

    Example:
        with Connections(inventory, admin=False) as connections:
            preflight(inventory, hosts, settings, 0, connector=connections)
            run(plans, connections, RunOptions(), work=deploy)
    """

    def __init__(self, inventory: Inventory, admin: bool = True, max_idle: float = 30.0):
        self.inventory, self.admin, self.max_idle = inventory, admin, max_idle
        self._open: dict[str, tuple[SSHTransport, float]] = {}  # host name -> (its connection, last used)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, host: Host):
        with self._lock:
            transport, used = self._open.pop(host.name, (None, 0.0))
        if transport is not None and time.monotonic() - used > self.max_idle:
            transport.close()
            transport = None
        if transport is None:
            transport = connect(self.inventory, host, self.admin).connect()
        try:
            yield transport
        except BaseException:
            transport.close()
            raise
        with self._lock:
            self._open[host.name] = (transport, time.monotonic())

    def close(self) -> None:
        with self._lock:
            opened, self._open = [transport for transport, _ in self._open.values()], {}
        for transport in opened:
            transport.close()

    def __enter__(self) -> "Connections":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
