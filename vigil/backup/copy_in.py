"""`backup.import`: the PaaS's database copied into the env's, checked table by table before it is used.

On the database host, in one Python program run by root (COPY_IN) and asked one thing at a time:

  inspect  the source's version, size and tables; the destination's pg_dump and whether its database
           holds rows. Nothing is created.
  copy     a scratch database (owned by the app's role) filled by `pg_dump | pg_restore` from a snapshot
           exported by a session on the source, which meanwhile counts and checksums every table in that
           same snapshot; the copy is counted and checksummed too, and swapped in (as below) when every
           figure is equal. Progress lines come as the bytes flow.
  swap     the swap alone: the scratch database renamed to the app's, the one it replaces kept under
           another name (or dropped when it held no rows); the app's sessions are ended for the rename.
  drop     the scratch database removed (a copy that did not match, or was cut off).
  freeze / thaw  for the cut-over (--final): the source made read-only for new sessions and its others
           ended, or made writable again when the import fails.

The control machine compares the figures (`compare`), so the decision to swap is made and tested here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from vigil.backup.access import BackupError
from vigil.backup.source import Source
from vigil.core.commands import Command
from vigil.core.redaction import REDACTOR

DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

COPY_IN = r'''
import json, os, shutil, signal, subprocess, sys, tempfile, threading, time
# A closed connection or a kill still runs the `finally` below: the password file never outlives us.
for ending in (signal.SIGHUP, signal.SIGTERM):
    signal.signal(ending, lambda number, frame: sys.exit(128 + number))
action = sys.argv[1]
config = json.loads(sys.stdin.read())
target, scratch, owner = config["target"], config["scratch"], config["owner"]

def fail(what, detail=""):
    sys.stderr.write(json.dumps({"error": what, "detail": detail.strip()[-600:]}) + "\n")
    sys.exit(3)

def local(sql, database="postgres"):
    """psql as postgres on this host: rows as lists of fields."""
    done = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t", "-F", "\t",
                           "-v", "ON_ERROR_STOP=1", "-d", database], input=sql, capture_output=True, text=True,
                          cwd="/")
    if done.returncode != 0:
        fail(f"psql on this host ({database})", done.stderr)
    return [line.split("\t") for line in done.stdout.splitlines() if line]

def quoted(name):
    return '"' + name.replace('"', '""') + '"'

def literal(text):
    return "'" + text.replace("'", "''") + "'"

private = tempfile.mkdtemp(prefix="vigil-import-", dir="/run")  # memory, never a disk
shutil.chown(private, "postgres", "postgres")
os.chmod(private, 0o700)
env = {"PATH": "/usr/bin:/bin", "PGSERVICEFILE": f"{private}/service.conf", "PGPASSFILE": f"{private}/pgpass",
       "PGCONNECT_TIMEOUT": "10", "HOME": private}

def private_file(name, text):
    path = f"{private}/{name}"
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(text)
    shutil.chown(path, "postgres", "postgres")
    return path

def source_session():
    """A psql session on the source, kept open: send SQL, read its rows up to a marker."""
    return subprocess.Popen(["runuser", "-u", "postgres", "--", "env", *[f"{k}={v}" for k, v in env.items()],
                             "psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "service=paas"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd="/", bufsize=1)

def ask(session, sql):
    session.stdin.write(sql + "\n\\echo __vigil_end__\n")
    session.stdin.flush()
    rows = []
    for line in session.stdout:
        line = line.rstrip("\n")
        if line == "__vigil_end__":
            return rows
        if line:
            rows.append(line.split("\t"))
    fail("the source database", session.stderr.read())

TABLES = """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
AND n.nspname NOT LIKE 'pg_toast%' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1, 2;"""
# The same text on both sides whatever their settings, so a row's checksum is its content's. The hash is
# PostgreSQL's own 64-bit one (hashtextextended, stable across versions: hash partitioning relies on it),
# half md5's cost; a checksum that differs only refuses the copy, it can never let a bad one through.
STABLE = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
          "SET extra_float_digits = 3; SET bytea_output = 'hex';")

def figures_sql(tables):
    parts = [f"SELECT {literal(s + '.' + t)}, count(*), "
             f"coalesce(sum(hashtextextended(r::text, 0)), 0) "
             f"FROM {quoted(s)}.{quoted(t)} r" for s, t in tables]
    sequences = "SELECT schemaname || '.' || sequencename, -1, coalesce(last_value, 0) FROM pg_sequences"
    return STABLE + " " + " UNION ALL ".join(parts + [sequences]) + ";"

def figures(rows):
    return {name: [int(count), str(total)] for name, count, total in rows}

def swap(kept):
    """The scratch database renamed to the app's; the app's kept as `kept`, or dropped when that is empty."""
    statements = [f"ALTER DATABASE {quoted(scratch)} RENAME TO {quoted(target)};"]
    if local(f"SELECT 1 FROM pg_database WHERE datname = '{target}';"):
        # New sessions refused, the open ones ended (waiting for each), then the names change.
        local(f"ALTER DATABASE {quoted(target)} WITH ALLOW_CONNECTIONS false;")
        local(f"SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = '{target}' "
              "AND pid <> pg_backend_pid();")
        statements.insert(0, f"ALTER DATABASE {quoted(target)} RENAME TO {quoted(kept)};" if kept
                          else f"DROP DATABASE {quoted(target)};")
    for statement in statements:
        local(statement)

try:
    private_file("service.conf", config["service"] + (
        "sslrootcert=system\n" if config["ca"] == "system" else
        f"sslrootcert={private_file('ca.pem', config['ca'])}\n" if config["ca"] else ""))
    private_file("pgpass", config["pgpass"])
    if action == "inspect":
        session = source_session()
        version, size = ask(session, "SELECT current_setting('server_version_num'), "
                                     "pg_database_size(current_database());")[0]
        tables = ask(session, TABLES)
        session.stdin.close()
        session.wait()
        dump = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.split()[2]
        exists = local(f"SELECT 1 FROM pg_database WHERE datname = '{target}';")
        holding = []
        if exists:
            mine = local(TABLES, target)
            if mine:
                holding = [row[0] for row in local(" UNION ALL ".join(
                    f"SELECT {literal(s + '.' + t)} WHERE EXISTS (SELECT 1 FROM {quoted(s)}.{quoted(t)})"
                    for s, t in mine) + ";",
                    target)]
        print(json.dumps({"source": {"version_num": int(version), "size": int(size),
                                     "tables": [f"{s}.{t}" for s, t in tables]},
                          "destination": {"pg_dump": dump, "exists": bool(exists), "holding": holding}}))
    elif action == "copy":
        local(f"DROP DATABASE IF EXISTS {quoted(scratch)}; CREATE DATABASE {quoted(scratch)} OWNER {quoted(owner)};")
        session = source_session()
        ask(session, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;")
        snapshot = ask(session, "SELECT pg_export_snapshot();")[0][0]
        started = time.time()
        dump = subprocess.Popen(["runuser", "-u", "postgres", "--", "env", *[f"{k}={v}" for k, v in env.items()],
                                 "pg_dump", "--format=custom", "--compress=0", "--no-owner", "--no-acl",
                                 f"--snapshot={snapshot}", "--dbname=service=paas"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
        restore = subprocess.Popen(["runuser", "-u", "postgres", "--", "pg_restore", "--no-owner", "--no-acl",
                                    "--exit-on-error", f"--dbname={scratch}"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
        # The source counts and checksums its tables in the exported snapshot while pg_dump reads it.
        checked = {}

        def check_source():
            try:
                checked["figures"] = figures(ask(session, figures_sql(ask(session, TABLES))))
            except SystemExit:
                checked["failed"] = True
            checked["seconds"] = time.time() - started

        checker = threading.Thread(target=check_source)
        checker.start()
        copied, said, broken = 0, time.monotonic(), False
        try:
            for block in iter(lambda: dump.stdout.read(1 << 16), b""):
                restore.stdin.write(block)
                copied += len(block)
                if time.monotonic() - said >= 1:
                    print(json.dumps({"copied": copied}), flush=True)
                    said = time.monotonic()
            restore.stdin.close()
        except BrokenPipeError:
            broken = True  # pg_restore stopped reading: its error is the cause
            dump.kill()
        # Whichever ended first says why: a dump cut short leaves pg_restore a truncated archive.
        dumped, restored = dump.wait(), restore.wait()
        if dumped != 0 and not broken:
            fail("pg_dump of the source", dump.stderr.read().decode(errors="replace"))
        if restored != 0:
            fail("pg_restore into the scratch database", restore.stderr.read().decode(errors="replace"))
        copy_seconds = time.time() - started
        checker.join()
        if "figures" not in checked:
            fail("the source database", session.stderr.read())
        source = checked["figures"]
        ask(session, "COMMIT;")
        session.stdin.close()
        session.wait()
        # The copy belongs to the app's role, as if its migrations had made it.
        local(f"""DO $$ DECLARE object record; BEGIN
