"""vigil.backup.repository: the env's repository host, pgBackRest's info read, and the restore window."""

import json
import os
import re
import subprocess

import pytest

from tests.support.inventories import layout
from vigil.backup.access import BackupError
from vigil.backup.repository import (
    CONTENTS,
    STATUS,
    check_backup_type,
    failure_note,
    find_repository,
    parse_contents,
    parse_drill,
    parse_status,
    utc,
)
from vigil.core.errors import ConfigError


def info(*backups, code=0, message="ok", stanza="together-pray"):
    """pgBackRest's `info --output=json` for one stanza, as 2.55 prints it."""
    return json.dumps([{
        "name": stanza, "cipher": "aes-256-cbc", "status": {"code": code, "message": message},
        "db": [{"id": 1, "repo-key": 1, "system-id": 7441234567890123456, "version": "17"}],
        "archive": [{"id": "17-1", "database": {"id": 1, "repo-key": 1}}],
        "backup": [{"label": label, "type": kind, "timestamp": {"start": start, "stop": stop},
                    "info": {"size": 1048576, "repository": {"size": 4096, "delta": 2048}},
                    "annotation": {"vigil-label": "manual"}, "error": False}
                   for label, kind, start, stop in backups],
    }])


FULL = ("20261203-100000F", "full", 1796292000, 1796292030)
INCR = ("20261203-100000F_20261203-110000I", "incr", 1796295600, 1796295605)


@pytest.mark.parametrize("answer, window, status", [
    # From just after the oldest backup ended to the newest WAL's arrival.
    (info(FULL, INCR) + "\n@wal\n1796299200.25\n", (1796292031, 1796299200.25), 0),
    # No WAL arrived since (or the archive is empty): the newest backup's end.
    (info(FULL) + "\n@wal\n\n", (1796292031, 1796292031), 0),
    # No backup yet: nothing to restore to, whatever WAL there is.
    (info(code=2, message="no valid backups") + "\n@wal\n1796299200\n", None, 2),
])
def test_the_window_runs_from_the_oldest_backups_end_to_the_newest_wal(answer, window, status):
    contents = parse_contents(answer, "together-pray")
    assert contents.window == window and contents.status == status


def stand_in_pgbackrest(tmp_path) -> dict:
    """A repository with WAL on timeline 1 and 2 and, in the archive of a cluster before a major upgrade
    (16-2), a timeline 2 of its own; a pgbackrest on PATH that answers `info` with pgBackRest's JSON
    (which ends with no newline) and `repo-get` with the history files' text."""
    (tmp_path / "pgbackrest").write_text(
        "#!/bin/sh\n"
        f"case \"$*\" in *' info '*) printf '%s' '{info(FULL)}' ;;\n"
        "*' repo-get archive/together-pray/17-1/00000002.history') printf '1\\t0/34000028\\tbefore x\\n' ;;\n"
        "*' repo-get archive/together-pray/16-2/00000002.history') printf '1\\t0/9000000\\tbefore y\\n' ;;\n"
        "*) exit 1 ;; esac\n")
    (tmp_path / "pgbackrest").chmod(0o755)
    archive = tmp_path / "repo" / "archive" / "together-pray"
    wal = archive / "17-1" / "0000000100000000"
    wal.mkdir(parents=True)
    (wal / "000000010000000000000004-abc.zst").write_text("")
    os.utime(wal / "000000010000000000000004-abc.zst", (1796299200, 1796299200))
    for cluster in ("17-1", "16-2"):
        (archive / cluster).mkdir(exist_ok=True)
        (archive / cluster / "00000002.history").write_text("encrypted")
        os.utime(archive / cluster / "00000002.history", (1796299100, 1796299100))
    return {"PATH": f"{tmp_path}:/usr/bin:/bin"}


