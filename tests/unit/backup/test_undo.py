"""deploy.rollback --restore-point: what it reads from a host is checked, and every refusal comes before
the rollback or the restore touches anything."""

import json
import re

import pytest

from tests.support.inventories import layout
from vigil.backup import undo
from vigil.backup.access import BackupError
from vigil.backup.repository import Backup, Contents
from vigil.core.errors import ConfigError, ExitCode
from vigil.deploy.safety import parse_serving_point

RECORD = {"name": "vigil-migrate-20261203T144320Z", "at": "2026-12-03T14:43:20Z", "timeline": 2, "release": "r2",
          "restore": "invoke backup.restore vigil-migrate-20261203T144320Z --timeline=2 --env=staging"}


@pytest.mark.parametrize("answer, found", [
    ("r2\n" + json.dumps(RECORD), ("r2", RECORD)),
    ("r2\n", ("r2", None)),  # the serving release ran no migration
    ("", (None, None)),  # nothing serves
    ("r2\n{not json", ("r2", None)),
    ("r3\n" + json.dumps(RECORD), ("r3", None)),  # a record of another release than the one serving
    ("r2\n" + json.dumps({**RECORD, "name": "vigil-migrate-x; reboot"}), ("r2", None)),
    ("r2\n" + json.dumps({**RECORD, "name": "../../etc/passwd"}), ("r2", None)),
    ("r2\n" + json.dumps({**RECORD, "name": "vigil-migrate-20261399T256099Z"}), ("r2", None)),  # no such time
    ("r2\n" + json.dumps({**RECORD, "timeline": "2"}), ("r2", None)),
    ("r2\n" + json.dumps({**RECORD, "timeline": True}), ("r2", None)),
    ("r2\n" + json.dumps({**RECORD, "timeline": 0}), ("r2", None)),
    ("r2\n" + json.dumps(["not", "an", "object"]), ("r2", None)),
])
def test_a_serving_releases_restore_point_record_is_read_never_trusted(answer, found):
    assert parse_serving_point(answer) == found


def never(*args, **kwargs):
    raise AssertionError("reached after a refusal")


def test_without_a_backup_host_it_is_refused_before_any_host_is_asked(monkeypatch):
    monkeypatch.setattr(undo, "load_inventory", lambda env: layout({"web": ["web1"], "db": ["web1"]}))
    monkeypatch.setattr(undo, "serving_restore_point", never)
    with pytest.raises(ConfigError, match="--restore-point needs a backup host .* inventory/sandbox.yml has none"):
        undo.undo_migrations_by_restore("sandbox", "backend", None, True, print, never)


class NoConnection:
    """Where the repository's host would be asked: its answer is given straight (read_contents)."""

    def __init__(self, inventory, host):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# The point was made at 14:43:20 (epoch 1796309000); backups that ended before or after it.
POINT_AT = 1796309000.0
BEFORE, AFTER = Backup("20261203-140000F", "full", 0, POINT_AT - 600, 1, 1), Backup("x", "full", 0, POINT_AT + 60, 1, 1)


def with_repository(monkeypatch, backups, newest_wal):
    inventory = layout({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]})
    monkeypatch.setattr(undo, "load_inventory", lambda env: inventory)
    monkeypatch.setattr(undo, "serving_restore_point", lambda env, service, limit: ("web1", RECORD))
    monkeypatch.setattr(undo, "connect", NoConnection)
    monkeypatch.setattr(undo, "read_contents", lambda transport, repository: Contents(0, "ok", backups, newest_wal))


@pytest.mark.parametrize("backups, newest_wal, refusal", [
    ([AFTER], POINT_AT + 120, "--restore-point: 2026-12-03 14:43:20+00 is outside the window"),  # expired since
    ([BEFORE], POINT_AT - 60, "--restore-point: 2026-12-03 14:43:20+00 is outside the window"),  # never archived
    ([], None, "holds no backup yet"),
])
def test_a_point_the_repository_no_longer_reaches_is_refused_before_anything_changes(monkeypatch, backups,
                                                                                    newest_wal, refusal):
    with_repository(monkeypatch, backups, newest_wal)
    monkeypatch.setattr(undo.pitr, "restore_to", never)
    with pytest.raises(ConfigError, match=re.escape(refusal)):
        undo.undo_migrations_by_restore("sandbox", "backend", None, True, print, never)


def test_without_confirmation_nothing_changes_and_the_question_says_what_is_lost(monkeypatch):
    with_repository(monkeypatch, [BEFORE], POINT_AT + 120)
    monkeypatch.setattr(undo.pitr, "restore_to", never)
    monkeypatch.setattr(undo.restoring.sys.stdin, "isatty", lambda: True)
    asked = []
    with pytest.raises(ConfigError, match="not confirmed; nothing was changed"):
        undo.undo_migrations_by_restore("staging", "backend", None, False, print, never,
                                        prompt=lambda question: asked.append(question) or "no")
    assert "made restore point vigil-migrate-20261203T144320Z" in asked[0]
    assert "losing every write since" in asked[0] and asked[0].endswith("Type 'staging' to go on: ")


def test_the_code_rolls_back_after_the_restore_and_a_failed_rollback_keeps_maintenance_on(monkeypatch):
    with_repository(monkeypatch, [BEFORE], POINT_AT + 120)
    order = []

    def restore_to(env, inventory, repository, target, say, before_service=None):
        order.append(("restore", target.point, target.timeline))
        before_service()  # where pitr runs it: restored, maintenance mode still on
        order.append("maintenance off")
        return {"health": {}}

    monkeypatch.setattr(undo.pitr, "restore_to", restore_to)
    undo.undo_migrations_by_restore("staging", "backend", None, True, print,
                                    lambda: order.append("rollback") or (ExitCode.OK, []))
    assert order == [("restore", "vigil-migrate-20261203T144320Z", 2), "rollback", "maintenance off"]



def held_lock():
    raise ConfigError("vps1: a deploy of backend is running (lock held by ci); wait for it or pass --lock-wait")


@pytest.mark.parametrize("roll_back, why", [
    (lambda: (ExitCode.HOST_FAILED, []), "it exited host_failed; its recap says where"),
    (held_lock, "vps1: a deploy of backend is running (lock held by ci)"),  # refused before it began
])
def test_a_rollback_that_fails_after_the_restore_keeps_maintenance_on_and_says_so(monkeypatch, roll_back, why):
    with_repository(monkeypatch, [BEFORE], POINT_AT + 120)
    order = []

    def restore_to(env, inventory, repository, target, say, before_service=None):
        order.append("restore")
        before_service()
        order.append("maintenance off")

    monkeypatch.setattr(undo.pitr, "restore_to", restore_to)
    with pytest.raises(BackupError) as failed:
        undo.undo_migrations_by_restore("staging", "backend", None, True, print, roll_back)
    assert order == ["restore"]
    assert failed.value.message.startswith(
        f"the database was restored to vigil-migrate-20261203T144320Z, but rolling backend back failed ({why}")
    assert "maintenance mode stays on" in failed.value.message