FOR object IN SELECT format('ALTER %s %I.%I OWNER TO %I', CASE c.relkind WHEN 'S' THEN 'SEQUENCE'
  WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
  n.nspname, c.relname, '{owner}') AS statement
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
  AND d.objid = c.oid AND d.deptype IN ('e', 'i', 'a'))
LOOP EXECUTE object.statement; END LOOP;
FOR object IN SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, '{owner}') AS statement
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
  AND d.deptype = 'e')
LOOP EXECUTE object.statement; END LOOP;
FOR object IN SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, '{owner}') AS statement FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = oid
  AND d.deptype = 'e')
LOOP EXECUTE object.statement; END LOOP; END $$;""", scratch)
        checking = time.time()
        copy = figures(local(figures_sql(local(TABLES, scratch)), scratch))
        seconds = {"copy": round(copy_seconds, 3), "check_source": round(checked["seconds"], 3),
                   "check_copy": round(time.time() - checking, 3)}
        # Equal to the last figure: swapped in now, in the same visit (the control machine compares again).
        swapped = source == copy
        if swapped:
            swap(config["keep_as"])
        print(json.dumps({"source": source, "copy": copy, "bytes": copied, "seconds": seconds, "swapped": swapped}))
    elif action == "swap":
        swap(config["keep_as"])
        print(json.dumps({"kept_as": config["keep_as"]}))
    elif action == "drop":
        local(f"DROP DATABASE IF EXISTS {quoted(scratch)};")
        print(json.dumps({"dropped": scratch}))
    elif action in ("freeze", "thaw"):
        session = source_session()
        database = ask(session, "SELECT current_database();")[0][0]
        if action == "freeze":
            ask(session, f"ALTER DATABASE {quoted(database)} SET default_transaction_read_only = on;")
            ended = ask(session, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                 "datname = current_database() AND pid <> pg_backend_pid();")[0][0]
        else:
            ask(session, f"ALTER DATABASE {quoted(database)} RESET default_transaction_read_only;")
            ended = "0"
        session.stdin.close()
        session.wait()
        print(json.dumps({"database": database, "sessions_ended": int(ended)}))
finally:
    shutil.rmtree(private, ignore_errors=True)
'''


@dataclass(frozen=True)
class Target:
    """Where the copy goes on the database host: the app's database and role, and the scratch name."""

    database: str
    owner: str

    @property
    def scratch(self) -> str:
        return f"{self.database}_import"[:63]


