"""vigil.backup.offsite: a backup set copied off the backup host as a repository of its own. The packing
program runs for real here, on a repository laid out as pgBackRest lays one out."""

import dataclasses
import hashlib
import io
import json
import re
import subprocess
import tarfile

import pytest

from tests.support.inventories import layout
from vigil.backup.access import BackupError
from vigil.backup.offsite import check_label, pack_command, pull_set
from vigil.backup.repository import Backup, find_repository, parse_contents
from vigil.core.connectors import Result
from vigil.core.errors import ConfigError

STANZA = "together-pray"
FULL = Backup("20261203-100000F", "full", 1796292000, 1796292030, 1, 1, wal_start="0000000100000000000000FE",
              wal_stop="000000010000000100000000", archive_id="17-1")
INCR = Backup("20261203-100000F_20261203-110000I", "incr", 1796295600, 1796295605, 1, 1,
              wal_start="000000010000000100000002", wal_stop="000000010000000100000002",
              references=("20261203-100000F",), archive_id="17-1")
SEGMENTS = ("0000000100000000000000FD", "0000000100000000000000FE", "0000000100000000000000FF",
            "000000010000000100000000", "000000010000000100000001", "000000010000000100000002",
            "000000020000000100000002")


def repository_tree(root, segments=SEGMENTS):
    """The files pgBackRest keeps for two sets (a full and an incr on it) and their WAL."""
    for path in (f"backup/{STANZA}/backup.info", f"backup/{STANZA}/backup.info.copy",
                 f"archive/{STANZA}/archive.info", f"archive/{STANZA}/archive.info.copy",
                 f"backup/{STANZA}/{FULL.label}/backup.manifest", f"backup/{STANZA}/{FULL.label}/bundle/1",
                 f"backup/{STANZA}/{INCR.label}/backup.manifest", f"backup/{STANZA}/{INCR.label}/bundle/1",
                 f"backup/{STANZA}/20261202-100000F/backup.manifest",
                 f"archive/{STANZA}/17-1/00000002.history"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(f"Salted__ {path}")
    for segment in segments:
        directory = root / "archive" / STANZA / "17-1" / segment[:16]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{segment}-{'a' * 40}.zst").write_bytes(b"Salted__ wal")
    return root


def pack(root, backup):
    repository = dataclasses.replace(find_repository(layout({"db": ["db1"], "backup": ["backup1"]})), path=str(root))
    command = pack_command(repository, backup)
    assert command.as_user == "pgbackrest" and command.argv[:2] == ("python3", "-I")
    return subprocess.run(command.argv, capture_output=True)


@pytest.mark.parametrize("backup, sets, wal", [
    # A full's WAL, across a log file's end (…00FF to …0100 0000).
    (FULL, [FULL.label], ["0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000"]),
    # An incr takes the full it builds on along; its WAL only, on its own timeline.
    (INCR, [FULL.label, INCR.label], ["000000010000000100000002"]),
])
def test_a_set_is_packed_with_the_sets_it_builds_on_its_wal_and_the_repositorys_info(tmp_path, backup, sets, wal):
    done = pack(repository_tree(tmp_path), backup)
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stderr.decode().strip().splitlines()[-1])
    names = tarfile.open(fileobj=io.BytesIO(done.stdout)).getnames()
    assert sorted({name.split("/")[2] for name in names if name.startswith("backup/") and "info" not in name}) == sets
    assert sorted(name.split("/")[-1][:24] for name in names if name.endswith(".zst")) == wal
    assert {f"backup/{STANZA}/backup.info", f"archive/{STANZA}/archive.info.copy",
            f"archive/{STANZA}/17-1/00000002.history"} <= set(names)
    assert (sent["sha256"], sent["size"], sent["wal"]) == (
        hashlib.sha256(done.stdout).hexdigest(), len(done.stdout), len(wal))


def test_a_set_whose_wal_has_a_gap_is_not_packed_and_the_segment_is_named(tmp_path):
    root = repository_tree(tmp_path, [segment for segment in SEGMENTS if segment != "0000000100000000000000FF"])
    done = pack(root, FULL)
    assert done.returncode != 0 and done.stdout == b""
    assert "WAL segment 0000000100000000000000FF of the set is not in the repository" in done.stderr.decode()


