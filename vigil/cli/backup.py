"""backup: the app database's backups and WAL, in the pgBackRest repository on the env's backup host.

Create, list, verify (the restore drill), restore to any second, branch a second, prune, pull a set
off the backup host; export a portable dump and decrypt it.
"""

from __future__ import annotations

import dataclasses
import getpass
import re
import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.table import Table

from vigil.backup import importing, pitr
from vigil.backup import restore as restoring
from vigil.backup.access import LABEL, BackupError, connect, database_host
from vigil.backup.branch import drop_branch, make_branch
from vigil.backup.dump_file import check_dump
from vigil.backup.export import export_database
from vigil.backup.offsite import check_label, pull_set
from vigil.backup.repository import (
    STANZA_NO_BACKUP,
    STANZA_OK,
    check_backup_type,
    create_backup,
    expire,
    read_contents,
    require_repository,
    run_drill,
    utc,
)
from vigil.backup.source import read_ca
from vigil.backup.transfer import copy_to_host, describe, pulled_dir
from vigil.backup.transfer import decrypt as decrypt_backup
from vigil.cli.common import HOST_FLAGS_HELP, exits_cleanly
from vigil.core.audit_log import audit_locally
from vigil.core.errors import ConfigError, ExitCode
from vigil.core.inventory import load_inventory
from vigil.core.output import Reporter
from vigil.core.roles import load_role
from vigil.vault.keys import load_identities, load_recipients
from vigil.vault.paths import SecretsPaths

ENV_HELP = {"env": HOST_FLAGS_HELP["env"], "json": HOST_FLAGS_HELP["json"]}


def _audit(task_name: str, env: str, host: str, result: str, **details) -> None:
    audit_locally(task_name, env, [host], result, **details)


def _print(data, json: bool, line: str) -> None:
    if json:
        Reporter().document(data)
    else:
        Reporter().line(line)


def _size(size) -> str:
    size = int(size or 0)
    return f"{size / 1048576:.1f} MiB" if size >= 1048576 else f"{size / 1024:.0f} KiB"


@task(help={**ENV_HELP, "label": "A word for why (default: manual), kept as the backup's vigil-label (backup.list).",
            "type": "full, diff (changes since the last full) or incr (since the last backup; the default, "
                    "and a full when there is none yet)."})
@exits_cleanly
def create(c, env="sandbox", label="manual", type="incr", json=False):  # noqa: A002 (the flag is --type)
    """Back the database up now, into the backup host's pgBackRest repository.

    Example: invoke backup.create --env=production --label=before-import --type=full
    """
    if not LABEL.fullmatch(label):
        raise ConfigError(f"--label: {label!r} is not a label (letters, digits, '.', '_', '-'; at most 40)")
    check_backup_type(type)
    inventory = load_inventory(env)
    repository = require_repository(inventory, "backup.create")
    with connect(inventory, repository.host) as transport:
        made = create_backup(transport, repository, type, label)
    _audit("backup.create", env, repository.host.name, "ok", backup=made.label)
    _print(dataclasses.asdict(made), json,
           f"{repository.host.name}: {made.label} ({made.type}) of {_size(made.size)}, "
           f"{_size(made.stored)} stored, in {made.stopped - made.started:.0f}s")


@task(name="list", help=ENV_HELP)
@exits_cleanly
def list_(c, env="sandbox", json=False):
    """List the backups in the repository (when, type, size, label, last restore drill) and the window a
    restore can reach: "restore to any second from T1 to T2".

    Example: invoke backup.list --env=production
    """
    inventory = load_inventory(env)
    _list_repository(inventory, require_repository(inventory, "backup.list"), json)


