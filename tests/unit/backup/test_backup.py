"""The control machine's side of backups: every task that needs a backup host refuses, before it
connects anywhere, in an env without one; decryption of an export writes nothing on failure; a
restore is confirmed."""

import hashlib
import json

import pyrage
import pytest
from invoke import Context
from invoke.exceptions import Exit
from pyrage import x25519

from tests.support.inventories import layout
from vigil.backup.access import BackupError
from vigil.backup.restore import confirm
from vigil.backup.transfer import decrypt
from vigil.cli import backup as tasks
from vigil.core.errors import ConfigError

DUMP = b"PGDMP" + bytes(range(256)) * 40
DUMP_SHA256 = hashlib.sha256(DUMP).hexdigest()


def encrypted(identity) -> bytes:
    return pyrage.encrypt(DUMP, [identity.to_public()])


@pytest.mark.parametrize("task, args, kwargs", [
    (tasks.create, (), {}),
    (tasks.list_, (), {}),
    (tasks.verify, ("latest",), {}),
    (tasks.restore, ("latest",), {"yes": True}),
    (tasks.branch, ("yesterday",), {}),
    (tasks.prune, (), {"dry_run": True}),
    (tasks.pull, ("latest",), {}),
])
def test_every_task_on_backups_refuses_an_env_without_a_backup_host_before_connecting(
        monkeypatch, capsys, task, args, kwargs):
    monkeypatch.setattr(tasks, "load_inventory", lambda env: layout({"web": ["web1"], "db": ["db1"]}))
    monkeypatch.setattr(tasks, "connect", lambda *a, **k: pytest.fail("connected in an env without a backup host"))
    with pytest.raises(Exit) as refused:
        task(Context(), *args, **kwargs)
    assert refused.value.code != 0
    name = task.name.replace("list_", "list")
    assert (f"error: backup.{name} needs a backup host: inventory/sandbox.yml has no host in group `backup`"
            in capsys.readouterr().err)


def test_decrypting_with_the_wrong_key_writes_nothing_and_the_right_one_checks_the_dump(tmp_path):
    identity = x25519.Identity.generate()
    path = tmp_path / "production-x.dump.age"
    path.write_bytes(encrypted(identity))
    path.with_suffix(".json").write_text(json.dumps({"dump_sha256": DUMP_SHA256}))
    with pytest.raises(BackupError, match="cannot decrypt it with the identities given"):
        decrypt(path, [x25519.Identity.generate()], tmp_path / "out.dump")
    assert not (tmp_path / "out.dump").exists() and not list(tmp_path.glob("*.partial"))
    assert decrypt(path, [identity], tmp_path / "out.dump").read_bytes() == DUMP
    path.with_suffix(".json").write_text(json.dumps({"dump_sha256": "0" * 64}))
    with pytest.raises(BackupError, match="not the dump the host recorded"):
        decrypt(path, [identity], tmp_path / "again.dump")
    assert not (tmp_path / "again.dump").exists()
    path.with_suffix(".json").unlink()
    with pytest.raises(BackupError, match="without the dump's checksum"):
        decrypt(path, [identity], tmp_path / "again.dump")
    assert not (tmp_path / "again.dump").exists()


def test_a_restore_without_a_terminal_needs_yes(monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(ConfigError, match="pass --yes"):
        confirm("production", yes=False)
    confirm("production", yes=True)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    with pytest.raises(ConfigError, match="not confirmed"):
        confirm("production", yes=False, prompt=lambda text: "staging")
    confirm("production", yes=False, prompt=lambda text: "production")
