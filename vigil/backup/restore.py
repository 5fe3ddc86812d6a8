"""Restoring a backup over the env's database, step by step (docs/runbooks/restore.md): maintenance on,
a safety backup and the restore (by the host's vigil-backup), the serving release's migrations compared,
maintenance off, the backend's health checked on every web host."""

from __future__ import annotations

import sys
from typing import Callable

from vigil.backup.helper import BackupError, ask, connect
from vigil.core.audit_log import audit_locally
from vigil.core.commands import Command, script
from vigil.core.errors import ConfigError, UnreachableError, VigilError
from vigil.core.inventory import Host, Inventory
from vigil.core.roles import load_role
from vigil.deploy.maintenance import set_maintenance
from vigil.deploy.settings import host_settings
from vigil.vault.schema import load_schema

Say = Callable[[str], None]


def migration_drift(restored: list[str], release_files: list[str]) -> list[str]:
    """Warnings when the restored database's applied migrations (timestamps) differ from the release's files."""
    shipped = {
        name.split("-", 1)[0] for name in release_files if name.endswith(".js") and name.split("-", 1)[0].isdigit()
    }
    applied = set(restored)
    warnings = []
    if shipped - applied:
        warnings.append(
            f"the serving release has migrations the restored database lacks ({', '.join(sorted(shipped - applied))}): "
            "run the backend's migrate task (deploy.backend) or roll back to a release that matches"
        )
    if applied - shipped:
        warnings.append(
            "the restored database has migrations the serving release does not know "
            f"({', '.join(sorted(applied - shipped))})"
        )
    return warnings


HEALTH = r"""
port=$1; current=$2
# A host with no backend release (a database host rebuilt after a loss, not deployed to yet) has nothing to wait for.
# (Asked as root: the releases are the deploy user's and the app's, not the admin's to read.)
sudo -n test -e "$current" || { echo "no backend release is deployed here" >&2; exit 1; }
end=$(( $(date +%s) + 60 ))
while [ "$(date +%s)" -lt "$end" ]; do
    if body=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/api/health" 2>&1) \
        && printf '%s' "$body" | grep -q '"database":"up"'; then
        echo "$body"; exit 0
    fi
    sleep 1
done
echo "not healthy within 60s: $body" >&2; exit 1
"""


def health(inventory: Inventory, host: Host, port: int) -> tuple[bool, str]:
    """The backend's /health through nginx's loopback listener on `host` (its pool reconnects after a restore)."""
    current = host_settings(inventory, host, ["backend"])[0].layout.current
    with connect(inventory, host) as transport:
        result = transport.run(script(HEALTH, str(port), current, sudo=False), timeout=120)
    return result.ok, (result.stdout or result.stderr).strip()[-300:]


def release_migrations(inventory: Inventory, host: Host) -> list[str]:
    """The migration files of the backend release `host` serves (its app_migrations directory)."""
    settings = host_settings(inventory, host, ["backend"])[0]
    if not settings.migrations_dir:
        raise BackupError(f"{host.name}: the backend has no app_migrations directory to compare with")
    with connect(inventory, host) as transport:
        result = transport.run(
            Command(("ls", "-1", "--", f"{settings.layout.current}/{settings.migrations_dir}"), sudo=True)
        )
    if not result.ok:
        raise BackupError(f"{host.name}: {result.stderr.strip()[-200:] or 'no release is deployed'}")
    return result.stdout.split()