def _list_repository(inventory, repository, json: bool) -> None:
    env = inventory.env
    with connect(inventory, repository.host) as transport:
        contents = read_contents(transport, repository)
    window = contents.window
    if json:
        Reporter().document({"host": repository.host.name, "stanza": repository.stanza, "status": contents.status,
                             "message": contents.message, "backups": [dataclasses.asdict(b) for b in contents.backups],
                             "window": {"from": utc(window[0]), "to": utc(window[1])} if window else None})
        return
    table = Table(title=f"backups of {env} in the repository on {repository.host.name}")
    for column in ("backup", "type", "finished", "took", "database", "stored", "label", "drill"):
        table.add_column(column)
    for backup in contents.backups:
        table.add_row(backup.label, backup.type, utc(backup.stopped), f"{backup.stopped - backup.started:.0f}s",
                      _size(backup.size), _size(backup.stored), str(backup.annotation.get("vigil-label", "")),
                      _drill_cell(backup), style="red" if backup.page_errors or backup.drill == "failed" else "")
    reporter = Reporter()
    reporter.table(table)
    if window:
        reporter.line(f"restore to any second from {utc(window[0])} to {utc(window[1])}")
    else:
        reporter.line("no backup yet: nothing to restore to (invoke backup.create --type=full)")
    if contents.status not in (STANZA_OK, STANZA_NO_BACKUP):
        reporter.marked(f"[red]the repository says: {contents.message} (code {contents.status})[/]")


def _timeline(timeline) -> int | None:
    """--timeline as a number, or None when not given; anything else is refused naming the flag."""
    if timeline is not None and not re.fullmatch(r"[1-9][0-9]{0,8}", str(timeline)):
        raise ConfigError(f"--timeline: {timeline!r} is not a timeline number (1, 2...)")
    return int(timeline) if timeline is not None else None


def _drill_cell(backup) -> str:
    """A backup's last restore drill as backup.list shows it: "ok at ..., restored in 2.1s", "failed at ..."."""
    if backup.drill is None:
        return ""
    at = str(backup.annotation.get("vigil-drill-at", "")).replace("T", " ").rstrip("Z")
    rto = backup.annotation.get("vigil-drill-rto")
    return f"{backup.drill} {at}" + (f", restored in {rto}s" if backup.drill == "ok" and rto else "")


@task(help={**ENV_HELP, "id": "`latest`: the drill restores the newest backup (a word kept for what may come: a "
                                 "backup's label)."})
@exits_cleanly
def verify(c, id, env="sandbox", json=False):
    """The restore drill: on the backup host, the newest backup plus WAL restored into a scratch cluster,
    replayed to a marker made on the live database just before, `pgbackrest verify`, every table's rows
    compared with the live ones at the marker, its RTO recorded on the backup set; weekly by timer too.
    A failure marks the backup (restore then refuses it without --force) and exits non-zero.

    Example: invoke backup.verify latest --env=production
    """
    inventory = load_inventory(env)
    _drill(env, inventory, require_repository(inventory, "backup.verify"), id, json)


def _drill(env: str, inventory, repository, id: str, json: bool) -> None:
    if id != "latest":
        raise ConfigError(f"ID: {id!r}: the drill restores the newest backup; give `latest`")
    with connect(inventory, repository.host) as transport:
        result = run_drill(transport, repository)
    where = repository.host.name
    _audit("backup.verify", env, where, "ok" if result["ok"] else "failed", backup=result.get("backup", ""))
    if json:
        Reporter().document(result)
    elif result["ok"]:
        Reporter().line(f"{where}: {result['backup']} restored to {result['restore_point']} in "
                        f"{result['rto_seconds']}s (RTO), verified, {result['rows']} rows in {result['tables']} "
                        f"tables as on the live database (its writes paused {result['writes_paused_ms']} ms)")
    if not result["ok"]:
        raise BackupError(f"{where}: the restore drill of {result.get('backup') or 'the newest backup'} failed: "
                          f"{result.get('error', 'no reason given')}")


@task(help={**ENV_HELP, "dry_run": "Say what would be deleted, delete nothing."})
@exits_cleanly
def prune(c, env="sandbox", dry_run=False, json=False):
    """pgBackRest's expire: delete the backups (and their WAL) older than the window it must keep, the last
    pgbackrest_window_days days restorable; never what the window promises.

    Example: invoke backup.prune --env=production --dry-run
    """
    inventory = load_inventory(env)
    repository = require_repository(inventory, "backup.prune")
    with connect(inventory, repository.host) as transport:
        result = expire(transport, repository, dry_run)
    if not dry_run:
        _audit("backup.prune", env, repository.host.name, "ok", deleted=result["deleted"])
    deleted = result["deleted"]
    _print(result, json, f"{repository.host.name}: {'would delete' if dry_run else 'deleted'} {len(deleted)}"
                         f"{': ' + ', '.join(deleted) if deleted else ''}; kept {len(result['kept'])}")


