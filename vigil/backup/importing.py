"""`backup.import`: a database moved in from the PaaS (its URL, or a pg_dump archive of it), checked table
by table, then backed up.

Order, each step only once the one before held: inspect both ends (nothing created; a wrong password, an
unreachable host or a certificate that does not verify ends it here), refuse a destination that holds
rows unless --replace (which takes a verified backup first), copy into the scratch database, compare
every table and sequence, swap it in, take a verified backup. When nothing stands in the way the
inspection and the copy are one visit to the host. A failure on the way drops the scratch database and
leaves the app's as it was. --final (the cut-over) first turns maintenance mode on in the env and makes
the source read-only, so no write lands on the PaaS after the copy began; a failure makes the source
writable again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vigil.backup.access import BackupError, connect, database_host
from vigil.backup.copy_in import Mismatch, Target, answer_of, compare, copy_in_command
from vigil.backup.dump_file import DumpFile, put_dump, remove_dump
from vigil.backup.repository import create_backup, find_repository, run_drill
from vigil.backup.source import Source, parse_source
from vigil.core.errors import ConfigError
from vigil.core.output import Reporter
from vigil.core.roles import load_role
from vigil.deploy.maintenance import set_maintenance
from vigil.vault.importing import read_export, source_database_url
from vigil.vault.masking import register, split_url


@dataclass
class ImportReport:
    """What an import did, for the table and --json."""

    env: str
    host: str
    source: str
    database: str
    tables: dict[str, dict] = field(default_factory=dict)  # name -> {"rows": n, "checksum": s}
    bytes: int = 0
    copy_seconds: float = 0.0
    check_seconds: float = 0.0  # what the checks added to the copy (the source's overlap it)
    seconds: float = 0.0
    replaced: str = ""  # what the replaced database is kept as
    backups: list[str] = field(default_factory=list)
    write_downtime_seconds: float | None = None
    # Seconds from the start at which each step was done, and the copy's own (copy, check_source, check_copy).
    phases: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def major_of(version: str) -> int:
    """17 of "17.6" or "17.6 (Debian 17.6-1)"; 9 of "9.6.24"."""
    return int(version.split(".")[0])


def check_versions(source_version_num: int, pg_dump: str, host: str) -> None:
    """pg_dump reads servers of its own major version and older only."""
    source_major = source_version_num // 10000
    if source_major > major_of(pg_dump):
        raise BackupError(f"{host}: the source runs PostgreSQL {source_major}, newer than this host's pg_dump "
                          f"{pg_dump}: upgrade the env's PostgreSQL (postgresql_version) first; nothing was created")


def refuse_rows(holding: list[str], database: str, host: str, replace: bool) -> None:
    if holding and not replace:
        shown = ", ".join(holding[:5]) + (f" and {len(holding) - 5} more" if len(holding) > 5 else "")
        raise BackupError(f"{host}: {database} already holds rows ({shown}); nothing was changed. --replace "
                          "replaces it, after a verified backup of it")


def verified_backup(inventory, label: str, reporter: Reporter) -> str | None:
    """A full backup now and the restore drill of it; its label, or None in an env without a backup host."""
    repository = find_repository(inventory)
    if repository is None:
        return None
    with connect(inventory, repository.host) as transport:
        made = create_backup(transport, repository, "full", label)
        drill = run_drill(transport, repository)
    if not drill["ok"]:
        raise BackupError(f"{repository.host.name}: the restore drill of {made.label} failed: {drill.get('error')}")
    reporter.line(f"{repository.host.name}: {made.label} ({label}) taken and restored by the drill in "
                  f"{drill['rto_seconds']}s, {drill['rows']} rows as on the live database")
    return made.label


def progress_sink(reporter: Reporter, every: float = 5.0) -> Callable[[bytes], None]:
    """Reads COPY_IN's stdout as it comes: a line on the screen every `every` seconds with the bytes so far."""
    buffer, said, started = bytearray(), [0.0], time.monotonic()
    lines: list[str] = []

    def sink(chunk: bytes) -> None:
        buffer.extend(chunk)
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            text = line.decode(errors="replace")
            lines.append(text)
            if text.startswith('{"copied"') and time.monotonic() - said[0] >= every:
                copied = int(text.split(":")[1].rstrip("}"))
                elapsed = time.monotonic() - started
                reporter.line(f"  copied {copied / 1048576:.1f} MiB in {elapsed:.0f}s "
                              f"({copied / 1048576 / max(elapsed, 0.001):.1f} MiB/s)")
                said[0] = time.monotonic()

    sink.lines = lines  # type: ignore[attr-defined]
    return sink


