"""The services an incident is about, and which hosts run each: the app's services on the web hosts,
nginx where onboarding installs it, PostgreSQL on the one database host."""

from __future__ import annotations

from vigil.core.inventory import Host
from vigil.core.topology import Topology

APP_SERVICES = ("backend", "frontend")
SERVICES = (*APP_SERVICES, "nginx", "postgresql")
# journalctl -u patterns per service ({app}: app_name); a release task's units are the backend's too.
SERVICE_UNITS = {
    "backend": ("{app}-backend@*", "{app}-backend-*@*"),
    "frontend": ("{app}-frontend@*",),
    "nginx": ("nginx.service",),
    "postgresql": ("postgresql*",),
}


def hosts_running(topology: Topology, service: str) -> list[Host]:
    """The hosts that run `service` (one of SERVICES), in inventory order.

    Example: hosts_running(topology, "postgresql") -> [the database host], or [] when there is not exactly one
    """
    if service == "postgresql":
        database = topology.database_or_none()
        return [database] if database else []
    if service == "nginx":
        return topology.running("nginx")
    return topology.app_hosts(service)
