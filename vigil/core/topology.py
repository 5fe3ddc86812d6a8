"""Topology: which hosts of an environment do what. The one answer to "which hosts are web, which is the
database, which back up", for every task that must find them.

Two sources say it: playbooks/onboard.yml (the roles each host gets: the database host is the one
PostgreSQL is installed on) and the app's services (which inventory group runs the backend and the
frontend; the secrets schema declares them). Nothing here touches a host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from vigil.core.errors import ConfigError
from vigil.core.inventory import Host, Inventory
from vigil.core.paths import rel
from vigil.core.roles import load_playbook

ONBOARDING = "onboard"
DATABASE_ROLE = "postgresql"


@dataclass(frozen=True)
class Topology:
    """Which hosts of `inventory` run which role and which app service.

    role_hosts: role -> the names of the hosts onboarding applies it to.
    service_hosts: app service (backend, frontend) -> the names of the hosts that run it.
    Example: Topology.read(inventory, {"backend": "web", "frontend": "web"}, "secrets/schema.yml").database("backups")
    """

    inventory: Inventory
    role_hosts: Mapping[str, frozenset[str]]
    service_hosts: Mapping[str, frozenset[str]]

    @classmethod
    def read(cls, inventory: Inventory, services: Mapping[str, str], where: str) -> "Topology":
        """The topology from playbooks/onboard.yml and `services` (service -> an inventory pattern, as
        `where` names them; one naming no group or host of the inventory is an error). A play's group
        the inventory lacks runs on no host here (an env whose database is not one vigil runs has no db).
        """
        role_hosts: dict[str, set[str]] = {}
        for play in load_playbook(ONBOARDING):
            names = set()
            for item in (part.strip() for part in play.hosts.split(",")):
                if item == "all" or item in inventory.groups or item in inventory.hosts:
                    names |= inventory.hosts_in(item, where=play.where())
            for role in play.roles:
                role_hosts.setdefault(role.name, set()).update(names)
        service_hosts = {service: frozenset(inventory.hosts_in(pattern, where=f"{where}: services.{service}.hosts"))
                         for service, pattern in services.items()}
        return cls(inventory, {role: frozenset(names) for role, names in role_hosts.items()}, service_hosts)

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
            raise ConfigError(f"{rel(self.inventory.path)} has {len(hosts)} database hosts "
                              f"({', '.join(host.name for host in hosts) or 'none'}): {needed_for}")
        return hosts[0]