def import_database(env: str, source: Source | DumpFile, replace: bool = False, final: bool = False,
                    reporter: Reporter | None = None) -> ImportReport:
    """Copy `source` (a PaaS's database, or a pg_dump archive) into `env`'s, by the steps of this module's
    docstring.

    Example: import_database("staging", parse_source(url, None, "system", "--from-env-file"))
    """
    reporter = reporter or Reporter.quiet()
    started = time.monotonic()
    inventory, host = database_host(env)
    postgresql = inventory.vars_for(host, [load_role("postgresql")])
    target = Target(postgresql.string("postgresql_database", r"[a-z_][a-z0-9_]{0,62}"),
                    postgresql.string("postgresql_user", r"[a-z_][a-z0-9_]{0,62}"))
    dump = source if isinstance(source, DumpFile) else None
    if dump and final:
        raise ConfigError("--final makes the PaaS's database read-only for the cut-over: it needs --from-url or "
                          "--from-env-file, not --from-dump")
    report = ImportReport(env, host.name, source.shown, target.database,
                          notes=list(getattr(source, "notes", ())))
    with connect(inventory, host) as transport:
        def ask(action: str, keep_as: str = "", rows_ok: bool = False, sink=None) -> dict:
            command = copy_in_command(action, dump.remote if dump else source, target, keep_as, rows_ok)
            result = transport.run(command, timeout=7200, sink=sink)
            # With a sink, what the program printed is in the lines it kept, not in the result.
            stdout = "\n".join(sink.lines) if sink else result.stdout
            return answer_of(result.ok, stdout, result.stderr, action, host.name)

        phases = {"connected": time.monotonic() - started}
        if dump:
            reporter.line(f"putting {dump.path} ({dump.path.stat().st_size / 1048576:.1f} MiB) on {host.name}")
            put_dump(transport, host.name, dump)
            phases["archive put"] = time.monotonic() - started
        try:
            copied = copy_checked(inventory, ask, "restore" if dump else "copy", report, replace, final, reporter,
                                  phases)
        except BackupError as error:
            if dump:
                raise BackupError(f"--from-dump {dump.path}: {error.message}") from None
            raise
        finally:
            if dump:
                remove_dump(transport, dump)
    if final:
        # The env takes writes again now; the backup below runs beside it.
        _, failed = set_maintenance(env, False, None)
        report.write_downtime_seconds = round(time.monotonic() - started - phases["writes stopped"], 1)
        if failed:
            report.notes.append(f"maintenance mode is still on at {', '.join(failed)}: invoke incident.maintenance "
                                f"off --env={env}")
    report.tables = {name: {"rows": figures[0], "checksum": figures[1]}
                     for name, figures in copied["copy"].items() if figures[0] >= 0}
    report.bytes, report.copy_seconds = copied["bytes"], copied["seconds"]["copy"]
    report.check_seconds = max(copied["seconds"]["check_source"] - copied["seconds"]["copy"], 0) \
        + copied["seconds"]["check_copy"]
    after = verified_backup(inventory, "after-import", reporter)
    if after is None:
        report.notes.append(f"no backup host in inventory/{env}.yml: no backup was taken (docs/backup.md)")
    else:
        report.backups.append(after)
    report.seconds = round(time.monotonic() - started, 1)
    report.phases = {**{name: round(at, 2) for name, at in phases.items()}, **copied["seconds"]}
    return report


