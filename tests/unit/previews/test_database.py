"""A preview's database on the database host: what is asked of it, in order, and what a failure leaves
(a recording host stands in for psql; the e2e tests run it on PostgreSQL)."""

import pytest

from vigil.backup.access import BackupError
from vigil.core.connectors import Result
from vigil.core.errors import ConfigError
from vigil.core.inventory import Host
from vigil.previews import database
from vigil.previews.database import PreviewError, prepare

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
        if "WITH LOGIN PASSWORD" in sql:
            # Joined the group before it may log in, all in one transaction.
            assert sql.index("GRANT") < sql.index("WITH LOGIN") and "BEGIN;" in sql and "COMMIT;" in sql
            self.steps.append("role")
            return Result(0, f"new {'f' if 'preview_a' in self.databases else 't'}\n", "")
        if ":alone" in sql:
            self.steps.append("drop role")
            return Result(0, "", "")
        for statement in ("CREATE DATABASE", "REVOKE CONNECT", "DROP DATABASE"):
            if statement in sql:
                self.steps.append(statement.lower())
                return Result(0, "was t\n" if statement == "DROP DATABASE" else "", "")
        raise AssertionError(sql)


def failing_branch(name):
    raise BackupError("vps3: the branch preview_a was not made: a database named preview_a already exists")


@pytest.mark.parametrize("databases, fill, branch, fill_fails, made, steps", [
    # New, with a backup host: a branch, then only its owner may connect.
    ((), True, lambda name: True, False, True, ["role", "revoke connect"]),
    # New, a backup host holding no backup yet: the live copy.
    ((), True, lambda name: False, False, True, ["role", "create database", "copy live", "revoke connect"]),
    # New, no backup host: created and filled from the live database in one snapshot.
    ((), True, None, False, True, ["role", "create database", "copy live", "revoke connect"]),
    # Up already: the role's password is new, its data kept.
    (("preview_a",), True, None, False, False, ["role"]),
])
def test_a_new_preview_database_is_branched_else_copied_and_an_existing_one_kept(
        databases, fill, branch, fill_fails, made, steps):
    host = DatabaseHost(databases, fill_fails)
    assert prepare(host, HOST, "preview_a", "a-password", fill, branch, "together_pray") == made
    assert host.steps == steps


@pytest.mark.parametrize("branch, fill_fails, error, steps", [
    # The branch program dropped what it made (or another run made it): only a role left alone goes.
    (failing_branch, False, BackupError, ["role", "drop role"]),
    # What this run created, it drops.
    (None, True, PreviewError, ["role", "create database", "copy live", "drop database"]),
])
def test_a_fill_that_fails_drops_what_it_made_and_nothing_else(branch, fill_fails, error, steps):
    host = DatabaseHost(fill_fails=fill_fails)
    with pytest.raises(error):
        prepare(host, HOST, "preview_a", "a-password", True, branch, "together_pray")
    assert host.steps == steps


@pytest.mark.parametrize("at, answer, made, data", [
    ("latest", {"target": "latest", "backup": "20261205-084938F", "last_transaction": "2026-12-05 09:04:29+00"},
     True, "together_pray as of latest (backup 20261205-084938F, last transaction 2026-12-05 09:04:29+00)"),
    # A backup host holding no backup yet: the live copy, and why.
    ("latest", ConfigError("vps3 holds no backup yet: nothing to restore"), False,
     "together_pray copied live (vps3 holds no backup yet: nothing to restore)"),
])
def test_a_seed_branches_where_it_can_and_says_where_the_data_came_from(monkeypatch, at, answer, made, data):
    def make_branch(inventory, repository, moment, name, owner):
        assert owner == name == "preview_a"
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(database, "make_branch", make_branch)
    seed = database.Seed("together_pray", object(), at, database.parse_target(at))
    assert seed.branch(None, "preview_a") == made
    assert seed.describe(made=True) == data


def test_a_moment_that_cannot_be_had_is_an_error_not_a_live_copy(monkeypatch):
    def make_branch(*args, **kwargs):
        raise ConfigError("--at: no backup ended before 2026-12-01 00:00:00+00")

    monkeypatch.setattr(database, "make_branch", make_branch)
    seed = database.Seed("together_pray", object(), "2026-12-01T00:00:00Z", database.parse_target("latest"))
    with pytest.raises(ConfigError, match="no backup ended before"):
        seed.branch(None, "preview_a")
