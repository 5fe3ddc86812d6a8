"""The program `backup.import` runs on the database host: as root, by `python3 -I -c`, one action a visit,
its configuration (the source's password among it) as JSON on stdin. Standard library only: it is shipped as
text (vigil/backup/copy_in.py) and imported by the unit tests for its pure parts.

  copy     from a PaaS URL. First the inspection (the source's version and tables, this host's pg_dump,
           whether the app's database holds rows); it stops there, having created nothing, when asked to
           (the action `inspect`) or when the copy cannot go on (a source newer than pg_dump; rows in the
           way and no `rows_ok`). Then, from one snapshot exported by a session on the source: the schema
           dumped while the scratch database is created, its pre-data restored, the data streamed
           `pg_dump | pg_restore` (progress lines as the bytes flow) while the source's session counts and
           checksums every table in that same snapshot, then the post-data (indexes, constraints) restored
           while the copy is counted and checksummed. The copy is handed to the app's role and, when every
           figure is equal, swapped in: renamed to the app's database, the one it replaces kept under another
           name (or dropped when it held no rows), the app's sessions ended for the rename.
  restore  from a pg_dump archive already put on this host: the same inspection, then the archive as SQL
           (`pg_restore -f -`) through this program into `psql` on the scratch database, its COPY blocks
           counted and checksummed as they pass; the copy is dumped again and counted the same way.
  drop     the scratch database removed (a copy that did not match, or was cut off).
  freeze / thaw  for the cut-over (--final): the source made read-only for new sessions and its others
           ended, or made writable again when the import fails.

Every answer is one JSON line on stdout (the last); a failure is a JSON line on stderr and exit 3. The
control machine compares the figures again (vigil/backup/copy_in.py) before it reports success.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

TABLES = """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
AND n.nspname NOT LIKE 'pg_toast%' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1, 2"""
# The tables of the database that hold at least one row, in one query (query_to_xml runs each probe).
HOLDING = f"""SELECT nspname || '.' || relname FROM ({TABLES}) AS t (nspname, relname)
WHERE (xpath('/row/x/text()', query_to_xml(format('SELECT EXISTS (SELECT 1 FROM %I.%I) AS x', nspname, relname),
  false, true, '')))[1]::text = 'true';"""
# The same settings on both sides whatever their defaults, so a row's checksum is its content's.
STABLE = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
          "SET extra_float_digits = 3; SET bytea_output = 'hex';")
# Tables whose every column is of a type hash_record_extended (PostgreSQL 14+) hashes by value, twice as fast as
# hashing the row's text; others (json, xml, geometric types, a type of an extension...) are hashed as text.
# Both are PostgreSQL's own 64-bit hashes, stable across versions (hash partitioning relies on them). With its
# columns, named: a ROW() of them hashes as the whole row does, without copying each row into a composite first
# (a fifth less time a row).
BY_VALUE = """SELECT n.nspname, c.relname, string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'
WHERE c.relkind IN ('r', 'p')
GROUP BY 1, 2 HAVING bool_and(coalesce(e.typtype, b.typtype) = 'e' OR (coalesce(e.typnamespace, b.typnamespace)
  = 'pg_catalog'::regnamespace AND coalesce(e.typname, b.typname) IN ('int2', 'int4', 'int8', 'numeric', 'float4',
  'float8', 'bool', 'text', 'varchar', 'bpchar', 'name', 'char', 'uuid', 'date', 'time', 'timestamp', 'timestamptz',
  'interval', 'bytea', 'jsonb', 'inet', 'cidr', 'macaddr', 'oid')));"""
# The owner of everything the copy made becomes the app's role, as if its migrations had made it: tables,
# sequences, views, functions, schemas, and the enums and domains its next migration may have to alter.
# ({owner}: the role's name as a literal; psql does not put variables into a dollar-quoted body.)
HAND_OVER = """DO $$ DECLARE object record; BEGIN
FOR object IN SELECT format('ALTER %s %I.%I OWNER TO %I', CASE c.relkind WHEN 'S' THEN 'SEQUENCE'
  WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
  n.nspname, c.relname, {owner}) AS statement
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
  AND d.objid = c.oid AND d.deptype IN ('e', 'i', 'a'))
LOOP EXECUTE object.statement; END LOOP;
FOR object IN SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, {owner}) AS statement
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
  AND d.deptype = 'e')
