"""What every backup task shares: its error, its connections, the words it accepts, and the hosts it acts on.

Backups live in the pgBackRest repository on the env's backup host (repository.py); a task that needs
one refuses, before it connects anywhere, in an env without one (`require_repository`).
"""

from __future__ import annotations

import re

from vigil.core.errors import ExitCode, VigilError
from vigil.core.fanout import connect as connect_to_host
from vigil.core.inventory import Host, Inventory, load_inventory
from vigil.vault.schema import load_schema

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


class BackupError(VigilError):
    exit_code = ExitCode.HOST_FAILED


def database_host(env: str) -> tuple[Inventory, Host]:
    """The env's database host, logged in to as the admin user (an export runs pg_dump as postgres)."""
    inventory = load_inventory(env)
    host = load_schema().topology(inventory).database("backup.export dumps the env's one database")
    return inventory, host.as_admin()


def connect(inventory: Inventory, host: Host):
    """A connection to `host` as `host` says (database_host gives the admin user), falling back to its
    bootstrap user on a server whose admin user does not exist yet, as every backup task always has."""
    return connect_to_host(inventory, host, admin=False, bootstrap_fallback=True)

