"""deploy.rollback --restore-point: what it reads from a host is checked, and every refusal comes before
the rollback or the restore touches anything."""

import json
import re

import pytest

from tests.support.inventories import layout
from vigil.backup import undo
from vigil.backup.repository import Backup, Contents
from vigil.core.errors import ConfigError, ExitCode
from vigil.deploy.safety import parse_serving_point

RECORD = {"name": "vigil-migrate-20261203T144320Z", "at": "2026-12-03T14:43:20Z", "timeline": 2, "release": "r2",
          "restore": "invoke backup.restore vigil-migrate-20261203T144320Z --timeline=2 --env=staging"}


@pytest.mark.parametrize("answer, found", [
    (json.dumps(RECORD), True),
    ("", False),  # the serving release ran no migration
    ("{not json", False),
    (json.dumps({**RECORD, "name": "vigil-migrate-x; reboot"}), False),
    (json.dumps({**RECORD, "name": "../../etc/passwd"}), False),
    (json.dumps({**RECORD, "timeline": "2"}), False),
    (json.dumps({**RECORD, "timeline": True}), False),
    (json.dumps({**RECORD, "timeline": 0}), False),
    (json.dumps(["not", "an", "object"]), False),
])
def test_a_serving_releases_restore_point_record_is_read_never_trusted(answer, found):
    assert parse_serving_point(answer) == (RECORD if found else None)


def never(*args, **kwargs):
    raise AssertionError("reached after a refusal")


def test_without_a_backup_host_it_is_refused_before_any_host_is_asked(monkeypatch):
    monkeypatch.setattr(undo, "load_inventory", lambda env: layout({"web": ["web1"], "db": ["web1"]}))
    monkeypatch.setattr(undo, "serving_restore_point", never)
    with pytest.raises(ConfigError, match="--restore-point needs a backup host .* inventory/sandbox.yml has none"):
        undo.undo_migrations_by_restore("sandbox", "backend", None, True, print, never)


class NoConnection:
    """Where the repository's host would be asked: its answer is `contents`, given straight."""

    def __init__(self, inventory, host):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# The point was made at 14:43:20 (epoch 1796309000); backups that ended before or after it.
POINT_AT = 1796309000.0
BEFORE, AFTER = Backup("20261203-140000F", "full", 0, POINT_AT - 600, 1, 1), Backup("x", "full", 0, POINT_AT + 60, 1, 1)


@pytest.mark.parametrize("backups, newest_wal, refusal", [
    ([AFTER], POINT_AT + 120, "--restore-point: 2026-12-03 14:43:20+00 is outside the window"),  # expired since
    ([BEFORE], POINT_AT - 60, "--restore-point: 2026-12-03 14:43:20+00 is outside the window"),  # never archived
    ([], None, "holds no backup yet"),
])
def test_a_point_the_repository_no_longer_reaches_is_refused_before_the_rollback(monkeypatch, backups, newest_wal,
                                                                                 refusal):
    inventory = layout({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]})
    monkeypatch.setattr(undo, "load_inventory", lambda env: inventory)
    monkeypatch.setattr(undo, "serving_restore_point", lambda env, service, limit: ("web1", RECORD))
    monkeypatch.setattr(undo, "connect", NoConnection)
    monkeypatch.setattr(undo, "read_contents", lambda transport, repository: Contents(0, "ok", backups, newest_wal))
    monkeypatch.setattr(undo.pitr, "restore_to", never)
    with pytest.raises(ConfigError, match=re.escape(refusal)):
        undo.undo_migrations_by_restore("sandbox", "backend", None, True, print, never)


def test_a_failed_rollback_leaves_the_database_as_it_was(monkeypatch):
    inventory = layout({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]})
    monkeypatch.setattr(undo, "load_inventory", lambda env: inventory)
    monkeypatch.setattr(undo, "serving_restore_point", lambda env, service, limit: ("web1", RECORD))
    monkeypatch.setattr(undo, "connect", NoConnection)
    monkeypatch.setattr(undo, "read_contents",
                        lambda transport, repository: Contents(0, "ok", [BEFORE], POINT_AT + 120))
    monkeypatch.setattr(undo.pitr, "restore_to", never)
    said = []
    code, results, report = undo.undo_migrations_by_restore(
        "sandbox", "backend", None, True, said.append, lambda: (ExitCode.HOST_FAILED, []))
    assert (code, report) == (ExitCode.HOST_FAILED, None)
    assert said[-1] == "the rollback failed: the database was not restored"


def test_a_restore_refused_after_the_rollback_says_the_code_is_back_and_how_to_finish(monkeypatch):
    inventory = layout({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]})
    monkeypatch.setattr(undo, "load_inventory", lambda env: inventory)
    monkeypatch.setattr(undo, "serving_restore_point", lambda env, service, limit: ("web1", RECORD))
    monkeypatch.setattr(undo, "connect", NoConnection)
    monkeypatch.setattr(undo, "read_contents",
                        lambda transport, repository: Contents(0, "ok", [BEFORE], POINT_AT + 120))

    def busy(*args, **kwargs):
        raise ConfigError("backup1: a backup is running; restore once it is done")

    monkeypatch.setattr(undo.pitr, "restore_to", busy)
    with pytest.raises(ConfigError) as refused:
        undo.undo_migrations_by_restore("staging", "backend", None, True, print, lambda: (ExitCode.OK, []))
    assert refused.value.message == (
        "backend was rolled back, but the database was not restored to vigil-migrate-20261203T144320Z: backup1: a "
        "backup is running; restore once it is done (to finish: invoke backup.restore "
        "vigil-migrate-20261203T144320Z --timeline=2 --env=staging)")
