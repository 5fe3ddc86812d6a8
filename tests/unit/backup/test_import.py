"""backup.import: the source's URL taken apart (TLS always, the password never on a command line), the
copy's figures compared with the source's, the refusals that come before anything is created, and an
archive's (--from-dump) figures read from its SQL."""

import json
from pathlib import Path

import pytest

from vigil.backup import copy_in_program, importing
from vigil.backup.access import BackupError
from vigil.backup.copy_in import COPY_IN, Target, compare, copy_in_command
from vigil.backup.copy_in_program import DumpFigures
from vigil.backup.dump_file import check_dump
from vigil.backup.source import parse_source
from vigil.core.errors import ConfigError
from vigil.core.redaction import REDACTOR

PASSWORD = "npg_Sup3rSecretPassw0rd"


@pytest.mark.parametrize("url, ca, expected", [
    ("postgresql://neondb_owner@ep-calm-sea-123456-pooler.eu-central-1.aws.neon.tech/neondb?sslmode=require"
     "&channel_binding=require", "system",
     ("ep-calm-sea-123456.eu-central-1.aws.neon.tech", 5432, "neondb", "neondb_owner", "verify-full",
      (("channel_binding", "require"),))),
    ("postgres://postgres@roundhouse.proxy.rlwy.net:41234/railway", None,
     ("roundhouse.proxy.rlwy.net", 41234, "railway", "postgres", "require", ())),
    ("postgresql://app@10.213.5.1:5432/app?sslmode=disable", "-----BEGIN CERTIFICATE-----\n",
     ("10.213.5.1", 5432, "app", "app", "verify-full", ())),
])
def test_a_source_url_becomes_a_service_with_tls_always(url, ca, expected):
    source = parse_source(url, PASSWORD, ca, "--from-url")
    assert (source.host, source.port, source.database, source.user, source.sslmode, source.parameters) == expected
    service = source.service_file()
    assert f"sslmode={expected[4]}" in service and PASSWORD not in service
    assert source.password_file().endswith(f":{PASSWORD}\n")
    assert PASSWORD not in source.shown