def test_the_answer_is_read_as_contents_prints_it(tmp_path):
    environment = stand_in_pgbackrest(tmp_path)
    done = subprocess.run(["sh", "-c", CONTENTS, "contents", "together-pray", str(tmp_path / "repo")],
                          capture_output=True, text=True, env=environment)
    contents = parse_contents(done.stdout, "together-pray")
    assert [backup.label for backup in contents.backups] == [FULL[0]] and contents.newest_wal == 1796299200
    assert contents.histories == {2: [(1, 0x34000028)]}  # the cluster backed up now: 17-1's


@pytest.mark.parametrize("drill", [None, {"at": "2026-12-04T05:00:00Z", "ok": True}])
@pytest.mark.parametrize("with_history", [True, False])
def test_the_status_answer_is_read_as_status_prints_it_before_the_first_drill_and_restore_too(
        tmp_path, drill, with_history):
    environment = stand_in_pgbackrest(tmp_path)
    if not with_history:
        for history in (tmp_path / "repo").rglob("*.history"):
            history.unlink()
    if drill is not None:
        (tmp_path / "last.json").write_text(json.dumps(drill))
    done = subprocess.run(["sh", "-c", STATUS, "status", "together-pray", str(tmp_path / "repo"),
                           str(tmp_path / "last.json")], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr  # no drill yet is no failure of the answer
    contents, parsed = parse_status(done.stdout, "together-pray")
    assert (contents.newest_wal, parsed) == (1796299200, drill)
    assert contents.histories == ({2: [(1, 0x34000028)]} if with_history else {})


@pytest.mark.parametrize("history, histories", [
    ("", {}),
    ("@@17-1/00000002.history\n1\t0/34000028\tno recovery target specified\n\n", {2: [(1, 0x34000028)]}),
    # Timeline 10 (0xA) came from 3, which came from 1: every ancestor, each with where it ended.
    ("@@17-1/00000003.history\n1\t0/5000000\tbefore x\n@@17-1/0000000A.history\n1\t0/5000000\tbefore x\n"
     "3\t1/2000A0\tat restore point \"vigil-safety-20261204T195039Z\"\n",
     {3: [(1, 0x5000000)], 10: [(1, 0x5000000), (3, 0x1002000A0)]}),
    # A history pgBackRest could not read: the timeline exists, its history is unknown, never guessed.
    ("@@17-1/00000002.history\n#unreadable\n\n", {2: None}),
    # Another cluster's (before a major upgrade) numbers its timelines apart.
    ("@@16-2/00000005.history\n1\t0/5000000\tbefore x\n", {}),
])
def test_each_timelines_history_is_read_with_where_its_ancestors_ended(history, histories):
    for wal in ("", "1796299200\n"):  # with WAL arrived or none: the parts stay apart
        contents = parse_contents(info(FULL) + f"\n@wal\n{wal}@history\n{history}", "together-pray")
        assert contents.histories == histories and len(contents.backups) == 1
        assert contents.newest_wal == (1796299200 if wal else None)


def test_backups_are_read_oldest_first_with_their_sizes_and_label():
    contents = parse_contents(info(FULL, INCR) + "\n@wal\n\n", "together-pray")
    assert [(b.label, b.type, b.size, b.stored, b.annotation) for b in contents.backups] == [
        (FULL[0], "full", 1048576, 2048, {"vigil-label": "manual"}),
        (INCR[0], "incr", 1048576, 2048, {"vigil-label": "manual"}),
    ]


def test_the_cluster_the_repository_backs_up_is_known_by_its_system_identifier():
    # A rebuilt database host's new cluster has another: nothing on it is the repository's to keep.
    assert parse_contents(info(FULL) + "\n@wal\n\n", "together-pray").system_id == "7441234567890123456"


def test_another_stanzas_info_is_not_taken_for_ours():
    contents = parse_contents(info(FULL, stanza="other") + "\n@wal\n\n", "together-pray")
    assert contents.backups == [] and contents.status == 1 and "no stanza together-pray" in contents.message


def test_info_that_is_not_json_is_a_clear_error():
    with pytest.raises(ConfigError, match="pgBackRest's info is not JSON: 'ERROR: \\[041\\]"):
        parse_contents("ERROR: [041] unable to open file\n@wal\n\n", "together-pray")


def test_times_are_given_as_restore_takes_them_in_utc():
    assert utc(1796292031) == "2026-12-03 10:00:31+00"


@pytest.mark.parametrize("groups, found", [
    ({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]}, ("backup1", "db1")),
    ({"web": ["web1"], "db": ["db1"]}, None),
    ({"web": ["web1"], "db": ["db1"], "backup": []}, None),
])
def test_the_repository_is_the_first_backup_host_and_backs_up_the_database_host(groups, found):
    repository = find_repository(layout(groups))
    if found is None:
        assert repository is None
    else:
        assert (repository.host.name, repository.database.name) == found
        assert (repository.stanza, repository.path) == ("together-pray", "/var/lib/pgbackrest/repository")


