"""A preview's database on the database host: what is asked of it, in order, and what a failure leaves
(a recording host stands in for psql; the e2e tests run it on PostgreSQL)."""

import pytest

from vigil.backup.access import BackupError
from vigil.core.connectors import Result
from vigil.core.inventory import Host
from vigil.previews.lifecycle import PreviewError, prepare_database

HOST = Host("vps1", "10.0.0.1", 22, "deploy", None, ("db",), 5, 30)


class DatabaseHost:
    """Answers psql as a server holding `databases` would; records each step by what it does."""

    def __init__(self, databases=(), fill_fails=False):
        self.databases, self.fill_fails, self.steps = set(databases), fill_fails, []

    def run(self, command, timeout=None):
        if command.argv[:2] == ("bash", "-c"):
            self.steps.append("copy live")
            return Result(1 if self.fill_fails else 0, "", "pg_dump: error: connection lost" if self.fill_fails else "")
        sql = command.stdin.decode()
        assert "a-password" not in " ".join(command.argv)  # the password travels on stdin only
        if "CREATE ROLE %I LOGIN" in sql:
            self.steps.append("role")
            return Result(0, f"new {'f' if 'preview_a' in self.databases else 't'}\n", "")
        for statement in ("CREATE DATABASE", "REVOKE CONNECT", "DROP DATABASE"):
            if statement in sql:
                self.steps.append(statement.lower())
                return Result(0, "was t\n" if statement == "DROP DATABASE" else "", "")
        raise AssertionError(sql)


def failing_branch(name):
    raise BackupError("vps3: the branch preview_a was not made: no backup")


@pytest.mark.parametrize("databases, fill, branch, fill_fails, made, steps", [
    # New, with a backup host: a branch, then only its owner may connect.
    ((), True, lambda name: None, False, True, ["role", "revoke connect"]),
    # New, no backup host: created and filled from the live database in one snapshot.
    ((), True, None, False, True, ["role", "create database", "copy live", "revoke connect"]),
    # Up already: the role's password is new, its data kept.
    (("preview_a",), True, None, False, False, ["role"]),
])
def test_a_new_preview_database_is_branched_else_copied_and_an_existing_one_kept(
        databases, fill, branch, fill_fails, made, steps):
    host = DatabaseHost(databases, fill_fails)
    assert prepare_database(host, HOST, "preview_a", "a-password", "together_pray", fill, branch) == made
    assert host.steps == steps


@pytest.mark.parametrize("branch, fill_fails, error, steps", [
    (failing_branch, False, BackupError, ["role", "drop database"]),
    (None, True, PreviewError, ["role", "create database", "copy live", "drop database"]),
])
def test_a_fill_that_fails_leaves_neither_database_nor_role(branch, fill_fails, error, steps):
    host = DatabaseHost(fill_fails=fill_fails)
    with pytest.raises(error):
        prepare_database(host, HOST, "preview_a", "a-password", "together_pray", True, branch)
    assert host.steps == steps

