"""The runbook actions that need no fleet: `backup` into the backup host's repository, table by table
(a fake backup host answers the commands it is sent)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.inventories import layout
from vigil.backup.repository import CONTENTS, WHY_BACKUP_FAILED
from vigil.core.connectors import Result
from vigil.incident import actions
from vigil.incident.engine import ActionFailed
from vigil.incident.runbooks import parse as parse_runbook

WITH_BACKUP_HOST = {"web": ["web1"], "db": ["db1"], "backup": ["backup1"]}
WITHOUT_BACKUP_HOST = {"web": ["web1"], "db": ["db1"]}
INCR = "20261203-100000F_20261203-110000I"


def info(*labels) -> str:
    """pgBackRest's `info --output=json` holding these backups, oldest first."""
    return json.dumps([{
        "name": "together-pray", "status": {"code": 0, "message": "ok"}, "db": [],
        "backup": [{"label": label, "type": "incr" if label.endswith("I") else "full",
                    "timestamp": {"start": 1796295600, "stop": 1796295605},
                    "info": {"size": 52_000_000, "repository": {"size": 9_000_000, "delta": 1_500_000}},
                    "annotation": {"vigil-label": "incident"}} for label in labels],
    }])


class BackupHost:
    """The backup host over one connection: what it was sent, and pgBackRest's answers."""

    def __init__(self, backup_exit: int, listed: tuple[str, ...]):
        self.backup_exit, self.listed, self.sent = backup_exit, listed, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, command, timeout=None):
        self.sent.append(command)
        if command.argv[0] == "pgbackrest":
            return Result(self.backup_exit, "", "" if self.backup_exit == 0 else
                          "ERROR: [082]: WAL segment 000000010000000000000007 was not archived before the 60000ms "
                          "timeout")
        if command.argv[2] == CONTENTS:
            return Result(0, info(*self.listed) + "\n@wal\n1796295700\n", "")
        assert command.argv[2] == WHY_BACKUP_FAILED
        return Result(0, " 42% 536870912\n", "")


def backup_step(label: str = "incident"):
    book = parse_runbook(
        f"description: t\nsteps:\n  - id: up\n    check: database\n    resolves: true\n"
        f"  - id: save\n    action: backup\n    label: {label}\n", Path("t.yml"))
    return book.steps[1]


# (the env's groups, pgBackRest's exit, what the repository lists after it, the summary or the failure)
CASES = [
    (WITH_BACKUP_HOST, 0, ("20261203-100000F", INCR),
     f"backup {INCR} (incr) on backup1 (52.0 MB, 1.5 MB stored)"),
    # The repository's first backup: pgBackRest makes the incr asked for a full one.
    (WITH_BACKUP_HOST, 0, ("20261203-100000F",), "backup 20261203-100000F (full) on backup1 (52.0 MB, 1.5 MB stored)"),
    (WITH_BACKUP_HOST, 82, (), ActionFailed("backup1: pgBackRest's backup failed: ERROR: [082]: WAL segment "
                                            "000000010000000000000007 was not archived before the 60000ms timeout")),
    (WITHOUT_BACKUP_HOST, 0, (), ActionFailed("the runbook's backup action needs a backup host: inventory/sandbox.yml "
                                              "has no host in group `backup`")),
]


@pytest.mark.parametrize("groups, backup_exit, listed, expected", CASES,
                         ids=["incr", "first is a full", "pgbackrest fails", "no backup host"])
def test_the_backup_action_backs_up_into_the_backup_hosts_repository(monkeypatch, groups, backup_exit, listed,
                                                                       expected):
    inventory = layout(groups)
    host, connected = BackupHost(backup_exit, listed), []

    def connect(inventory, target):
        connected.append(target.name)
        return host

    monkeypatch.setattr(actions, "connect", connect)
    hosts = SimpleNamespace(env="sandbox", inventory=inventory)
    if isinstance(expected, ActionFailed):
        with pytest.raises(ActionFailed) as failed:
            actions.act_backup(hosts, backup_step(), None)
        assert str(failed.value).startswith(str(expected))
    else:
        assert actions.act_backup(hosts, backup_step(), None) == expected
    # Only the backup host is ever asked; without one, nothing is.
    assert connected == (["backup1"] if "backup" in groups else [])
    if connected:
        asked = host.sent[0]
        assert asked.argv == ("pgbackrest", "--stanza=together-pray", "--type=incr",
                              "--annotation=vigil-label=incident", "backup")
        assert (asked.sudo, asked.as_user) == (True, "pgbackrest")


def test_the_label_the_runbook_gives_is_the_backups_annotation(monkeypatch):
    host = BackupHost(0, (INCR,))
    monkeypatch.setattr(actions, "connect", lambda inventory, target: host)
    actions.act_backup(SimpleNamespace(env="sandbox", inventory=layout(WITH_BACKUP_HOST)), backup_step("pre-fix"), None)
    assert "--annotation=vigil-label=pre-fix" in host.sent[0].argv
