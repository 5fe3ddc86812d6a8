"""The database cluster as Patroni sees it, and the levers an operator pulls: its status (members, roles,
lag, timeline, synchronous state), a planned switchover, a failover when no member leads, and rebuilding a
member whose data diverged.

Each member is asked once, all at the same time, for two views in one round trip: the cluster's, as
Patroni keeps it in etcd (`patronictl list`), and its own, from its REST API (`GET /patroni`). Without an
etcd quorum there is no cluster view, and each member's own says whether anything still takes writes.
Every change goes through patronictl on a member; vigil never promotes or demotes PostgreSQL itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from vigil.core.commands import Command, script
from vigil.core.errors import ConfigError, HostError, VigilError
from vigil.core.fanout import Unreachable, connect, on_hosts
from vigil.core.inventory import Host, Inventory
from vigil.core.paths import rel
from vigil.core.roles import load_role
from vigil.core.topology import PATRONI_REST_PORT, database_cluster

# A replica further behind than this is shown as lagging (Patroni's own failover limit is 1 MiB).
LAG_WARNING_MB = 16
BREAK = "@@vigil-member-view"
# Both views of one member; its REST API is read over TLS against the cluster's CA on its private address.
VIEWS = r"""
patronictl -c "$1" list -f json 2>/dev/null || echo null
echo "$4"
curl -s --max-time 3 --cacert /etc/patroni/tls/ca.crt "https://$2:$3/patroni" || echo null
"""


class ClusterError(VigilError):
    """The cluster cannot do what was asked now (no leader to copy from, a member that did not take over)."""


@dataclass(frozen=True)
class Member:
    """One member as the cluster sees it: role Leader, Sync Standby or Replica; state running, streaming..."""

    name: str
    role: str
    state: str
    timeline: int | None = None
    lag_mb: float | None = None

    @property
    def leads(self) -> bool:
        return self.role == "Leader" and self.state == "running"

    @property
    def synchronous(self) -> bool:
        return self.role == "Sync Standby"


@dataclass(frozen=True)
class OwnView:
    """What a member's own Patroni says of it, without etcd: primary or replica, and PostgreSQL's state."""

    role: str
    state: str
    timeline: int | None = None


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster's members (etcd's view, from the first member that could read it), each member's own
    view, and the members that did not answer."""

    scope: str
    expected: list[str]
    members: list[Member]
    own: dict[str, OwnView] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def leader(self) -> Member | None:
        return next((member for member in self.members if member.leads), None)

    @property
    def quorum(self) -> bool:
        """Whether some member could read the cluster from etcd."""
        return bool(self.members)

    def problems(self) -> list[str]:
        """What is wrong, a sentence each; [] for a healthy cluster."""
        if not self.quorum:
            writers = [name for name, view in self.own.items() if view.role == "primary"]
            return [f"no member can read the cluster from etcd (no quorum?): {', '.join(writers) or 'none'} "
                    "takes writes"]
        found = []
        if self.leader is None:
            found.append("no member leads: writes are refused (`invoke db.failover` once one can)")
        listed = {member.name for member in self.members}
        found += [f"{name} is not in the cluster" for name in self.expected if name not in listed]
        for member in self.members:
            if not member.leads and member.state not in ("streaming", "running"):
                found.append(f"{member.name} is {member.state}")
            elif not member.leads and member.state == "running":
                found.append(f"{member.name} runs but does not stream from the leader")
            if member.lag_mb is not None and member.lag_mb > LAG_WARNING_MB:
                found.append(f"{member.name} is {member.lag_mb:g} MB behind the leader")
        found += [f"{name} did not answer: {reason}" for name, reason in self.unreachable.items()]
        return found


