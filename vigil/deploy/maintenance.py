"""Maintenance mode: the web hosts answer every visitor with the maintenance page (503 and Retry-After)
while the app keeps running, for a restore or a long migration (Kamal's `app maintenance`/`app live`).

roles/nginx's site serves the page while a flag file exists; turning it on or off is a run of
operations like any other: planned, applied, audited.
"""

from __future__ import annotations

from vigil.core.errors import ConfigError, ExitCode
from vigil.core.inventory import load_inventory
from vigil.core.operations import Operation
from vigil.core.output import Reporter
from vigil.core.playbook import run_plans
from vigil.core.runner import HostPlan, RunOptions
from vigil.core.topology import monitor_host
from vigil.monitor.textfile import MAINTENANCE_METRIC, maintenance_metric
from vigil.operations.files import Absent, File
from vigil.vault.schema import load_schema

# roles/nginx's site answers 503 with the maintenance page (and Retry-After) while this file exists.
MAINTENANCE_FLAG = "/var/www/together-pray/maintenance.on"


def maintenance_operations(on: bool, watched: bool = False) -> list[Operation]:
    """Maintenance mode on a web host: the flag file nginx checks (the app keeps running).

    watched: the env has a monitor host; the host's maintenance metric follows the flag, so
    Alertmanager mutes the host's web alerts while it is on (roles/monitoring).
    """
    if on:
        operations = [File(MAINTENANCE_FLAG, "on\n", mode="0644",
                           name="Ensure maintenance mode is on: the site answers 503 with Retry-After.")]
    else:
        operations = [Absent(MAINTENANCE_FLAG, name="Ensure maintenance mode is off.")]
    if watched:
        # Muted before the site answers 503, unmuted after it serves again: no alert for the switch itself.
        metric = File(MAINTENANCE_METRIC, maintenance_metric(on), mode="0644",
                      name=f"Ensure the monitor host sees maintenance mode {'on' if on else 'off'}.")
        operations = [metric, *operations] if on else [*operations, metric]
    return operations


def set_maintenance(env: str, on: bool, limit: str | None, reporter: Reporter | None = None,
                    check: bool = False) -> tuple[ExitCode, list[str]]:
    """Maintenance mode on every selected web host; (exit code, the hosts where it failed).

    reporter: where progress and the recap go (default: nowhere, for a task that reports it itself).
    Example: set_maintenance("production", True, None, Reporter())
    """
    inventory = load_inventory(env)
    web = {host.name for host in load_schema().topology(inventory).app_hosts()}
    hosts = [host for host in inventory.select(limit) if host.name in web]
    if not hosts:
        raise ConfigError(f"--limit {limit or 'all'} selects no web host in inventory/{env}.yml")
    watched = monitor_host(inventory) is not None
    plans = [HostPlan(host.as_admin(), maintenance_operations(on, watched)) for host in hosts]
    code, results = run_plans(
        f"incident.maintenance {'on' if on else 'off'}",
        inventory,
        plans,
        RunOptions(check=check),
        reporter or Reporter.quiet(),
    )
    return code, [result.host for result in results if result.failed or result.unreachable]
