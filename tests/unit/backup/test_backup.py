"""The control machine's side of backups: pulls checked on arrival, decryption that writes nothing on failure,
and the restore's migrations check."""

import hashlib
import json

import pyrage
import pytest
from pyrage import x25519

from vigil.backup.helper import BackupError, check_id
from vigil.backup.restore import confirm, migration_drift
from vigil.backup.transfer import decrypt, pull
from vigil.core.connectors import Result
from vigil.core.errors import ConfigError
from vigil.core.inventory import Host

HOST = Host("db1", "10.0.0.5", 22, "ops", None, ("db",), 5, 30)
DUMP = b"PGDMP" + bytes(range(256)) * 40
META = [{"id": "20261126T031500Z-scheduled", "sha256": hashlib.sha256(DUMP).hexdigest(), "status": "verified"}]


class ExportingHost:
    """Answers `vigil-backup export` with `sent` bytes and the checksum of `claimed` bytes, and `list` with META."""

    def __init__(self, sent: bytes, claimed: bytes, status: int = 0):
        self.sent, self.claimed, self.status = sent, claimed, status

    def run(self, command, timeout=None, sink=None):
        if command.argv[1] == "list":
            return Result(0, json.dumps(META), "")
        for start in range(0, len(self.sent), 1000):
            sink(self.sent[start:start + 1000])
        return Result(
            self.status,
            "",
            json.dumps({"sha256": hashlib.sha256(self.claimed).hexdigest(), "size": len(self.claimed)}) + "\n",
        )


def encrypted(identity) -> bytes:
    return pyrage.encrypt(DUMP, [identity.to_public()])


def test_a_pulled_backup_is_named_only_when_it_arrived_whole(tmp_path):
    identity = x25519.Identity.generate()
    data = encrypted(identity)
    path = pull(ExportingHost(data, data), HOST, "production", META[0]["id"], [str(identity.to_public())], tmp_path)
    assert path.read_bytes() == data and path.name == f"production-{META[0]['id']}.dump.age"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert (
        sidecar["encrypted_sha256"] == hashlib.sha256(data).hexdigest() and sidecar["dump_sha256"] == META[0]["sha256"]
    )


@pytest.mark.parametrize("sent, claimed, status, message", [
    (b"half", b"half and the rest", 0, "arrived damaged"),
    (b"all", b"all", 1, "export of"),
])
def test_a_damaged_or_failed_pull_keeps_nothing(tmp_path, sent, claimed, status, message):
    with pytest.raises(BackupError, match=message):
        pull(ExportingHost(sent, claimed, status), HOST, "production", META[0]["id"], ["age1x"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_decrypting_with_the_wrong_key_writes_nothing_and_the_right_one_checks_the_dump(tmp_path):
    identity = x25519.Identity.generate()
    path = tmp_path / "production-x.dump.age"
    path.write_bytes(encrypted(identity))
    path.with_suffix(".json").write_text(json.dumps({"dump_sha256": META[0]["sha256"]}))
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


@pytest.mark.parametrize("restored, files, warnings", [
    (["1764000000000"], ["1764000000000-CreatePrayers.js", "1764000000000-CreatePrayers.js.map"], []),
    (["1764000000000"], ["1764000000000-CreatePrayers.js", "1764000000002-AddMood.js"],
     ["the serving release has migrations the restored database lacks (1764000000002)"]),
    (["1764000000000", "1764000000002"], ["1764000000000-CreatePrayers.js"],
     ["the restored database has migrations the serving release does not know (1764000000002)"]),
])
def test_a_restore_warns_when_the_database_and_the_release_disagree_on_migrations(restored, files, warnings):
    found = migration_drift(restored, files)
    assert len(found) == len(warnings) and all(found[n].startswith(text) for n, text in enumerate(warnings))


@pytest.mark.parametrize("value", ["latest", "../../etc/passwd", "20261126T031500Z-", "x; rm -rf /"])
def test_a_backup_id_is_checked_before_it_reaches_a_host(value):
    with pytest.raises(ConfigError, match="is not a backup id"):
        check_id(value)


def test_a_restore_without_a_terminal_needs_yes(monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(ConfigError, match="pass --yes"):
        confirm("production", yes=False)
    confirm("production", yes=True)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    with pytest.raises(ConfigError, match="not confirmed"):
        confirm("production", yes=False, prompt=lambda text: "staging")
    confirm("production", yes=False, prompt=lambda text: "production")