@dataclass(frozen=True)
class Cluster:
    """Where the cluster of an env is: its members' hosts and Patroni's file on them."""

    inventory: Inventory
    hosts: list[Host]
    scope: str
    config: str

    @classmethod
    def of(cls, inventory: Inventory, task: str) -> "Cluster":
        names = database_cluster(inventory)
        if not names:
            count = len(inventory.groups.get("db") or [])
            raise ConfigError(f"{task}: {rel(inventory.path)} has no database cluster (group db has {count} "
                              "host(s); a cluster needs three, see docs/ha.md)")
        hosts = [inventory.hosts[name] for name in names]
        settings = inventory.vars_for(hosts[0], [load_role("patroni")])
        instance = (f"{settings.integer('patroni_postgresql_version', minimum=10)}-"
                    f"{settings.string('patroni_postgresql_cluster', r'[a-z0-9_]+')}")
        return cls(inventory, hosts, settings.string("patroni_scope", r"[a-z0-9][a-z0-9-]{0,62}"),
                   f"/etc/patroni/{instance}.yml")

    def host(self, name: str, flag: str) -> Host:
        if name not in {host.name for host in self.hosts}:
            raise ConfigError(f"{flag}: {name!r} is not a member of the database cluster "
                              f"({', '.join(host.name for host in self.hosts)})")
        return next(host for host in self.hosts if host.name == name)

    def patronictl(self, *arguments: str) -> Command:
        return Command(("patronictl", "-c", self.config, *arguments))

    def views_command(self, host: Host) -> Command:
        """The one command that asks member `host` for both views (parse_status reads its output)."""
        return script(VIEWS, self.config, self.inventory.vars_for(host).private_address(), str(PATRONI_REST_PORT),
                      BREAK)

    def status(self) -> ClusterStatus:
        answers = on_hosts(self.inventory, self.hosts,
                           lambda transport, host: transport.run(self.views_command(host), timeout=30).stdout)
        return parse_status(self.scope, [host.name for host in self.hosts], answers)

    def run_on(self, preferred: list[str], command: Command, timeout: float = 120) -> str:
        """`command` on the first of `preferred` members (then any other) that can be reached; its output."""
        order = [*preferred, *(host.name for host in self.hosts if host.name not in preferred)]
        reasons = []
        for name in order:
            try:
                with connect(self.inventory, self.host(name, "member")) as transport:
                    result = transport.run(command, timeout=timeout)
            except HostError as error:
                reasons.append(f"{name}: {error.message}")
                continue
            if not result.ok:
                raise ClusterError(f"{name}: {command.display()} failed: {(result.stderr or result.stdout).strip()}")
            return result.stdout
        raise ClusterError("no member of the database cluster could be reached: " + "; ".join(reasons))

    def wait_for(self, condition, seconds: float, every: float = 1.0) -> ClusterStatus:
        """The status once `condition(status)` holds, or ConfigError-free the last one after `seconds`."""
        deadline = time.monotonic() + seconds
        status = self.status()
        while not condition(status) and time.monotonic() < deadline:
            time.sleep(every)
            status = self.status()
        return status


def parse_status(scope: str, expected: list[str], answers: dict[str, str | Unreachable]) -> ClusterStatus:
    """The status from each member's two views (VIEWS' output), the cluster's from the first that had it."""
    members: list[Member] = []
    own: dict[str, OwnView] = {}
    unreachable = {}
    for name, answer in answers.items():
        if isinstance(answer, Unreachable):
            unreachable[name] = answer.reason
            continue
        listed, _, local = answer.partition(BREAK)
        rows = _json(listed)
        if not members and isinstance(rows, list) and rows:
            members = [Member(row["Member"], row.get("Role", ""), row.get("State", ""), _int(row.get("TL")),
                              _lag(row.get("Lag in MB"))) for row in rows]
        view = _json(local)
        if isinstance(view, dict) and view:
            own[name] = OwnView(view.get("role", "unknown"), view.get("state", "unknown"), _int(view.get("timeline")))
    return ClusterStatus(scope, expected, members, own, unreachable)


def _json(text: str):
    try:
        return json.loads(text.strip() or "null")
    except ValueError:
        return None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _lag(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # the leader, or "unknown" for a member that does not stream