@task(help={**ENV_HELP, "target": "What to restore to: `latest` (the newest archived second), a time inside "
                              "backup.list's window (2026-12-03T14:15:00Z; without an offset, UTC), a backup's label "
                              "(its end) or a restore point (a deploy's, a safety point).",
            "yes": "Do not ask for confirmation.",
            "force": "Restore even from a backup that failed its restore drill (backup.list).",
            "timeline": "With a time: follow this PostgreSQL timeline (the latest by default); a restore's safety "
                        "point names its own, to go back to it after that restore."})
@exits_cleanly
def restore(c, target, env="sandbox", yes=False, force=False, json=False, timeline=None):
    """Replace the database: maintenance on, a safety point, the restore, checks, maintenance off.

    To any second of the repository's window, to a backup's end, to a restore point or to the latest
    archived second. The steps are docs/runbooks/restore.md's.
    Examples: invoke backup.restore 2026-12-03T14:15:00Z --env=production --yes
              invoke backup.restore latest --env=production --yes
              invoke backup.restore 20261203-031500F --env=staging --yes
    """
    inventory = load_inventory(env)
    repository = require_repository(inventory, "backup.restore")
    point = pitr.parse_target(target, timeline=_timeline(timeline))
    restoring.confirm(env, yes)
    reporter = Reporter()
    report = pitr.restore_to(env, inventory, repository, point, (lambda line: None) if json else reporter.line, force)
    if json:
        reporter.document(report)
    if not all(report["health"].values()):
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={**ENV_HELP, "name": "The new database's name (lower-case letters, digits and _).",
            "at": "The moment to branch: latest, a time inside backup.list's window (2026-12-03T14:15:00Z; UTC "
                  "unless it has an offset), a backup's label or a restore point.",
            "timeline": "With a time: follow this PostgreSQL timeline (the latest by default).",
            "force": "Branch even from a backup that failed its restore drill.",
            "drop": "Drop the branch NAME instead (only a database made by backup.branch)."})
@exits_cleanly
def branch(c, name, at="latest", env="sandbox", timeline=None, force=False, drop=False, json=False):
    """Branch a point in time: the database as it was then, as a new database beside the live one.

    Restored on the backup host from its pgBackRest repository and copied into database NAME on the
    database host, owned by the app's role, its rows counted on both sides; the live database is not
    touched.
    Examples: invoke backup.branch --name=yesterday --at=2026-12-02T09:00:00Z --env=production
              invoke backup.branch --name=yesterday --drop --env=production
    """
    inventory = load_inventory(env)
    repository = require_repository(inventory, "backup.branch")
    where = repository.database.name
    if drop:
        drop_branch(inventory, repository, name)
        _audit("backup.branch", env, where, "ok", dropped=name)
        _print({"dropped": name, "host": where}, json, f"{where}: branch {name} dropped")
        return
    point = pitr.parse_target(at, timeline=_timeline(timeline), flag="--at")
    report = make_branch(inventory, repository, point, name, force)
    _audit("backup.branch", env, where, "ok", branch=name, target=report["target"], backup=report["backup"])
    last = report.get("last_transaction") or "none replayed"
    _print(report, json, f"{where}: database {name} is {env}'s as of {report['target']} (last transaction "
                         f"{last}; from backup {report['backup']}), {report['rows']} rows in {report['tables']} "
                         f"tables, in {report['seconds']}s")


@task(help={**ENV_HELP, "id": "The backup to copy (its label in `backup.list`), or `latest` for the newest whose "
                             "restore drill did not fail.",
            "to_dir": "Where to put it on this machine (default: .vigil/backups/<env>/).",
            "to_host": "Also put it on this inventory host (under --host-dir).",
            "host_dir": "The directory on --to-host (default: /var/backups/vigil-offsite)."})
