"""Pushing: each service's env file on the hosts that run it (0600, owned by the app user, written
atomically), and a reload or restart of what reads it."""

from __future__ import annotations

from typing import Callable

from vigil.core.inventory import Inventory
from vigil.core.paths import rel
from vigil.core.runner import HostPlan
from vigil.core.topology import Topology, database_cluster
from vigil.operations.files import Directory, File
from vigil.operations.systemd import ServiceAction
from vigil.operations.users import User
from vigil.vault.derive import cluster_root_certificate, database_root_certificate, derive_values
from vigil.vault.env_files import render_dotenv
from vigil.vault.paths import SecretsError
from vigil.vault.schema import Schema


def push_plans(inventory: Inventory, schema: Schema, values: dict[str, str], env: str, limit: str | None,
               only_services: list[str] | None = None,
               database_certificate: Callable[[Topology], str] | None = None) -> list[HostPlan]:
    """Each host's operations for `secrets.push`: the app user, the config dir, one env file per service.

    An env file that changes notifies its service, which reloads or restarts
    (only if running) once at the end of the host's run.
    only_services: push just these services (secrets.rotate of a key only some services use).
    database_certificate: called (once, if at all) for the database server's certificate, which web
    hosts other than the database host get beside a derived DATABASE_URL.
    """
    certificate_cache: list[str] = []

    def certificate() -> str:
        if not certificate_cache and database_cluster(inventory):
            certificate_cache.append(cluster_root_certificate(values, env))
        if not certificate_cache:
            if database_certificate is None:
                raise SecretsError("a derived DATABASE_URL on another host needs the database server's certificate")
            certificate_cache.append(database_certificate(topology))
        return certificate_cache[0]

    topology = schema.topology(inventory)
    # The env files are root's to write: as the admin user, like provisioning.
    selected = [host.as_admin() for host in inventory.select(limit)]
    plans = []
    for host in selected:
        services = [service for service in schema.services.values()
                    if (only_services is None or service.name in only_services)
                    and host.name in topology.service_hosts[service.name]]
        if not services:
            continue
        operations = [
            User(schema.app_user, shell="/usr/sbin/nologin", home=f"/var/lib/{schema.app_user}", system=True,
                 name=f"Ensure the app user {schema.app_user} exists."),
            Directory(schema.config_dir, owner="root", group=schema.app_user, mode="0750",
                      name=f"Ensure {schema.config_dir} is readable by the app only."),
        ]
        handlers = {}
        derived = derive_values(schema, values, topology, host, services)
        host_values = {**values, **derived}
        if "sslrootcert=" in derived.get("DATABASE_URL", ""):
            # The app reads it when it starts: a new one (a rebuilt database host) needs a restart.
            readers = tuple(f"restart {service.name}" for service in services if service.units
                            and "DATABASE_URL" in schema.for_service(service.name, host_values))
            operations.append(File(database_root_certificate(schema), certificate().encode(), owner="root",
                                   group=schema.app_user, mode="0644", notify=readers,
                                   name="Ensure the database server's certificate is here to verify it by."))
        for service in services:
            content = render_dotenv(schema.for_service(service.name, host_values), list(schema.keys))
            operations.append(File(
                service.env_file, content, owner=schema.app_user, group=schema.app_user, mode="0600",
                secret=True, env_file=True, notify=(f"restart {service.name}",) if service.units else (),
                name=f"Ensure {service.env_file} holds the {env} secrets of {service.name}.",
            ))
            if service.units:
                handlers[f"restart {service.name}"] = ServiceAction(
                    service.units, "try-reload-or-restart", name=f"Reload or restart {service.name} where it runs.")
        plans.append(HostPlan(host, operations, handlers))
    if not plans:
        raise SecretsError(f"no host in --limit {limit or 'all'} runs any service of {rel(schema.path)}")
    return plans