LOOP EXECUTE object.statement; END LOOP;
FOR object IN SELECT format('ALTER %s %I.%I OWNER TO %I', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
  n.nspname, t.typname, {owner}) AS statement
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace LEFT JOIN pg_class c ON c.oid = t.typrelid
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND t.typtype IN ('e', 'd', 'r', 'c') AND (t.typrelid = 0 OR c.relkind = 'c')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
  AND d.deptype IN ('e', 'i'))
LOOP EXECUTE object.statement; END LOOP;
FOR object IN SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, {owner}) AS statement FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = oid
  AND d.deptype = 'e')
LOOP EXECUTE object.statement; END LOOP; END $$;"""
BLOCK = 1 << 16
COPY_START = re.compile(rb"^COPY (.+?)(?: \(.*\))? FROM stdin;\n$")
SETVAL = re.compile(rb"^SELECT pg_catalog\.setval\('(.+)', (.+)\);\n$")


class Failed(Exception):
    def __init__(self, what, detail=""):
        super().__init__(what)
        self.what, self.detail = what, detail


def quoted(name):
    return '"' + name.replace('"', '""') + '"'


def literal(text):
    return "'" + text.replace("'", "''") + "'"


def figures_sql(tables, by_value):
    """Every table's rows and checksum (the 64-bit hash of each row, summed: order-free), and every sequence's
    last value, in one query. `by_value`: BY_VALUE's rows, the tables hashed by hash_record_extended and their
    columns."""
    columns = {(schema, table): names for schema, table, names in by_value}

    def row_hash(schema, table):
        if (schema, table) in columns:
            return f"hash_record_extended(ROW({columns[schema, table]}), 0)"
        return "hashtextextended(r::text, 0)"

    parts = [f"SELECT {literal(s + '.' + t)}, count(*), coalesce(sum({row_hash(s, t)}), 0) "
             f"FROM {quoted(s)}.{quoted(t)} r" for s, t in tables]
    sequences = "SELECT schemaname || '.' || sequencename, -1, coalesce(last_value, 0) FROM pg_sequences"
    return STABLE + " " + " UNION ALL ".join(parts + [sequences]) + ";"


def figures(rows):
    return {name: [int(count), str(total)] for name, count, total in rows}


class DumpFigures:
    """The rows and an order-free checksum of every COPY block in pg_dump's SQL, and every sequence's value,
    read line by line as the SQL passes (the same reading for the archive and for the copy dumped again)."""

    def __init__(self):
        self.tables, self.table, self.rows, self.total = {}, None, 0, 0

    def line(self, line):
        if self.table is not None:
            if line == b"\\.\n":
                self.tables[self.table] = [self.rows, str(self.total % (1 << 64))]
                self.table = None
            else:
                self.rows += 1
                self.total += int.from_bytes(hashlib.blake2b(line, digest_size=8).digest(), "big")
            return
        if line.startswith(b"COPY "):
            found = COPY_START.match(line)
            if found:
                self.table, self.rows, self.total = found.group(1).decode(), 0, 0
        elif line.startswith(b"SELECT pg_catalog.setval("):
            found = SETVAL.match(line)
            if found:
                self.tables[found.group(1).decode()] = [-1, found.group(2).decode()]


class Program:
    def __init__(self, config):
        self.config = config
        self.began = time.time()
        self.target, self.scratch, self.owner = config["target"], config["scratch"], config["owner"]
        self.private = tempfile.mkdtemp(prefix="vigil-import-", dir="/run")  # memory, never a disk
        shutil.chown(self.private, "postgres", "postgres")
        os.chmod(self.private, 0o700)
        self.env = {"PATH": "/usr/bin:/bin", "PGSERVICEFILE": f"{self.private}/service.conf",
                    "PGPASSFILE": f"{self.private}/pgpass", "PGCONNECT_TIMEOUT": "10", "HOME": self.private,
                    "PGTZ": "UTC", "LC_MESSAGES": "C"}
        if "service" in config:
            self.private_file("service.conf", config["service"] + (
                "sslrootcert=system\n" if config["ca"] == "system" else
                f"sslrootcert={self.private_file('ca.pem', config['ca'])}\n" if config["ca"] else ""))
            self.private_file("pgpass", config["pgpass"])

    def private_file(self, name, text):
        path = f"{self.private}/{name}"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(text)
        shutil.chown(path, "postgres", "postgres")
        return path

    def postgres(self, *argv, **kwargs):
        """A client program as postgres, with this program's private settings."""
        return subprocess.Popen(["runuser", "-u", "postgres", "--", "env", *[f"{k}={v}" for k, v in self.env.items()],
                                 *argv], cwd="/", **kwargs)

    def session(self, database):
        return Session(self, database)

    def inspect(self, source_version, source_tables, local, dump_version):
        """What the copy is up against here; `stop` says why it must not go on (nothing is created then).
        `dump_version`: `pg_dump --version` started beside the source's questions."""
        dump = dump_version.communicate()[0].split()[2]
        exists = bool(local.ask(f"SELECT 1 FROM pg_database WHERE datname = {literal(self.target)};"))
        holding = [row[0] for row in self.session(self.target).once(HOLDING)] if exists else []
        stop = ""
        if source_version and source_version // 10000 > int(dump.split(".")[0]):
            stop = "version"
        elif holding and not self.config.get("rows_ok"):
            stop = "holding"
        return {"source": {"version_num": source_version, "tables": source_tables},
                "destination": {"pg_dump": dump, "exists": exists, "holding": holding}, "stop": stop}

    @staticmethod
    def dump_version():
        return subprocess.Popen(["pg_dump", "--version"], stdout=subprocess.PIPE, text=True)

    def create_scratch(self, local):
        local.ask(f"DROP DATABASE IF EXISTS {quoted(self.scratch)};")
        local.ask(f"CREATE DATABASE {quoted(self.scratch)} OWNER {quoted(self.owner)};")

    def relay(self, reader, writer, each_line=None):
        """Bytes from one program to the next, a progress line a second; the bytes relayed."""
        copied, said = 0, time.monotonic()
        try:
            chunks = iter(reader.readline, b"") if each_line else iter(lambda: reader.read(BLOCK), b"")
            for chunk in chunks:
                if each_line:
                    each_line(chunk)
                writer.write(chunk)
                copied += len(chunk)
                if time.monotonic() - said >= 1:
                    print(json.dumps({"copied": copied}), flush=True)
                    said = time.monotonic()
            writer.close()
        except BrokenPipeError:
            return copied, True  # the reader stopped: its own error says why
        return copied, False

    def hand_over_and_swap(self, local, copy_session, source, copy, bytes_, seconds):
        handing = time.time()
        copy_session.ask(HAND_OVER.replace("{owner}", literal(self.owner)))
        copy_session.close()
        swapped = source == copy
        if swapped:
            self.swap(self.config["keep_as"], local)
        local.close()
        seconds["swap"] = round(time.time() - handing, 3)
        return {"source": source, "copy": copy, "bytes": bytes_, "seconds": seconds, "swapped": swapped}

    def from_url(self, inspect_only):
        # This host's side starts while the source is asked (its TLS handshake is the longer wait).
        local, dump_version = self.session("postgres"), self.dump_version()
        source = self.session("service=paas")
        version = int(source.ask("SELECT current_setting('server_version_num');")[0][0])
        tables = source.ask(TABLES + ";")
        by_value = source.ask(BY_VALUE) if version >= 140000 else []
        seen = self.inspect(version, [f"{s}.{t}" for s, t in tables], local, dump_version)
        if inspect_only or seen["stop"]:
            return {"inspected": seen}
        source.ask("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;")
        snapshot = source.ask("SELECT pg_export_snapshot();")[0][0]
        started = time.time()
        dump = ["pg_dump", "--format=custom", "--compress=0", "--no-owner", "--no-acl", f"--snapshot={snapshot}",
                "--dbname=service=paas"]
        # The schema and the data dumped at once from the same snapshot; the data waits in its pipe until the
        # tables it fills exist.
        schema = self.postgres(*dump, "--schema-only", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        data = self.postgres(*dump, "--data-only", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        checked = {}

        def check_source():
            try:
                checked["figures"] = figures(source.ask(figures_sql(tables, by_value)))
            except Failed as failure:
                checked["failed"] = failure
            checked["seconds"] = time.time() - started

        checker = threading.Thread(target=check_source, daemon=True)
        checker.start()
        self.create_scratch(local)
        archive, problem = schema.communicate()
        if schema.returncode != 0:
            data.kill()
            raise Failed("pg_dump of the source", problem.decode(errors="replace"))
        problem = self.restore_section(archive, "pre-data")
        if problem:
            data.kill()
            raise problem
        restore = self.postgres("pg_restore", "--no-owner", "--no-acl", "--exit-on-error", f"--dbname={self.scratch}",
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The session that counts the copy connects while the data flows, and finds its tables meanwhile.
        copy_session = self.session(self.scratch)
        copy_session.send(TABLES + ";")
        copied, broken = self.relay(data.stdout, restore.stdin)
        if broken:
            data.kill()
        # Whichever ended first says why: a dump cut short leaves pg_restore a truncated archive.
        dumped, restored = data.wait(), restore.wait()
        if dumped != 0 and not broken:
            raise Failed("pg_dump of the source", data.stderr.read().decode(errors="replace"))
        if restored != 0:
            raise Failed("pg_restore into the scratch database", restore.stderr.read().decode(errors="replace"))
        copy_seconds = time.time() - started
        # The indexes and constraints built while the copy is counted: the rows are all in.
        built = {}
        post = threading.Thread(target=lambda: built.update(problem=self.restore_section(archive, "post-data")),
                                daemon=True)
        post.start()
        checking = time.time()
        copy = figures(copy_session.ask(figures_sql(copy_session.answer(), by_value)))
        post.join()
        if built["problem"]:
            raise built["problem"]
        checker.join()
        if "figures" not in checked:
            raise checked.get("failed") or Failed("the source database")
        source.ask("COMMIT;")
        source.close()
        seconds = {"inspect": round(started - self.began, 3), "copy": round(copy_seconds, 3),
                   "check_source": round(checked["seconds"], 3),
                   "check_copy": round(time.time() - checking, 3)}
        return {"inspected": seen, **self.hand_over_and_swap(local, copy_session, checked["figures"], copy, copied,
                                                              seconds)}

    def restore_section(self, archive, section):
        """One section of the schema's archive restored into the scratch database; its failure, or None."""
        done = self.postgres("pg_restore", "--no-owner", "--no-acl", "--exit-on-error", f"--section={section}",
                             f"--dbname={self.scratch}", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        _, problem = done.communicate(archive)
        if done.returncode != 0:
            return Failed(f"pg_restore ({section}) into the scratch database", problem.decode(errors="replace"))
        return None

    def from_dump(self):
        path = self.config["dump"]
        listing = self.postgres("pg_restore", "--list", path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        contents, problem = listing.communicate()
        if listing.returncode != 0:
            raise Failed("reading the archive", problem)
        found = re.search(r"Dumped from database version: (\d+)(?:\.(\d+))?", contents)
        version = int(found.group(1)) * 10000 + int(found.group(2) or 0) if found else 0
        tables = sorted({".".join(line.split()[5:7]) for line in contents.splitlines() if " TABLE DATA " in line})
        local = self.session("postgres")
        seen = self.inspect(version, tables, local, self.dump_version())
        if seen["stop"]:
            return {"inspected": seen}
        started = time.time()
        self.create_scratch(local)
        sql = self.postgres("pg_restore", "--no-owner", "--no-acl", "--file=-", path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
        # psql's notices go to a file: a pipe nobody reads until the end could fill and stop it mid-load.
        notices = open(f"{self.private}/load.log", "w+b")  # noqa: SIM115 (read after psql ends)
        load = self.postgres("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={self.scratch}",
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=notices)
        archive = DumpFigures()
        copied, broken = self.relay(sql.stdout, load.stdin, archive.line)
        if broken:
            sql.kill()
        read, loaded = sql.wait(), load.wait()
        if read != 0 and not broken:
            raise Failed("pg_restore of the archive", sql.stderr.read().decode(errors="replace"))
        if loaded != 0:
            notices.seek(0)
            raise Failed("loading the archive into the scratch database", notices.read().decode(errors="replace"))
        if archive.table is not None:
            raise Failed("reading the archive", f"the data of {archive.table} ends before its end mark")
        copy_seconds, checking = time.time() - started, time.time()
        again = self.postgres("pg_dump", "--data-only", "--no-owner", "--no-acl", f"--dbname={self.scratch}",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        copy = DumpFigures()
        for line in iter(again.stdout.readline, b""):
            copy.line(line)
        if again.wait() != 0:
            raise Failed("pg_dump of the copy", again.stderr.read().decode(errors="replace"))
        seconds = {"inspect": round(started - self.began, 3), "copy": round(copy_seconds, 3), "check_source": 0.0,
                   "check_copy": round(time.time() - checking, 3)}
        copy_session = self.session(self.scratch)
        return {"inspected": seen, **self.hand_over_and_swap(local, copy_session, archive.tables, copy.tables, copied,
                                                              seconds)}

    def swap(self, kept, local):
        """The scratch database renamed to the app's; the app's kept as `kept`, or, when it held no rows,
        renamed out of the way and dropped after this program ends (DROP DATABASE waits for a checkpoint,
        which after a large copy is most of the swap's time).
        `local`: a session on this host's `postgres` database (none may be connected to the two renamed)."""
        statements, emptied = [f"ALTER DATABASE {quoted(self.scratch)} RENAME TO {quoted(self.target)};"], ""
        if local.ask(f"SELECT 1 FROM pg_database WHERE datname = {literal(self.target)};"):
            # New sessions refused, the open ones ended (waiting for each), then the names change.
            local.ask(f"ALTER DATABASE {quoted(self.target)} WITH ALLOW_CONNECTIONS false;")
            local.ask(f"SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = "
                      f"{literal(self.target)} AND pid <> pg_backend_pid();")
            if not kept:
                emptied = f"{self.target}_emptied"[:63]
                local.ask(f"DROP DATABASE IF EXISTS {quoted(emptied)};")  # one a drop before did not finish
            statements.insert(0, f"ALTER DATABASE {quoted(self.target)} RENAME TO {quoted(kept or emptied)};")
        # The copy's own sessions have just ended, their backends maybe not yet: PostgreSQL's rename waits for
        # them in steps of 100 ms; this waits in steps of 10.
        local.ask(f"DO $$ BEGIN FOR attempt IN 1..1000 LOOP PERFORM pg_stat_clear_snapshot(); EXIT WHEN NOT EXISTS "
                  f"(SELECT 1 FROM pg_stat_activity WHERE datname = {literal(self.scratch)}); PERFORM pg_sleep(0.01); "
                  "END LOOP; END $$;")
        for statement in statements:
            local.ask(statement)
        if emptied:
            # A unit of its own, so it outlives this visit and its outcome is in the host's journal.
            subprocess.run(["systemd-run", "--quiet", "--collect", "--no-block",
                            f"--unit=vigil-import-drop-{os.getpid()}", "--", "runuser", "-u", "postgres", "--",
                            "dropdb", "--if-exists", emptied],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    def freeze(self, on):
        source = self.session("service=paas")
        database = source.ask("SELECT current_database();")[0][0]
        if on:
            source.ask(f"ALTER DATABASE {quoted(database)} SET default_transaction_read_only = on;")
            ended = source.ask("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                               "datname = current_database() AND pid <> pg_backend_pid();")[0][0]
        else:
            source.ask(f"ALTER DATABASE {quoted(database)} RESET default_transaction_read_only;")
            ended = "0"
        source.close()
        return {"database": database, "sessions_ended": int(ended)}

    def run(self, action):
        if action in ("copy", "inspect"):
            return self.from_url(action == "inspect")
        if action == "restore":
            return self.from_dump()
        if action == "drop":
            local = self.session("postgres")
            local.ask(f"DROP DATABASE IF EXISTS {quoted(self.scratch)};")
            local.close()
            return {"dropped": self.scratch}
        if action in ("freeze", "thaw"):
            return self.freeze(action == "freeze")
        raise Failed(f"the action {action!r}")


class Session:
    """A psql session kept open (on this host's server, or the source's by `service=paas`): SQL sent, its
    rows read up to a marker. A failed statement ends psql (ON_ERROR_STOP), and its error is the Failed."""

    def __init__(self, program, database):
        self.what = "the source database" if database.startswith("service=") else f"psql on this host ({database})"
        self.psql = program.postgres("psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                                     f"--dbname={database}", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, sql):
        self.send(sql)
        return self.answer()

    def send(self, sql):
        """`sql` sent, its rows left to `answer` (read them before sending more)."""
        try:
            self.psql.stdin.write(sql + "\n\\echo __vigil_end__\n")
            self.psql.stdin.flush()
        except BrokenPipeError:
            pass

    def answer(self):
        rows = []
        for line in self.psql.stdout:
            line = line.rstrip("\n")
            if line == "__vigil_end__":
                return rows
            if line:
                rows.append(line.split("\t"))
        raise Failed(self.what, self.psql.stderr.read())

    def once(self, sql):
        rows = self.ask(sql)
        self.close()
        return rows

    def close(self):
        self.psql.stdin.close()
        self.psql.wait()


def main():
    # A closed connection or a kill still runs the `finally` below: the password file never outlives us.
    for ending in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(ending, lambda number, frame: sys.exit(128 + number))
    program = Program(json.loads(sys.stdin.read()))
    try:
        print(json.dumps(program.run(sys.argv[1])), flush=True)
    except Failed as failure:
        sys.stderr.write(json.dumps({"error": failure.what, "detail": failure.detail.strip()[-600:]}) + "\n")
        sys.exit(3)
    finally:
        shutil.rmtree(program.private, ignore_errors=True)


if __name__ == "__main__":
    main()