@exits_cleanly
def pull(c, id, env="sandbox", to_dir=None, to_host=None, host_dir="/var/backups/vigil-offsite", json=False):
    """Copy a backup set off the backup host, checked by sha256 on arrival: the set, the sets it builds on
    and its WAL, as a repository of their own, still encrypted with the repository's cipher.

    Example: invoke backup.pull latest --env=production --to-host=vps2
    """
    if not re.fullmatch(r"/[A-Za-z0-9._/-]+", host_dir) or ".." in host_dir.split("/"):
        raise ConfigError(f"--host-dir: {host_dir!r} is not an absolute path")
    inventory = load_inventory(env)
    repository = require_repository(inventory, "backup.pull")
    other = None
    if to_host:
        other = next((h for h in inventory.select(to_host)), None)
        if other is None or other.name != to_host:
            raise ConfigError(f"--to-host: {to_host!r} is not a host of inventory/{env}.yml")
    label = id if id == "latest" else check_label(id)
    with connect(inventory, repository.host) as transport:
        contents = read_contents(transport, repository)
        if not contents.backups:
            raise BackupError(f"{repository.host.name}: there is no backup yet (`invoke backup.create --env={env}`)")
        if label != "latest" and label not in {backup.label for backup in contents.backups}:
            raise ConfigError(f"ID: {label} is not in {repository.host.name}'s repository (invoke backup.list)")
        chosen = pitr.choose_backup(pitr.Target(backup=None if label == "latest" else label), contents.backups,
                                    force=label != "latest", flag="ID")
        path = pull_set(transport, repository, chosen, env, pulled_dir(env, to_dir))
    source, backup_id = repository.host.name, chosen.label
    result = {"id": backup_id, "path": str(path), "from": source}
    if other is not None:
        other = other.as_admin()
        with connect(inventory, other) as transport:
            result["copied_to"] = f"{other.name}:{copy_to_host(transport, other, path, host_dir)}"
    _audit("backup.pull", env, source, "ok", backup=backup_id, copied_to=result.get("copied_to", ""))
    _print(result, json, f"{backup_id}: {describe(path)} (encrypted with the repository's cipher, sha256 checked)"
                         + (f"; copied to {result['copied_to']}" if other is not None else ""))


@task(help={**ENV_HELP, "to_dir": "Where to put it on this machine (default: .vigil/backups/<env>/)."})
@exits_cleanly
def export(c, env="sandbox", to_dir=None, json=False):
    """Dump the app's database now as a portable `pg_dump -Fc`, age-encrypted on its host to the env's
    recipients, for moving the data elsewhere (`backup.decrypt` opens it; pg_restore loads it).

    Example: invoke backup.export --env=production
    """
    recipients = [key for key, _ in load_recipients(env, SecretsPaths.default())]
    inventory, host = database_host(env)
    database = inventory.vars_for(host, [load_role("postgresql")]).string("postgresql_database",
                                                                          r"[a-z_][a-z0-9_]{0,62}")
    with connect(inventory, host) as transport:
        path, record = export_database(transport, host, env, database, recipients, pulled_dir(env, to_dir))
    _audit("backup.export", env, host.name, "ok", export=record["id"])
    _print({**record, "path": str(path)}, json,
           f"{host.name}: {database} exported to {describe(path)} ({_size(record['dump_size'])} pg_dump -Fc, "
           f"age-encrypted to {len(recipients)} recipient(s), sha256 checked)")


@task(help={"file": "An export (.dump.age, from backup.export).",
            "env": "Whose age identity decrypts it (default: sandbox).",
            "out": "Where to write the dump (default: beside it, without .age)."})