@pytest.mark.parametrize("url, password, message", [
    ("mysql://root@db.example.com/app", PASSWORD, "not a postgres:// URL"),
    ("postgresql:///app", PASSWORD, "not a postgres:// URL with a host"),
    ("postgresql://app@db.example.com/app", None, "no password"),
    ("postgresql://app@db.example.com/app?sslrootcert=/etc/passwd&host=/tmp", PASSWORD, "parameter 'host'"),
    ("postgresql://app@db.example.com/app?service=other", PASSWORD, "parameter 'service'"),
    ("postgresql://@db.example.com/app", PASSWORD, "the URL's user is missing"),
])
def test_a_bad_source_url_is_refused_naming_what(url, password, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_source(url, password, None, "--from-url")


def test_a_password_in_the_url_on_the_command_line_is_refused_and_masked():
    url = f"postgresql://app:{PASSWORD}@db.example.com/app"
    with pytest.raises(ConfigError) as error:
        importing.source_from_flags(url, None, None, lambda: "")
    assert "carries a password" in error.value.message and PASSWORD not in error.value.message
    assert REDACTOR.redact(f"echo {PASSWORD}") == "echo ***"


def test_the_env_file_gives_the_direct_url_and_its_password(tmp_path):
    export = tmp_path / ".env.local"
    export.write_text(f'DATABASE_URL="postgresql://u:{PASSWORD}@ep-x-1-pooler.us-east-2.aws.neon.tech/db"\n'
                      f'DATABASE_URL_UNPOOLED="postgresql://u:{PASSWORD}@ep-x-1.us-east-2.aws.neon.tech/db"\n')
    source = importing.source_from_flags(None, str(export), "system", lambda: pytest.fail("no prompt"))
    assert (source.host, source.password, source.sslmode) == ("ep-x-1.us-east-2.aws.neon.tech", PASSWORD,
                                                              "verify-full")


def test_the_password_travels_on_stdin_never_in_argv():
    source = parse_source("postgresql://app@db.example.com/app", PASSWORD, None, "--from-url")
    command = copy_in_command("copy", source, Target("together_pray", "together_pray"))
    assert PASSWORD not in " ".join(command.argv)
    assert json.loads(command.stdin)["pgpass"] == f"db.example.com:5432:app:app:{PASSWORD}\n"
    assert command.argv[-1] == "copy"


@pytest.mark.parametrize("target", [Target("Bad-Name", "app"), Target("app", "app; drop")])
def test_names_that_reach_sql_are_validated(target):
    source = parse_source("postgresql://app@db.example.com/app", PASSWORD, None, "--from-url")
    with pytest.raises(BackupError, match="is not a database or role name"):
        copy_in_command("copy", source, target)


@pytest.mark.parametrize("source, copy, differing", [
    ({"public.prayers": [3, "7"], "public.prayers_id_seq": [-1, "3"]},
     {"public.prayers": [3, "7"], "public.prayers_id_seq": [-1, "3"]}, []),
    ({"public.prayers": [3, "7"]}, {"public.prayers": [2, "5"]}, ["public.prayers: source 3 rows, checksum 7, "
                                                                  "copy 2 rows, checksum 5"]),
    ({"public.prayers": [3, "7"]}, {"public.prayers": [3, "8"]}, ["public.prayers: source 3 rows, checksum 7, "
                                                                  "copy 3 rows, checksum 8"]),
    ({"public.prayers": [3, "7"], "public.users": [1, "1"]}, {"public.prayers": [3, "7"]},
     ["public.users: source 1 rows, checksum 1, copy missing"]),
    ({"public.prayers_id_seq": [-1, "9"]}, {"public.prayers_id_seq": [-1, "3"]},
     ["public.prayers_id_seq: source last value 9, copy last value 3"]),
])
def test_every_table_and_sequence_must_match(source, copy, differing):
    assert [mismatch.describe() for mismatch in compare(source, copy)] == differing


@pytest.mark.parametrize("version_num, pg_dump, ok", [(150018, "17.6", True), (170006, "17.6", True),
                                                      (180001, "17.6", False), (90624, "15.18", True)])
def test_pg_dump_reads_its_own_major_version_and_older(version_num, pg_dump, ok):
    if ok:
        importing.check_versions(version_num, pg_dump, "db1")
    else:
        with pytest.raises(BackupError, match="runs PostgreSQL 18, newer than this host's pg_dump 17.6"):
            importing.check_versions(version_num, pg_dump, "db1")


def test_a_database_that_holds_rows_is_refused_without_replace():
    importing.refuse_rows([], "together_pray", "db1", replace=False)
    importing.refuse_rows(["public.prayers"], "together_pray", "db1", replace=True)
    with pytest.raises(BackupError, match="together_pray already holds rows \\(public.prayers\\); nothing was "
                                          "changed. --replace"):
        importing.refuse_rows(["public.prayers"], "together_pray", "db1", replace=False)


def test_progress_lines_are_read_as_they_come_and_every_line_is_kept():
    shown = []

    class Screen:
        def line(self, text):
            shown.append(text)

    sink = importing.progress_sink(Screen(), every=0)
    for chunk in (b'{"copied": 10485', b'760}\n{"copied": 20971520}\n{"source": ', b'{}}\n'):
        sink(chunk)
    assert sink.lines == ['{"copied": 10485760}', '{"copied": 20971520}', '{"source": {}}']
    assert [line.split(" in ")[0] for line in shown] == ["  copied 10.0 MiB", "  copied 20.0 MiB"]


# --- --from-dump ----------------------------------------------------------------------------------

SQL = (b"SET client_encoding = 'UTF8';\n"
       b"COPY public.prayers (id, author, body) FROM stdin;\n"
       b"1\tann\tpeace\n2\tbo\tpatience\n\\.\n"
       b"COPY public.\"Odd Name\" FROM stdin;\n\\.\n"
       b"SELECT pg_catalog.setval('public.prayers_id_seq', 2, true);\n"
       b"CREATE FUNCTION f() RETURNS void AS $$ COPY x FROM stdin; $$ LANGUAGE sql;\n")


def figures_of(sql: bytes) -> DumpFigures:
    figures = DumpFigures()
    for line in sql.splitlines(keepends=True):
        figures.line(line)
    return figures


def test_a_dumps_sql_gives_every_tables_rows_and_every_sequences_value():
    tables = figures_of(SQL).tables
    assert {name: value[0] for name, value in tables.items()} == {
        "public.prayers": 2, 'public."Odd Name"': 0, "public.prayers_id_seq": -1}
    assert tables["public.prayers_id_seq"][1] == "2, true"


@pytest.mark.parametrize("changed, equal", [
    (SQL.replace(b"1\tann\tpeace\n2\tbo\tpatience\n", b"2\tbo\tpatience\n1\tann\tpeace\n"), True),  # order is free
    (SQL.replace(b"patience", b"patiencE"), False),  # one byte
    (SQL.replace(b"2\tbo\tpatience\n", b""), False),  # a row less
    (SQL.replace(b"2, true", b"3, true"), False),  # a sequence further on
])
def test_the_checksum_sees_any_change_in_a_row_but_not_their_order(changed, equal):
    assert (figures_of(changed).tables == figures_of(SQL).tables) is equal


def test_data_that_ends_before_its_end_mark_is_noticed():
    assert figures_of(SQL[:SQL.index(b"\\.")]).table == "public.prayers"


@pytest.mark.parametrize("content, message", [
    (b"PGDMP\x01\x10\x00", None),
    (b"toc.dat\0".ljust(257, b"\0") + b"ustar\x0000".ljust(255, b"\0"), None),
    (b"--\n-- PostgreSQL database dump\n--\n", "is a plain SQL dump; .* pg_dump --format=custom"),
    (b"\x1f\x8b\x08\x00", "is not a pg_dump archive"),
    (b"", "is not a pg_dump archive"),
])
def test_only_an_archive_pg_restore_reads_is_taken(tmp_path, content, message):
    path = tmp_path / "paas.dump"
    path.write_bytes(content)
    if message is None:
        dump = check_dump(path)
        assert dump.remote.startswith("/var/lib/postgresql/vigil-import/import-") and dump.shown == str(path)
        command = copy_in_command("restore", dump.remote, Target("together_pray", "together_pray"))
        assert json.loads(command.stdin)["dump"] == dump.remote and "pgpass" not in json.loads(command.stdin)
    else:
        with pytest.raises(ConfigError, match=f"--from-dump: {path} {message}"):
            check_dump(path)


def test_a_missing_archive_is_named():
    with pytest.raises(ConfigError, match="--from-dump: /nonexistent/paas.dump is not a file"):
        check_dump(Path("/nonexistent/paas.dump"))


def test_a_table_of_hashable_types_is_hashed_by_its_columns_others_by_their_text():
    sql = copy_in_program.figures_sql([["public", "prayers"], ["public", "events"], ["odd schema", 'We"ird']],
                                      [["public", "prayers", 'id, author, body, "createdAt"']])
    parts = sql.split(" UNION ALL ")
    assert parts[0].endswith("""SELECT 'public.prayers', count(*), coalesce(sum(hash_record_extended(ROW(id, author, \
body, "createdAt"), 0)), 0) FROM "public"."prayers" r""")
    assert parts[1].endswith("""SELECT 'public.events', count(*), coalesce(sum(hashtextextended(r::text, 0)), 0) \
FROM "public"."events" r""")
    assert parts[2] == ("""SELECT 'odd schema.We"ird', count(*), coalesce(sum(hashtextextended(r::text, 0)), 0) \
FROM "odd schema"."We""ird" r""")
    assert parts[3].startswith("SELECT schemaname || '.' || sequencename, -1") and sql.count(";") == 6


def test_the_program_shipped_to_the_host_is_the_one_tested_here():
    assert COPY_IN == Path(copy_in_program.__file__).read_text()
    compile(COPY_IN, "copy_in_program", "exec")


@pytest.mark.parametrize("copied, dropped", [
    ({"source": {"public.prayers": [3, "7"]}, "copy": {"public.prayers": [3, "7"]}, "swapped": True}, False),
    ({"source": {"public.prayers": [3, "7"]}, "copy": {"public.prayers": [2, "5"]}, "swapped": False}, True),
    # The host's program and this machine must agree: equal figures the host did not swap are not a success.
    ({"source": {"public.prayers": [3, "7"]}, "copy": {"public.prayers": [3, "7"]}, "swapped": False}, True),
])
def test_a_copy_that_differs_is_dropped_and_the_apps_database_named_unchanged(copied, dropped):
    drops = []
    if not dropped:
        assert importing.checked(copied, lambda: drops.append(1), "db1", "together_pray") is copied
    else:
        with pytest.raises(BackupError, match="the scratch database was dropped, together_pray is unchanged"):
            importing.checked(copied, lambda: drops.append(1), "db1", "together_pray")
    assert drops == ([1] if dropped else [])
