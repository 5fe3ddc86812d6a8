"""An env's hosts as the runbook steps see them: who runs what, each host's vars, one question asked of
many hosts at once, and what serves on each. Checks and actions are written against this."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from vigil.core.connectors import Transport
from vigil.core.fanout import Unreachable, on_hosts
from vigil.core.inventory import HostVars, load_inventory
from vigil.core.roles import load_role
from vigil.deploy.settings import host_settings
from vigil.deploy.state import live_color
from vigil.deploy.status import states_as_admin
from vigil.incident.services import hosts_running
from vigil.vault.schema import load_schema
from vigil.vault.store import load_for_masking

Answer = TypeVar("Answer")
# The roles whose vars the steps read: the app's layout, the site, the database.
STEP_ROLES = ("app", "nginx", "postgresql")


class EnvHosts:
    """One env's hosts, for the runbook steps.

    incident: the incident record (collected logs go in its directory), once one is open;
    say: progress lines for people. The env's secrets are loaded once, so no output can show one.
    """

    def __init__(self, env: str, incident, say: Callable[[str], None]):
        self.env, self.incident, self.say = env, incident, say
        self.inventory = load_inventory(env)
        self.schema = load_schema()
        # Where they cannot be read, values are still masked by their shape (URL passwords, names).
        self.secrets, self.secrets_problem = load_for_masking(env)
        self.topology = self.schema.topology(self.inventory)
        self.roles = [load_role(name) for name in STEP_ROLES]
        self.hosts = {host.name: host for host in self.inventory.select(None)}

    def vars(self, name: str) -> HostVars:
        return self.inventory.vars_for(self.hosts[name], self.roles)

    def running(self, service: str) -> list[str]:
        """The names of the hosts that run `service` (backend, frontend, nginx, postgresql)."""
        return [host.name for host in hosts_running(self.topology, service)]

    def group(self, group: str) -> list[str]:
        """The names of the hosts in a group a runbook names (runbooks.HOST_GROUPS: all, web, database)."""
        return {"all": list(self.hosts), "web": self.running("backend"), "database": self.running("postgresql")}[group]

    def on_hosts(self, names: list[str], ask: Callable[[Transport, str], Answer]) -> dict[str, Answer | Unreachable]:
        """ask(transport, host name) on each host at once, as root; a host that cannot be asked is Unreachable."""
        return on_hosts(
            self.inventory, [self.hosts[name] for name in names], lambda transport, host: ask(transport, host.name)
        )

    def app_states(
        self, transport: Transport, host: str, services: list[str]
    ) -> dict[str, tuple[str | None, dict | None]]:
        """service -> (its live unit or None, the deploy lock held on it or None), in one round trip."""
        settings = host_settings(self.inventory, self.hosts[host], services)
        states = states_as_admin(transport, settings)
        found = {}
        for service, one in zip(services, settings):
            state = states.get(service)
            color = live_color(state, one) if state else None
            found[service] = (one.layout.unit(color) if color else None, state.lock if state else None)
        return found

    def live_units(self, transport: Transport, host: str, services: list[str]) -> dict[str, str | None]:
        """service -> the unit of the color nginx sends its traffic to (None: nothing deployed)."""
        return {service: unit for service, (unit, _) in self.app_states(transport, host, services).items()}

    def current_releases(self, service: str) -> dict[str, str | None]:
        """host -> the release of `service` it serves (None: unknown or unreachable)."""
        def ask(transport: Transport, host: str) -> str | None:
            state = states_as_admin(transport, host_settings(self.inventory, self.hosts[host], [service])).get(service)
            return state.current if state else None

        return {host: (None if isinstance(release, Unreachable) else release)
                for host, release in self.on_hosts(self.running(service), ask).items()}

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def clock(self) -> float:
        return time.monotonic()
