"""PostgreSQL: settings, roles, databases and pg_hba.conf as facts, every query of a batch asked in one psql."""

from __future__ import annotations

import base64
import re

from vigil.core.commands import Command, script
from vigil.core.facts import Fact, Together

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def identifier(name: str) -> str:
    """`name` if it is a role or database name vigil puts in SQL unquoted, else ValueError."""
    if not IDENTIFIER.match(name):
        raise ValueError(f"not a PostgreSQL identifier vigil accepts ([a-z_][a-z0-9_]*): {name!r}")
    return name


def psql(sql: str) -> Command:
    """psql as the postgres superuser, one statement, unaligned tuples only; `sql` holds no secret."""
    return Command(("psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql), as_user="postgres")


def sql_literal(value: str) -> str:
    """`value` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


# Between the answers of queries asked in one psql (ON_ERROR_STOP: a failure answers for none of them).
QUERY_BREAK = "@@vigil-next-query"


def _queries_command(queries: tuple[str, ...]) -> Command:
    argv = ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
    for index, query in enumerate(queries):
        argv += (["-c", f"select '{QUERY_BREAK}'"] if index else []) + ["-c", query]
    return Command(tuple(argv), as_user="postgres")


def _split_queries(stdout: str, status: int, count: int) -> list[str]:
    if status != 0:
        return [""] * count  # the server did not answer: each fact's parser sees the status
    parts = [[]]
    for line in stdout.splitlines():
        if line == QUERY_BREAK:
            parts.append([])
        else:
            parts[-1].append(line + "\n")
    if len(parts) != count:
        raise ValueError(f"psql answered {len(parts)} queries, not {count}")
    return ["".join(part) for part in parts]


def psql_query(key: str, sql: str, parse) -> Fact:
    """A fact read by one query as the postgres superuser; a batch asks all of them in one psql."""
    return Fact(key, psql(sql), parse, together=Together("psql-queries", sql, _queries_command, _split_queries))


def parse_settings(stdout: str, status: int) -> dict[str, str] | None:
    if status != 0:
        return None  # not installed or not running yet
    return dict(line.split("|", 1) for line in stdout.splitlines() if "|" in line)


def settings_fact(names: list[str]) -> Fact:
    listed = ", ".join(sql_literal(name) for name in sorted(names))
    return psql_query(f"postgresql:settings:{','.join(sorted(names))}",
                      f"select name, setting from pg_settings where name in ({listed})", parse_settings)


def parse_role(stdout: str, status: int) -> tuple[bool, str] | None:
    """(exists, SCRAM verifier or '') of a role; None when the server does not answer."""
    if status != 0:
        return None
    line = stdout.strip()
    return (True, line.split("|", 1)[1]) if line.startswith("role|") else (False, "")


def role_fact(name: str) -> Fact:
    return psql_query(
        f"postgresql:role:{name}",
        f"select 'role', coalesce(rolpassword, '') from pg_authid where rolname = {sql_literal(identifier(name))}",
        parse_role,
    )


def parse_database(stdout: str, status: int) -> str | None:
    """The database's owner, '' when it does not exist, None when the server does not answer."""
    return None if status != 0 else stdout.strip()


def database_fact(name: str) -> Fact:
    return psql_query(
        f"postgresql:database:{name}",
        f"select pg_get_userbyid(datdba) from pg_database where datname = {sql_literal(identifier(name))}",
        parse_database,
    )


def parse_hba(stdout: str, status: int) -> tuple[str, str] | None:
    """(path of pg_hba.conf, its content); None when the server does not answer."""
    lines = stdout.split("\n")
    if status != 0 or len(lines) < 2:
        return None
    try:
        return lines[0], base64.b64decode(lines[1], validate=True).decode()
    except ValueError:
        return None


def hba_fact() -> Fact:
    # The file's path depends on the server's major version (/etc/postgresql/15/main on Debian 12),
    # so the server says where it is, in the same round trip as the content (base64: byte-exact).
    return Fact("postgresql:hba", script('f=$(psql -X -t -A -c "show hba_file") && test -n "$f" || exit 3; '
                                         'printf "%s\\n" "$f"; base64 -w0 -- "$f"', as_user="postgres"), parse_hba)


def parse_recovery(stdout: str, status: int) -> bool | None:
    """Whether the server is a replica (in recovery); None when it does not answer."""
    return None if status != 0 else stdout.strip() == "t"


def recovery_fact() -> Fact:
    return psql_query("postgresql:in-recovery", "select pg_is_in_recovery()", parse_recovery)