def confirm(env: str, yes: bool, prompt: Callable[[str], str] = input) -> None:
    """A restore replaces the env's database: --yes, or the env's name typed at a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"restoring replaces the {env} database: pass --yes to confirm (no terminal to ask on)")
    if (
        prompt(
            f"Restoring replaces the {env} database (a safety backup is taken first). Type {env!r} to go on: "
        ).strip()
        != env
    ):
        raise ConfigError("not confirmed; nothing was changed")


def restore(env: str, inventory: Inventory, host: Host, backup_id: str, force: bool, say: Say) -> dict:
    """Replace the env's database on `host` (its database host, as `database_host` gives it) with backup
    `backup_id`; returns the report (the host's answer, the warnings, each web host's health). `say` gets
    a line per step. A failure before the restore turns maintenance off again; a connection lost during
    it leaves maintenance on (the restore may still be running).
    """
    report: dict = {"backup": backup_id, "env": env, "warnings": []}
    web = maintenance_on(env, inventory, say)
    try:
        with connect(inventory, host) as transport:
            result = ask(transport, host, "restore", backup_id, *(["--force"] if force else []), timeout=7200)
    except UnreachableError:
        # The restore may still be running on the host: the site stays in maintenance until someone looks.
        audit_locally("backup.restore", env, [host.name], "unknown", backup=backup_id)
        raise BackupError(f"{host.name}: the connection was lost during the restore; maintenance mode stays on. "
                          f"See `sudo vigil-backup status` on {host.name}, then "
                          f"`invoke incident.maintenance off --env={env}`") from None
    except Exception:
        maintenance_off(env, web, say)
        audit_locally("backup.restore", env, [host.name], "failed", backup=backup_id)
        raise
    report.update(result)
    say(f"{host.name}: restored {backup_id} in {result['seconds']}s; safety backup {result['safety_backup']} kept")
    if web:
        try:
            report["warnings"] = migration_drift(result.get("migrations", []), release_migrations(inventory, web[0]))
        except VigilError as problem:
            report["warnings"] = [
                f"the serving release's migrations could not be read ({problem.message}); compare by hand"
            ]
        for warning in report["warnings"]:
            say(f"warning: {warning}")
    report["health"] = healthy = back_in_service(env, inventory, web, say)
    audit_locally("backup.restore", env, [host.name], "ok" if all(healthy.values()) else "unhealthy", backup=backup_id,
                  safety_backup=report.get("safety_backup"))
    return report


def maintenance_on(env: str, inventory: Inventory, say: Say) -> list[Host]:
    """Maintenance mode on every web host before a restore; the web hosts. Where it cannot be turned on
    everywhere, it is turned off again and nothing is restored."""
    web = [web_host.as_admin() for web_host in load_schema().topology(inventory).app_hosts()]
    failed_on = maintenance(env, web, on=True)
    if failed_on:
        maintenance(env, [h for h in web if h.name not in failed_on], on=False)
        raise BackupError(f"maintenance mode could not be turned on on {', '.join(failed_on)}; nothing was restored")
    say(f"maintenance on: {', '.join(h.name for h in web)}")
    return web


def back_in_service(env: str, inventory: Inventory, web: list[Host], say: Say) -> dict[str, bool]:
    """After a restore: maintenance off, then the backend's health on every web host; {host: healthy}."""
    port = int(inventory.vars_for(web[0], [load_role("nginx")])["nginx_internal_api_port"]) if web else 0
    failed_off = maintenance_off(env, web, say)
    healthy = {}
    for web_host in web:
        ok, answer = health(inventory, web_host, port)
        healthy[web_host.name] = ok and web_host.name not in failed_off
        say(f"{web_host.name}: health {'ok' if ok else 'FAILED'}: {answer}")
    return healthy


def maintenance_off(env: str, hosts: list[Host], say: Say) -> list[str]:
    """Maintenance mode off on `hosts`, saying so (or where it is still on); the hosts where it failed."""
    failed = maintenance(env, hosts, on=False)
    if failed:
        say(f"maintenance mode is still on on {', '.join(failed)}: `invoke incident.maintenance off --env={env}`")
    elif hosts:
        say(f"maintenance off: {', '.join(host.name for host in hosts)}")
    return failed


def maintenance(env: str, hosts: list[Host], on: bool) -> list[str]:
    """Maintenance mode on or off on `hosts`, as incident.maintenance does it (planned, applied, audited);
    returns the hosts where it failed."""
    if not hosts:
        return []
    try:
        _, failed = set_maintenance(env, on, ",".join(host.name for host in hosts))
    except VigilError:
        return [host.name for host in hosts]
    return failed