@exits_cleanly
def decrypt(c, file, env="sandbox", out=None):
    """Decrypt an export with the env's age identity; checked against the dump's recorded checksum.

    Example: invoke backup.decrypt .vigil/backups/production/production-20261126T031500Z-export.dump.age --env=production
    """  # noqa: E501 (an example command is one line, to copy whole)
    path = Path(file)
    target = Path(out) if out else path.with_name(path.name.removesuffix(".age"))
    identities = load_identities(env, SecretsPaths.default())
    written = decrypt_backup(path, identities, target)
    Reporter().line(f"{written}: decrypted, sha256 as recorded; restore it with pg_restore")


@task(name="import", help={
    **ENV_HELP,
    "from_url": "The PaaS's database: postgresql://USER@HOST:PORT/DATABASE, without its password (typed at the "
                "prompt, or on stdin): a command line is seen by ps and kept in shell history.",
    "from_env_file": "Or an export of the PaaS's variables (secrets.import's --file): its database URL, the "
                     "direct one preferred (DATABASE_URL_UNPOOLED, DATABASE_PUBLIC_URL, DATABASE_URL).",
    "from_dump": "Or a pg_dump archive of it (pg_dump --format=custom or tar; a PaaS's backup download): put on "
                 "the database host, restored, and its every table's rows and checksum compared with the copy's.",
    "ca": "The PaaS's CA certificate (PEM file) or `system` (a public CA, as Neon's): TLS with sslmode=verify-full. "
          "Without it sslmode=require (encrypted, not verified).",
    "replace": "Replace a database that already holds rows (after a verified backup of it; kept renamed).",
    "final": "The cut-over: maintenance mode on and the source read-only first; the write downtime is reported.",
})
@exits_cleanly
def import_(c, env="sandbox", from_url=None, from_env_file=None, from_dump=None, ca=None, replace=False, final=False,
            json=False):
    """Copy the PaaS's database into the env's: TLS, streamed, every table's rows and checksum compared, then
    swapped in and backed up (verified). Nothing of the app's database changes unless all of that held.

    Example: invoke backup.import --env=staging --from-env-file=railway.env --ca=railway-ca.pem
    """
    reporter = Reporter(json_output=json)
    if from_dump:
        if from_url or from_env_file or ca:
            raise ConfigError("backup.import: --from-dump takes no --from-url, --from-env-file or --ca")
        source = check_dump(Path(from_dump))
    else:
        source = importing.source_from_flags(from_url, from_env_file, read_ca(ca), _read_password)
    report = importing.import_database(env, source, replace=replace, final=final, reporter=reporter)
    _audit("backup.import", env, report.host, "ok", source=report.source, final=str(final))
    if json:
        reporter.document(dataclasses.asdict(report))
        return
    table = Table(title=f"{report.source} -> {report.host}:{report.database}")
    for column in ("table", "rows", "checksum"):
        table.add_column(column)
    for name, figures in sorted(report.tables.items()):
        table.add_row(name, str(figures["rows"]), f"{str(figures['checksum'])[:16]} (equal)")
    reporter.table(table)
    for note in report.notes:
        reporter.line(f"note: {note}")
    rows = sum(figures["rows"] for figures in report.tables.values())
    said = [f"{report.database}: {len(report.tables)} tables, {rows} rows equal to the source's",
            f"{_size(report.bytes)} copied in {report.copy_seconds:.1f}s",
            f"the checks added {report.check_seconds:.1f}s, {report.seconds:.0f}s in all"]
    if report.replaced:
        said.append(f"the database it replaced is kept as {report.replaced}")
    if report.backups:
        said.append(f"backups {', '.join(report.backups)}")
    reporter.line("; ".join(said))
    if report.write_downtime_seconds is not None:
        reporter.line(f"write downtime: {report.write_downtime_seconds:.1f}s (source read-only until the env served "
                      "again); the source stays read-only: the PaaS must take no more writes")


def _read_password() -> str:
    """The source's password from a hidden prompt on a terminal, else from stdin's first line."""
    if sys.stdin.isatty():
        return getpass.getpass("the source database's password: ")
    return sys.stdin.readline().rstrip("\n")


ns = Collection("backup")
for command in (create, list_, verify, restore, branch, prune, pull, export, decrypt):
    ns.add_task(command)
ns.add_task(import_, name="import")