def test_a_file_that_vanishes_while_packed_fails_the_copy_naming_it(tmp_path):
    """An expire removing a set's WAL between the listing and the packing: no incomplete copy is sent."""
    root = repository_tree(tmp_path)
    repository = dataclasses.replace(find_repository(layout({"db": ["db1"], "backup": ["backup1"]})), path=str(root))
    argv = list(pack_command(repository, FULL).argv)
    # The program lists the archive, then packs; a wrapper deletes a segment in between.
    program = argv[3].replace("out = Hashing(", "os.remove(os.path.join(repository, members[-1]))\nout = Hashing(", 1)
    done = subprocess.run([*argv[:3], program, *argv[4:]], capture_output=True)
    assert done.returncode != 0 and "vanished while it was packed" in done.stderr.decode()


def test_the_wal_range_references_and_archive_of_each_set_are_read_from_pgbackrests_info():
    info = [{"name": STANZA, "status": {"code": 0, "message": "ok"},
             "db": [{"id": 1, "repo-key": 1, "system-id": 7441234567890123456, "version": "17"}],
             "archive": [{"database": {"id": 1, "repo-key": 1}, "id": "17-1", "min": SEGMENTS[0], "max": SEGMENTS[-1]}],
             "backup": [{"label": INCR.label, "type": "incr", "timestamp": {"start": 1, "stop": 2},
                         "archive": {"start": INCR.wal_start, "stop": INCR.wal_stop},
                         "database": {"id": 1, "repo-key": 1}, "reference": [FULL.label]}]}]
    backup = parse_contents(json.dumps(info) + "\n@wal\n\n", STANZA).backups[0]
    assert (backup.wal_start, backup.wal_stop, backup.references, backup.archive_id) == (
        INCR.wal_start, INCR.wal_stop, (FULL.label,), "17-1")


@pytest.mark.parametrize("label", ["20261203", "20261203-100000F; rm -rf /", "../20261203-100000F", "latest2"])
def test_an_id_that_is_no_set_label_is_refused_naming_the_argument(label):
    with pytest.raises(ConfigError, match=re.escape(f"ID: {label!r} is neither `latest` nor a backup set's label")):
        check_label(label)


class PackingHost:
    """The backup host, its packing program run here on a laid-out repository; `damage` flips a byte on
    the way, as a bad link would."""

    def __init__(self, damage=False):
        self.damage = damage

    def run(self, command, timeout=None, sink=None):
        done = subprocess.run(command.argv, capture_output=True)
        data = bytearray(done.stdout)
        if self.damage:
            data[len(data) // 2] ^= 0xFF
        sink(bytes(data))
        return Result(done.returncode, "", done.stderr.decode())


@pytest.mark.parametrize("damage", [False, True])
def test_a_pulled_set_is_named_only_when_it_arrived_as_packed(tmp_path, damage):
    root = repository_tree(tmp_path / "repository")
    repository = dataclasses.replace(find_repository(layout({"db": ["db1"], "backup": ["backup1"]})), path=str(root))
    into = tmp_path / "pulled"
    if damage:
        with pytest.raises(BackupError, match="backup set 20261203-100000F arrived damaged"):
            pull_set(PackingHost(damage=True), repository, FULL, "staging", into)
        assert list(into.iterdir()) == []
        return
    path = pull_set(PackingHost(), repository, FULL, "staging", into)
    assert path.name == "staging-20261203-100000F.pgbackrest.tar"
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sets"] == [FULL.label] and record["wal"] == [FULL.wal_start, FULL.wal_stop]
    assert f"--reset-pg1-host --repo1-path=DIR --repo1-cipher-type=aes-256-cbc --pg1-path=DATA --set={FULL.label} " \
           "--type=immediate restore" in record["restore"]
    assert sorted(p.name for p in into.iterdir()) == [path.with_suffix(".json").name, path.name]
