"""Topology: which hosts of an environment do what. The one answer to "which hosts are web, which is the
database, which back up", for every task that must find them.

Two sources say it: playbooks/onboard.yml (the roles each host gets: the database host is the one
PostgreSQL is installed on) and the app's services (which inventory group runs the backend and the
frontend; the secrets schema declares them). Nothing here touches a host.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping

from vigil.core.errors import ConfigError
from vigil.core.inventory import Host, Inventory
from vigil.core.paths import rel
from vigil.core.roles import load_playbook, load_role

ONBOARDING = "onboard"
DATABASE_ROLE = "postgresql"
# The monitor host's group (roles/monitoring): Prometheus and Alertmanager watch every host from there.
MONITOR_GROUP = "monitor"
# Where previews run (invoke preview.up): the hosts of group `preview`, else the web hosts.
PREVIEW_GROUP = "preview"
# The balancers in front of the web hosts (roles/balancer): HAProxy terminates HTTPS there.
BALANCER_GROUP = "lb"


@dataclass(frozen=True)
class Topology:
    """Which hosts of `inventory` run which role and which app service.

    role_hosts: role -> the names of the hosts onboarding applies it to.
    services: app service (backend, frontend) -> the inventory pattern of the hosts that run it, as
    `where` names it; resolved when first asked (a task that needs only the database host does not
    need the web group to exist).
    unmatched: role -> the play patterns that name no group or host of this inventory.
    Example: Topology.read(inventory, {"backend": "web", "frontend": "web"}, "secrets/schema.yml").database("backups")
    """

    inventory: Inventory
    role_hosts: Mapping[str, frozenset[str]]
    services: Mapping[str, str]
    where: str
    unmatched: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def read(cls, inventory: Inventory, services: Mapping[str, str], where: str) -> "Topology":
        """The topology from playbooks/onboard.yml and `services` (service -> an inventory pattern, as
        `where` names them). A play's group the inventory lacks runs on no host here (an env whose
        database vigil does not run has no db group); `database` says so when one is needed.
        """
        role_hosts: dict[str, set[str]] = {}
        unmatched: dict[str, list[str]] = {}
        for play in load_playbook(ONBOARDING, names_only=True):
            names, missing = set(), []
            for item in (part.strip() for part in play.hosts.split(",")):
                if item == "all" or item in inventory.groups or item in inventory.hosts:
                    names |= inventory.hosts_in(item, where=play.where())
                else:
                    missing.append(item)
            for role in play.role_names:
                role_hosts.setdefault(role, set()).update(names)
                unmatched.setdefault(role, []).extend(missing)
        return cls(inventory, {role: frozenset(names) for role, names in role_hosts.items()}, dict(services), where,
                   {role: tuple(items) for role, items in unmatched.items() if items})

    @functools.cached_property
    def service_hosts(self) -> Mapping[str, frozenset[str]]:
        """App service -> the names of the hosts that run it; a pattern naming no group or host is an error."""
        return {service: frozenset(self.inventory.hosts_in(pattern, where=f"{self.where}: services.{service}.hosts"))
                for service, pattern in self.services.items()}

    def _in_order(self, names: set[str] | frozenset[str]) -> list[Host]:
        return [host for name, host in self.inventory.hosts.items() if name in names]

    def running(self, role: str) -> list[Host]:
        """The hosts onboarding applies `role` to, in inventory order."""
        return self._in_order(self.role_hosts.get(role, frozenset()))

    def app_hosts(self, service: str | None = None) -> list[Host]:
        """The hosts that run `service`, or any app service: the web hosts, in inventory order."""
        if service is None:
            return self._in_order(frozenset().union(*self.service_hosts.values()))
        return self._in_order(self.service_hosts.get(service, frozenset()))

    def runs_app(self, name: str) -> bool:
        """Whether host `name` runs any app service."""
        return any(name in hosts for hosts in self.service_hosts.values())

    def database_or_none(self) -> Host | None:
        """The one host PostgreSQL is installed on, or None when the inventory has none or several."""
        hosts = self.running(DATABASE_ROLE)
        return hosts[0] if len(hosts) == 1 else None

    def database(self, needed_for: str) -> Host:
        """The one host PostgreSQL is installed on; ConfigError saying what needs it when there is not exactly one.

        needed_for: the sentence that says why one is needed ("the backup tasks act on the env's database host").
        """
        hosts = self.running(DATABASE_ROLE)
        if len(hosts) != 1:
            found = ", ".join(host.name for host in hosts) or "none"
            missing = self.unmatched.get(DATABASE_ROLE)
            if missing and not hosts:
                found += (f"; playbooks/{ONBOARDING}.yml installs PostgreSQL on {', '.join(map(repr, missing))}, "
                          "which is neither a group nor a host there")
            raise ConfigError(f"{rel(self.inventory.path)} has {len(hosts)} database hosts ({found}): {needed_for}")
        return hosts[0]


def repository_ends(groups: Mapping[str, list[str]], repository_group: str) -> tuple[str, str] | None:
    """(the repository host, the database host it backs up) as roles/pgbackrest sets them up: the first
    host of `repository_group` and the first of group db; None where either group has no host."""
    repositories, databases = groups.get(repository_group) or [], groups.get("db") or []
    return (repositories[0], databases[0]) if repositories and databases else None


def inventory_repository_ends(inventory: Inventory) -> tuple[str, str] | None:
    """repository_ends for `inventory`, with the repository group the database host's vars name
    (roles/pgbackrest's pgbackrest_repository_group); None where there is no repository."""
    databases = inventory.groups.get("db") or []
    if not databases:
        return None
    group = inventory.vars_for(inventory.hosts[databases[0]], [load_role("pgbackrest")]).string(
        "pgbackrest_repository_group", r"[A-Za-z0-9_-]+")
    return repository_ends(inventory.groups, group)


def preview_hosts(inventory: Inventory) -> list[Host]:
    """The hosts previews run on: group `preview` where the inventory has one, else group `web`."""
    names = inventory.groups.get(PREVIEW_GROUP) or inventory.groups.get("web") or []
    return [inventory.hosts[name] for name in names]


def monitor_host(inventory: Inventory) -> Host | None:
    """The env's monitor host, the first of group `monitor`; None where the inventory has none."""
    names = inventory.groups.get(MONITOR_GROUP) or []
    return inventory.hosts[names[0]] if names else None


# The database cluster (roles/etcd, roles/patroni, roles/haproxy): the hosts of group db, when it has three or
# more. Fewer run one database host; an even count survives no more failures than one fewer, and splits votes.
DATABASE_GROUP = "db"
FEWEST_CLUSTER_MEMBERS, MOST_CLUSTER_MEMBERS = 3, 7
# The cluster's ports, fixed (the firewall's group rules name them): etcd's clients and members, Patroni's
# REST API (HAProxy's health checks read /primary there), and the port HAProxy on each web host forwards
# to whichever member leads, on loopback (the app's DATABASE_URL), and the one to the replicas (reads that
# may lag).
ETCD_CLIENT_PORT, ETCD_PEER_PORT, PATRONI_REST_PORT, LEADER_PORT, REPLICA_PORT = 2379, 2380, 8008, 5000, 5001


def database_cluster(inventory: Inventory | None) -> list[str]:
    """The names of the database cluster's members in inventory order; [] where group db has fewer than three.

    Example: database_cluster(inventory) -> ["db1", "db2", "db3"]
    """
    names = list((inventory.groups if inventory is not None else {}).get(DATABASE_GROUP) or [])
    if len(names) < FEWEST_CLUSTER_MEMBERS:
        return []
    if len(names) % 2 == 0 or len(names) > MOST_CLUSTER_MEMBERS:
        raise ConfigError(f"{rel(inventory.path)}: group {DATABASE_GROUP!r} has {len(names)} hosts; the database "
                          f"cluster needs an odd number from {FEWEST_CLUSTER_MEMBERS} to {MOST_CLUSTER_MEMBERS} "
                          "(an even one survives no more failures than one fewer, and splits its votes)")
    return names