@pytest.mark.parametrize("value", ["", "FULL", "snapshot", "full;reboot"])
def test_a_backup_type_pgbackrest_does_not_have_is_refused_naming_the_flag(value):
    with pytest.raises(ConfigError, match=re.escape(f"--type: {value!r} is not one of full, diff, incr")):
        check_backup_type(value)


@pytest.mark.parametrize("stdout, result", [
    # The drill ran in this call: its result, written after the call started.
    ('@started 1796309000\n{"at": "2026-12-03T14:43:21Z", "ok": false, "error": "rows differ"}\n@log\n',
     {"at": "2026-12-03T14:43:21Z", "ok": False, "error": "rows differ"}),
])
def test_the_drill_run_now_is_read_from_its_result_file(stdout, result):
    assert parse_drill(stdout, "backup1") == result


@pytest.mark.parametrize("stdout, why", [
    # Another drill held the lock, or the settings were refused: the file is last week's.
    ('@started 1796309000\n{"at": "2026-11-26T05:00:00Z", "ok": true}\n@log\n'
     "vigil-pgbackrest-drill: another drill or branch is running here: try again when it ends\n",
     "another drill or branch is running here"),
    ("@started 1796309000\n\n@log\n", "it left no result"),
    ("@started 1796309000\n{broken\n@log\nFailed to start vigil-pgbackrest-drill.service: Unit not found.\n",
     "Unit not found"),
])
def test_a_drill_that_did_not_run_is_an_error_saying_why(stdout, why):
    with pytest.raises(BackupError, match=re.escape("backup1: the restore drill did not run: ")):
        parse_drill(stdout, "backup1")
    with pytest.raises(BackupError, match=re.escape(why)):
        parse_drill(stdout, "backup1")


@pytest.mark.parametrize("answer, note", [
    ("100%        0\n", "the repository's disk is full (100% used)"),
    (" 99%  1048576\n", "the repository's disk is full (99% used)"),
    (" 60%  4096\n", "the repository's disk is full (60% used)"),  # not a WAL segment's room left
    (" 42% 536870912\n", ""),
    ("", ""),  # df could not say
    ("df: /var/lib/pgbackrest/repository: No such file or directory\n", ""),
])
def test_a_failed_backup_says_when_the_repository_disk_is_full(answer, note):
    assert (note in failure_note(answer)) and (bool(note) == bool(failure_note(answer)))


def test_a_backup_refused_during_a_restore_says_the_restore_holds_the_lock():
    assert "a restore of the database is running" in failure_note(" 42% 536870912\nrestoring\n")


def test_an_info_whose_error_quotes_raw_bytes_is_read_as_the_stanzas_error():
    """pgBackRest quotes what it could not parse: a backup.info decrypted with a wrong key."""
    answer = ('[{"name":"together-pray","backup":[],"db":[],"status":{"code":99,"message":"[FormatError] unable to '
              'load info file: key/value found outside of section at line 1: \x10\x06\x1e3)"}}]\n@wal\n\n')
    contents = parse_contents(answer, "together-pray")
    assert contents.status == 99 and contents.message.startswith("[FormatError] unable to load info file")