def copy_checked(inventory, ask: Callable[..., dict], action: str, report: ImportReport, replace: bool,
                 final: bool, reporter: Reporter, phases: dict[str, float]) -> dict:
    """The copy's visits: the first inspects and, when nothing stands in the way, copies too; otherwise the
    refusals, the backup --replace asks for and the cut-over's freeze come first, then the copy. A visit that
    fails has the scratch database dropped after it; the cut-over's failure makes the source writable again."""
    env, host, database = inventory.env, report.host, report.database
    started = time.monotonic() - phases["connected"]

    def drop() -> None:
        try:
            ask("drop")
        except BackupError as error:
            reporter.error(f"the scratch database could not be dropped: {error.message}")

    def copying(*args, **kwargs) -> dict:
        try:
            return ask(*args, **kwargs)
        except BaseException:
            drop()
            raise

    reporter.line(f"copying {report.source} into {host}:{database}")
    # The cut-over inspects alone: maintenance mode and the freeze come between it and the copy.
    first = ask("inspect") if final else copying(action, sink=progress_sink(reporter))
    phases["inspected"] = time.monotonic() - started
    seen = first["inspected"]
    check_versions(seen["source"]["version_num"], seen["destination"]["pg_dump"], host)
    holding = seen["destination"]["holding"]
    refuse_rows(holding, database, host, replace)
    if "swapped" in first:
        phases["copied, checked and swapped"] = phases.pop("inspected")
        return checked(first, drop, host, database)
    if holding:
        before = verified_backup(inventory, "before-import", reporter)
        if before is None:
            raise BackupError(f"--replace: inventory/{env}.yml has no backup host, so {database} cannot be backed "
                              "up before it is replaced (docs/backup.md); nothing was changed")
        report.backups.append(before)
        report.replaced = f"{database}_replaced_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    if final:
        _, failed = set_maintenance(env, True, None)
        if failed:
            set_maintenance(env, False, None)
            raise BackupError(f"maintenance mode could not be turned on at {', '.join(failed)}; nothing was copied")
        phases["writes stopped"] = time.monotonic() - started
    try:
        if final:
            ended = ask("freeze")
            reporter.line(f"source {report.source}: read-only now, {ended['sessions_ended']} session(s) ended")
        copied = checked(copying(action, report.replaced, rows_ok=True, sink=progress_sink(reporter)), drop, host,
                         database)
        phases["copied, checked and swapped"] = time.monotonic() - started
        return copied
    except BaseException:
        if final:
            try:
                ask("thaw")
                reporter.error(f"source {report.source}: writable again")
            except BackupError as error:
                reporter.error(f"source {report.source} is still READ-ONLY ({error.message}): run ALTER DATABASE "
                               "... RESET default_transaction_read_only on it")
            set_maintenance(env, False, None)
        raise


def checked(copied: dict, drop: Callable[[], None], host: str, database: str) -> dict:
    """A copy whose every figure equals the source's, and swapped in; else the scratch database dropped
    and the difference the error."""
    mismatches: list[Mismatch] = compare(copied["source"], copied["copy"])
    if mismatches or not copied["swapped"]:
        drop()
        raise BackupError(f"{host}: the copy differs from the source: "
                          + "; ".join(m.describe() for m in mismatches[:5])
                          + f"; the scratch database was dropped, {database} is unchanged")
    return copied


def source_from_flags(from_url: str | None, from_env_file: str | None, ca: str | None,
                      read_password: Callable[[], str]) -> Source:
    """The source of --from-url (its password asked for, never in the URL) or --from-env-file (the URL there)."""
    if bool(from_url) == bool(from_env_file):
        raise ConfigError("backup.import: give one of --from-url, --from-env-file and --from-dump")
    if from_url:
        parsed = split_url(from_url)
        if parsed is not None and parsed.password:
            register({"SOURCE_URL": from_url})
            raise ConfigError("--from-url: it carries a password, which a command line shows to ps and keeps in "
                              "shell history: leave it out (you are asked for it), or use --from-env-file; and "
                              "change that password at the PaaS now")
        return parse_source(from_url, read_password(), ca, "--from-url")
    path = Path(from_env_file)
    url, key = source_database_url(read_export(path), str(path))
    return parse_source(url, None, ca, f"{path}: {key}")