def copy_in_command(action: str, source: Source, target: Target, keep_as: str = "") -> Command:
    """COPY_IN's `action`, its configuration (the password among it) on stdin, never in argv."""
    for name in (target.database, target.owner, target.scratch, *([keep_as] if keep_as else [])):
        if not DATABASE_NAME.fullmatch(name):
            raise BackupError(f"{name!r} is not a database or role name backup.import can use (a-z, 0-9, _)")
    config = {"target": target.database, "scratch": target.scratch, "owner": target.owner, "keep_as": keep_as,
              "service": source.service_file(), "pgpass": source.password_file(), "ca": source.ca}
    return Command(("python3", "-I", "-c", COPY_IN, action), sudo=True, stdin=json.dumps(config).encode())


def answer_of(ok: bool, stdout: str, stderr: str, action: str, host: str) -> dict:
    """COPY_IN's last JSON line, or its error as a BackupError (masked: a source error may quote the URL)."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if ok and lines:
        return json.loads(lines[-1])
    problem = {}
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith("{"):
            problem = json.loads(line)
            break
    what = problem.get("error") or f"backup.import {action}"
    detail = problem.get("detail") or stderr.strip()[-300:]
    raise BackupError(REDACTOR.redact(f"{host}: {what} failed: {detail}"))


@dataclass(frozen=True)
class Mismatch:
    name: str
    source: list | None
    copy: list | None

    def describe(self) -> str:
        def side(figures):
            if figures is None:
                return "missing"
            return f"last value {figures[1]}" if figures[0] == -1 else f"{figures[0]} rows, checksum {figures[1]}"

        return f"{self.name}: source {side(self.source)}, copy {side(self.copy)}"


def compare(source: dict[str, list], copy: dict[str, list]) -> list[Mismatch]:
    """Every table (rows and checksum) and sequence (last value) that differs or is on one side only."""
    return [Mismatch(name, source.get(name), copy.get(name)) for name in sorted(set(source) | set(copy))
            if source.get(name) != copy.get(name)]
