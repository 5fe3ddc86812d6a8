"""Asking the database host's vigil-backup: its one-line errors, its JSON answers."""

from __future__ import annotations

import json
import re

from vigil.core.commands import Command
from vigil.core.connectors import Transport
from vigil.core.errors import ConfigError, ExitCode, VigilError
from vigil.core.fanout import connect as connect_to_host
from vigil.core.inventory import Host, Inventory, load_inventory
from vigil.core.redaction import REDACTOR
from vigil.vault.schema import load_schema

HELPER = "/usr/local/sbin/vigil-backup"
BACKUP_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9._-]{1,120}$")
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


class BackupError(VigilError):
    exit_code = ExitCode.HOST_FAILED


def check_id(backup_id: str, flag: str = "ID") -> str:
    if not BACKUP_ID.match(backup_id or ""):
        raise ConfigError(f"{flag}: {backup_id!r} is not a backup id (`invoke backup.list` shows them)")
    return backup_id


def database_host(env: str) -> tuple[Inventory, Host]:
    """The env's database host, logged in to as the admin user (the backup program runs as root)."""
    inventory = load_inventory(env)
    host = load_schema().topology(inventory).database("the backup tasks act on the env's one database host")
    return inventory, host.as_admin()


def connect(inventory: Inventory, host: Host):
    """A connection to `host` as `host` says (database_host gives the admin user), falling back to its
    bootstrap user on a server whose admin user does not exist yet, as every backup task always has."""
    return connect_to_host(inventory, host, admin=False, bootstrap_fallback=True)


def ask(transport: Transport, host: Host, *args: str, timeout: float = 3600):
    """vigil-backup ARGS on the host; its JSON answer, or BackupError with its one-line reason."""
    result = transport.run(Command((HELPER, *args), sudo=True), timeout=timeout)
    if not result.ok:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exited {result.status}"
        if result.status == 127 or "command not found" in result.stderr:
            reason = f"{HELPER} is not installed: run `invoke provision.server --limit={host.name}`"
        raise BackupError(f"{host.name}: {REDACTOR.redact(reason)}")
    return json.loads(result.stdout)


# --- pull and decrypt --------------------------------------------------------------------------
