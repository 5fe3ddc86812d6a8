"""backup: the app database's backups on its host: create, list, verify, restore, prune, and copies off it (pull, decrypt)."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.markup import escape
from rich.table import Table

from vigil import backup as B
from vigil.commands import REDACTOR
from vigil.config import load_role
from vigil.errors import ConfigError, ExitCode, UnreachableError, VigilError
from vigil.report import Environment, append_local_audit, audit_record, table_console
from vigil.tasks.common import HOST_FLAGS_HELP, exits_cleanly

ENV_HELP = {"env": HOST_FLAGS_HELP["env"], "json": HOST_FLAGS_HELP["json"]}


def _audit(task_name: str, env: str, host: str, result: str, **details) -> None:
    environment = Environment()
    record = audit_record(task_name, env, [host], result, environment.clock())
    append_local_audit({**record, **details}, environment)


def _print(data, json: bool, line: str) -> None:
    print(jsonlib.dumps(REDACTOR.redact_data(data), indent=2) if json else REDACTOR.redact(line))


def _size(size) -> str:
    size = int(size or 0)
    return f"{size / 1048576:.1f} MiB" if size >= 1048576 else f"{size / 1024:.0f} KiB"


@task(help={**ENV_HELP, "label": "A word for why (default: manual); the id is <UTC time>-<label>."})
@exits_cleanly
def create(c, env="sandbox", label="manual", json=False):
    """Back the database up now: pg_dump -Fc on its host, synced, checksummed, each table's rows counted.

    Example: invoke backup.create --env=production --label=before-import
    """
    if not B.LABEL.match(label):
        raise ConfigError(f"--label: {label!r} is not a label (letters, digits, '.', '_', '-'; at most 40)")
    inventory, host = B.database_host(env)
    with B.connect(inventory, host) as transport:
        made = B.ask(transport, host, "create", label)
    _audit("backup.create", env, host.name, "ok", backup=made["id"])
    _print(made, json, f"{host.name}: {made['id']} {_size(made['size'])} in {made['seconds']}s, "
                       f"{len(made['tables'])} tables, {sum(made['tables'].values())} rows, sha256 {made['sha256'][:16]}")


@task(name="list", help=ENV_HELP)
@exits_cleanly
def list_(c, env="sandbox", json=False):
    """List the backups on the database host: when, size, verified when and how, which retention rule keeps it.

    Example: invoke backup.list --env=production
    """
    inventory, host = B.database_host(env)
    with B.connect(inventory, host) as transport:
        backups = B.ask(transport, host, "list")
    if json:
        _print(backups, True, "")
        return
    table = Table(title=f"backups of {env} on {host.name}")
    for column in ("id", "release", "size", "rows", "status", "verified", "restore", "kept by"):
        table.add_column(column)
    for meta in backups:
        verified = meta.get("verified") or {}
        table.add_row(meta["id"], meta.get("release", ""), _size(meta.get("size")), str(sum((meta.get("tables") or {}).values())),
                      meta.get("status", ""), (verified.get("at", "") + ("" if verified.get("ok", True) else " failed")),
                      f"{verified['restore_seconds']}s" if "restore_seconds" in verified else "",
                      meta.get("kept_by") or "next prune", style="red" if meta.get("status") == "bad" else "")
    table_console().print(table)


@task(help={**ENV_HELP, "id": "The backup to verify (`backup.list`), or `latest` for the newest."})
@exits_cleanly
def verify(c, id, env="sandbox", json=False):
    """Restore a backup into a scratch database and compare every table's rows with its record (then drop it).

    A failure marks the backup bad (restore refuses it) and exits non-zero.
    Example: invoke backup.verify latest --env=production
    """
    target = "--latest" if id == "latest" else B.check_id(id)
    inventory, host = B.database_host(env)
    with B.connect(inventory, host) as transport:
        try:
            meta = B.ask(transport, host, "verify", target)
        except B.BackupError:
            _audit("backup.verify", env, host.name, "failed", backup=target)
            raise
    _audit("backup.verify", env, host.name, "ok", backup=meta["id"])
    verified = meta["verified"]
    _print(meta, json, f"{host.name}: {meta['id']} verified: restored in {verified['restore_seconds']}s, "
                       f"{verified['rows']} rows in {len(meta['tables'])} tables as recorded")


@task(help={**ENV_HELP, "dry_run": "Say what would be deleted, delete nothing."})
@exits_cleanly
def prune(c, env="sandbox", dry_run=False, json=False):
    """Delete the backups no retention rule keeps (grandfather-father-son; never the newest verified one).

    Example: invoke backup.prune --env=production --dry-run
    """
    inventory, host = B.database_host(env)
    with B.connect(inventory, host) as transport:
        result = B.ask(transport, host, "prune", *(["--dry-run"] if dry_run else []))
    if not dry_run:
        _audit("backup.prune", env, host.name, "ok", deleted=result["deleted"])
    _print(result, json, f"{host.name}: {'would delete' if dry_run else 'deleted'} {len(result['deleted'])}"
                         f"{': ' + ', '.join(result['deleted']) if result['deleted'] else ''}; kept {len(result['kept'])}")


@task(help={**ENV_HELP, "id": "The backup to restore (`backup.list`).", "yes": "Do not ask for confirmation.",
            "force": "Restore even a backup that is unverified or failed verification."})
@exits_cleanly
def restore(c, id, env="sandbox", yes=False, force=False, json=False):
    """Replace the database with a backup: maintenance on, a safety backup, restore and swap, checks, maintenance off.

    The steps are docs/runbooks/restore.md's. Refuses an unverified or bad backup unless --force.
    Example: invoke backup.restore 20261126T031500Z-scheduled --env=production --yes
    """
    backup_id = B.check_id(id)
    inventory, host = B.database_host(env)
    B.confirm(env, yes)
    web = B.web_hosts(inventory)
    port = int(inventory.vars_for(web[0], [load_role("nginx")])["nginx_internal_api_port"]) if web else 0
    say = (lambda line: None) if json else (lambda line: print(REDACTOR.redact(line)))
    report: dict = {"backup": backup_id, "env": env, "warnings": []}
    failed_on = B.maintenance(env, web, on=True)
    if failed_on:
        B.maintenance(env, [h for h in web if h.name not in failed_on], on=False)
        raise B.BackupError(f"maintenance mode could not be turned on on {', '.join(failed_on)}; nothing was restored")
    say(f"maintenance on: {', '.join(h.name for h in web)}")
    try:
        with B.connect(inventory, host) as transport:
            result = B.ask(transport, host, "restore", backup_id, *(["--force"] if force else []), timeout=7200)
    except UnreachableError:
        # The restore may still be running on the host: the site stays in maintenance until someone looks.
        _audit("backup.restore", env, host.name, "unknown", backup=backup_id)
        raise B.BackupError(f"{host.name}: the connection was lost during the restore; maintenance mode stays on. "
                            f"See `sudo vigil-backup status` on {host.name}, then `invoke incident.maintenance off --env={env}`") from None
    except Exception:
        B.maintenance(env, web, on=False)
        _audit("backup.restore", env, host.name, "failed", backup=backup_id)
        raise
    report.update(result)
    say(f"{host.name}: restored {backup_id} in {result['seconds']}s; safety backup {result['safety_backup']} kept")
    if web:
        try:
            report["warnings"] = B.migration_drift(result.get("migrations", []), B.release_migrations(inventory, web[0]))
        except VigilError as problem:
            report["warnings"] = [f"the serving release's migrations could not be read ({problem.message}); compare by hand"]
        for warning in report["warnings"]:
            say(f"warning: {warning}")
    failed_off = B.maintenance(env, web, on=False)
    if failed_off:
        say(f"maintenance mode is still on on {', '.join(failed_off)}: `invoke incident.maintenance off --env={env}`")
    else:
        say(f"maintenance off: {', '.join(h.name for h in web)}")
    healthy = {}
    for web_host in web:
        ok, answer = B.health(inventory, web_host, port)
        healthy[web_host.name] = ok and web_host.name not in failed_off
        say(f"{web_host.name}: health {'ok' if ok else 'FAILED'}: {answer}")
    report["health"] = healthy
    _audit("backup.restore", env, host.name, "ok" if all(healthy.values()) else "unhealthy", backup=backup_id,
           safety_backup=report.get("safety_backup"))
    if json:
        _print(report, True, "")
    if not all(healthy.values()):
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={**ENV_HELP, "id": "The backup to copy (`backup.list`), or `latest` for the newest.",
            "to_dir": "Where to put it on this machine (default: .vigil/backups/<env>/).",
            "to_host": "Also put it on this inventory host (under --host-dir).",
            "host_dir": "The directory on --to-host (default: /var/backups/vigil-offsite)."})
@exits_cleanly
def pull(c, id, env="sandbox", to_dir=None, to_host=None, host_dir="/var/backups/vigil-offsite", json=False):
    """Copy a backup off its host, encrypted on the host to the env's age recipients, checksum checked on arrival.

    Example: invoke backup.pull latest --env=production --to-host=vps2
    """
    from vigil import secrets

    if id != "latest":
        B.check_id(id)
    if not B.re.fullmatch(r"/[A-Za-z0-9._/-]+", host_dir) or ".." in host_dir.split("/"):
        raise ConfigError(f"--host-dir: {host_dir!r} is not an absolute path")
    recipients = [key for key, _ in secrets.load_recipients(env, secrets.SecretsPaths.default())]
    inventory, host = B.database_host(env)
    with B.connect(inventory, host) as transport:
        listed = [meta for meta in B.ask(transport, host, "list") if meta.get("status") != "bad"] if id == "latest" else []
        if id == "latest" and not listed:
            raise B.BackupError(f"{host.name}: there is no backup yet (`invoke backup.create --env={env}`)")
        backup_id = listed[-1]["id"] if listed else id
        path = B.pull(transport, host, env, backup_id, recipients, B.pulled_dir(env, to_dir),
                      record=listed[-1] if listed else None)
    result = {"id": backup_id, "path": str(path), "recipients": len(recipients)}
    if to_host:
        other = next((h for h in inventory.select(to_host)), None)
        if other is None or other.name != to_host:
            raise ConfigError(f"--to-host: {to_host!r} is not a host of inventory/{env}.yml")
        other = other.as_admin()
        with B.connect(inventory, other) as transport:
            result["copied_to"] = f"{other.name}:{B.copy_to_host(transport, other, path, host_dir)}"
    _audit("backup.pull", env, host.name, "ok", backup=backup_id, copied_to=result.get("copied_to", ""))
    _print(result, json, f"{backup_id}: {B.describe(path)} (age-encrypted to {len(recipients)} recipient(s), sha256 checked)"
                         + (f"; copied to {result['copied_to']}" if to_host else ""))


@task(help={"file": "A pulled backup (.dump.age).", "env": "Whose age identity decrypts it (default: sandbox).",
            "out": "Where to write the dump (default: beside it, without .age)."})
@exits_cleanly
def decrypt(c, file, env="sandbox", out=None):
    """Decrypt a pulled backup with the env's age identity; checked against the dump's recorded checksum.

    Example: invoke backup.decrypt .vigil/backups/production/production-20261126T031500Z-scheduled.dump.age --env=production
    """
    from vigil import secrets

    path = Path(file)
    target = Path(out) if out else path.with_name(path.name.removesuffix(".age"))
    identities = secrets.load_identities(env, secrets.SecretsPaths.default())
    written = B.decrypt(path, identities, target)
    print(f"{escape(str(written))}: decrypted, sha256 as recorded; restore it with pg_restore")


ns = Collection("backup")
for command in (create, list_, verify, restore, prune, pull, decrypt):
    ns.add_task(command)
