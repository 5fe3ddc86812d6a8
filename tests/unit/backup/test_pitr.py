"""vigil.backup.pitr: the target a restore goes to, read from its flags and checked against the window."""

import dataclasses
import re
import subprocess

import pytest

from tests.support.inventories import layout
from vigil.backup import pitr
from vigil.backup.access import BackupError
from vigil.backup.pitr import (
    RESTORE,
    Target,
    check_label,
    check_target,
    choose_backup,
    parse_target,
    parse_time,
    refusal,
)
from vigil.backup.repository import HOLD, RELEASE, Backup, Contents, find_repository
from vigil.core.connectors import Result
from vigil.core.errors import ConfigError

REPOSITORY = find_repository(layout({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]}))
FULL = Backup("20261203-100000F", "full", 1796292000, 1796292030, 1, 1)
CONTENTS = Contents(0, "ok", [FULL], newest_wal=1796299200)


@pytest.mark.parametrize("text, seconds", [
    ("2026-12-03T10:00:31Z", 1796292031),
    ("2026-12-03 10:00:31+00:00", 1796292031),
    ("2026-12-03T11:00:31+01:00", 1796292031),
    ("2026-12-03T10:00:31", 1796292031),  # no offset: UTC, as vigil prints every time
    ("2026-12-03T10:00:31.5Z", 1796292031.5),
])
def test_a_time_is_read_in_iso_8601_with_utc_by_default(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["yesterday", "2026-13-03T10:00:00Z", "03/12/2026 10:00", "", "1796292031",
                                  "vigil-safety-20261203T151828Z\n", "20261203-100000F\n"])
def test_a_malformed_time_is_refused_naming_the_flag(text):
    with pytest.raises(ConfigError, match=re.escape(f"TARGET: {text!r} is not a time")):
        parse_target(text)


@pytest.mark.parametrize("target, message", [
    (Target(at=1796292030), "TARGET: 2026-12-03 10:00:30+00 is outside the window the repository on backup1 can "
                            "restore to: any second from 2026-12-03 10:00:31+00 to 2026-12-03 12:00:00+00"),
    (Target(at=1796299201), "is outside the window"),
    (Target(backup="20261202-100000F"), "TARGET: '20261202-100000F' is not a backup in the repository on "
                                        "backup1 (20261203-100000F; invoke backup.list)"),
    (Target(timeline=1), "--timeline follows a timeline to a time: give a time or a restore point as TARGET"),
])
def test_a_target_outside_what_the_repository_holds_is_refused_naming_it(target, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_target(target, CONTENTS, REPOSITORY)


@pytest.mark.parametrize("target", [Target(at=1796292031), Target(at=1796299200), Target(backup=FULL.label),
                                    Target(), Target(at=1796295000, timeline=1)])
def test_a_target_inside_the_window_is_taken(target):
    check_target(target, CONTENTS, REPOSITORY)


def test_nothing_can_be_restored_before_the_first_backup():
    with pytest.raises(ConfigError, match="holds no backup yet"):
        check_target(Target(), Contents(2, "no valid backups", [], 1796299200), REPOSITORY)


@pytest.mark.parametrize("text, timeline, target", [
    ("latest", None, Target()),
    ("20261203-100000F", None, Target(backup="20261203-100000F")),
    ("2026-12-03T10:00:31Z", None, Target(at=1796292031)),
    ("2026-12-03T10:00:31Z", 1, Target(at=1796292031, timeline=1)),
    ("vigil-safety-20261203T100031Z", 1, Target(at=1796292031, point="vigil-safety-20261203T100031Z", timeline=1)),
])
def test_a_restore_target_is_latest_a_backup_label_or_a_time(text, timeline, target):
    assert parse_target(text, timeline) == target


def test_a_timeline_needs_a_time():
    with pytest.raises(ConfigError, match="--timeline follows a timeline to a time"):
        parse_target("latest", 1)


@pytest.mark.parametrize("target, options", [
    (Target(at=1796292031), ["--type=time", "--target=2026-12-03 10:00:31+00", "--target-action=promote",
                             "--set=20261203-100000F"]),
    (Target(at=1796292031, timeline=1), ["--type=time", "--target=2026-12-03 10:00:31+00", "--target-action=promote",
                                         "--set=20261203-100000F", "--target-timeline=1"]),
    (Target(backup=FULL.label), ["--set=20261203-100000F", "--type=immediate", "--target-action=promote"]),
    (Target(), ["--type=default", "--set=20261203-100000F"]),
    (Target(at=1796295000, point="vigil-safety-20261203T105000Z", timeline=1),
     ["--type=name", "--target=vigil-safety-20261203T105000Z", "--target-action=promote", "--set=20261203-100000F",
      "--target-timeline=1"]),
])
def test_each_target_is_pgbackrests_restore_options_from_the_chosen_backup(target, options):
    assert target.options(FULL.label) == options


INCR = Backup("20261203-100000F_20261203-120000I", "incr", 1796299000, 1796299100, 1, 1)
FAILED_INCR = dataclasses.replace(INCR, annotation={"vigil-drill": "failed"})
PASSED_FULL = dataclasses.replace(FULL, annotation={"vigil-drill": "ok"})


@pytest.mark.parametrize("target, backups, force, chosen", [
    # The newest backup that ended before the target: pgBackRest's own would be the newest of all.
    (Target(at=1796295000, point="vigil-safety-20261203T105000Z"), [FULL, INCR], False, FULL),
    (Target(at=1796299101), [FULL, INCR], False, INCR),
    (Target(), [FULL, INCR], False, INCR),
    (Target(backup=FULL.label), [FULL, INCR], False, FULL),
    # A set whose drill failed is passed over for an older one; --force takes it.
    (Target(), [PASSED_FULL, FAILED_INCR], False, PASSED_FULL),
    (Target(at=1796299101), [FULL, FAILED_INCR], False, FULL),
    (Target(), [PASSED_FULL, FAILED_INCR], True, FAILED_INCR),
    (Target(backup=FAILED_INCR.label), [FULL, FAILED_INCR], True, FAILED_INCR),
])
def test_a_restore_replays_from_the_newest_sound_backup_before_its_target(target, backups, force, chosen):
    assert choose_backup(target, backups, force) == chosen


@pytest.mark.parametrize("target, backups", [
    (Target(backup=FAILED_INCR.label), [FULL, FAILED_INCR]),
    (Target(), [dataclasses.replace(FULL, annotation={"vigil-drill": "failed"})]),
])
def test_a_backup_that_failed_its_drill_is_refused_by_name_unless_forced(target, backups):
    with pytest.raises(ConfigError, match=r"from a backup that failed its restore drill \(20261203-100000F.*--force"):
        choose_backup(target, backups)


@pytest.mark.parametrize("label, ok", [
    ("20261203-100000F", True), ("20261203-100000F_20261203-110000I", True),
    ("20261203-100000F_20261203-110000D", True),
    ("latest", False), ("20261203-100000F;reboot", False), ("../20261203-100000F", False),
    ("20261203-100000F\n", False),  # `$` alone would let a trailing newline through
])
def test_a_backup_label_is_pgbackrests_or_refused(label, ok):
    if ok:
        assert check_label(label) == label
    else:
        with pytest.raises(ConfigError, match="is not a backup label"):
            check_label(label)


@pytest.mark.parametrize("restore_exit, restarted, said", [
    (0, True, ""),
    # Restored, but PostgreSQL stopped in recovery (a target past the archived WAL): said, not waited for.
    ("0 recovery", True, "PostgreSQL did not come back writable after the restore"),
    (38, True, "refused (exit 38): nothing was restored and PostgreSQL runs again"),  # PostgreSQL still running
    (75, True, "refused (exit 75)"),  # no backup set for the target
    (26, False, "failed (exit 26); PostgreSQL is stopped"),  # a checksum error half-way: not started on it
])
def test_postgresql_runs_again_after_a_restore_refused_before_writing_and_stays_stopped_after_a_broken_one(
        tmp_path, restore_exit, restarted, said):
    """RESTORE for real, with stand-ins on PATH for systemctl, pg_lsclusters, runuser and pgbackrest."""
    log = tmp_path / "calls"
    exit_code = str(restore_exit).split()[0]
    psql = ("exit 2" if "recovery" in str(restore_exit) else
            "case \"$*\" in *pg_is_in_recovery*) echo f ;; *) echo '1796292031|2' ;; esac")
    fakes = {
        "systemctl": f'echo "systemctl $*" >> {log}',
        "pg_lsclusters": "echo '17 main 5432 down,recovery postgres /var/lib/postgresql/17/main log'",
        # runuser -u postgres -- CMD...: the restore's exit, and a promoted cluster for psql (or none).
        "runuser": f'shift 3; echo "$*" >> {log}; case "$1" in pgbackrest) exit {exit_code} ;; '
                   f"psql) {psql} ;; esac",
    }
    for name, body in fakes.items():
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    done = subprocess.run(["sh", "-c", RESTORE, "restore", "together-pray", "5", "--type=default"],
                          capture_output=True, text=True, timeout=30, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    calls = log.read_text().splitlines()
    assert calls[0] == "systemctl stop postgresql.service"
    assert ("systemctl start postgresql.service" in calls) == restarted
    assert (done.returncode == 0) == (restore_exit == 0) and said in done.stderr, done.stderr
    # Promoted: the checkpointer, asleep since recovery, is woken so archive_timeout holds at once.
    assert any("pg_reload_conf" in call for call in calls) == (restore_exit == 0)


class RecordingHost:
    """The backup host: what it was asked, in order (hold and release are told apart by their scripts)."""

    def __init__(self):
        self.asked = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, command, timeout=None):
        self.asked.append({HOLD: "hold", RELEASE: "release"}.get(command.argv[2], "other"))
        return Result(0, "", "")


@pytest.mark.parametrize("outcome, released", [
    (None, True),                                            # restored
    (BackupError("vps1: the restore failed"), True),         # failed: nothing runs on the host any more
    (pitr.OutcomeUnknown("vps1: the connection was lost"), False),  # may still run there: the lock stays
])
def test_a_restore_holds_the_backup_lock_and_releases_it_unless_it_may_still_run(monkeypatch, outcome, released):
    host = RecordingHost()
    monkeypatch.setattr(pitr, "connect", lambda inventory, target: host)
    monkeypatch.setattr(pitr, "read_contents", lambda transport, repository: Contents(0, "ok", [FULL], 1796299200))

    def restore_held(*args):
        if outcome:
            raise outcome
        return {"restored": True}

    monkeypatch.setattr(pitr, "restore_held", restore_held)
    repository = find_repository(layout({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]}))
    if outcome:
        with pytest.raises(type(outcome)):
            pitr.restore_to("staging", None, repository, Target(), lambda line: None)
    else:
        assert pitr.restore_to("staging", None, repository, Target(), lambda line: None) == {"restored": True}
    assert host.asked == (["hold", "release"] if released else ["hold"])


@pytest.mark.parametrize("stderr, said", [
    ("P00  ERROR: [058]: backup timeline 5, lsn 0/34000028 is not in the history of target timeline 7\n",
     "is not in the history of target timeline 7 (the newest backup before the target was taken on a timeline"),
    ("P00  ERROR: [075]: no backup set found to restore\n", "P00  ERROR: [075]: no backup set found to restore"),
])
def test_a_refusal_is_pgbackrests_own_line_and_a_backup_off_the_targets_history_says_what_to_do(stderr, said):
    reason = refusal(Result(38, "", stderr))
    assert said in reason and reason.endswith(")") == ("[058]" in stderr)


def on(timeline: int, label: str, stopped: float, stop_segment: int) -> Backup:
    """A backup taken on `timeline` whose WAL ran from segment 0x20 to `stop_segment` of log 0."""
    return Backup(label, "full", stopped - 30, stopped, 1, 1, wal_start=f"{timeline:08X}{0:08X}{0x20:08X}",
                  wal_stop=f"{timeline:08X}{0:08X}{stop_segment:08X}")


# Timeline 1 until a restore at 0/40000000 went on as timeline 2; a later restore went back to a point on
# timeline 1 at 0/30000000 and went on as timeline 3, leaving timeline 2 (and what was backed up on it).
ON_1 = on(1, "20261204-100000F", 1796378400, 0x25)            # ended by 0/26000000: before both branches
ON_1_LATE = on(1, "20261204-110000F", 1796382000, 0x35)       # ended by 0/36000000: after timeline 3 branched
ON_2 = on(2, "20261204-120000F", 1796385600, 0x45)
ON_3 = on(3, "20261204-130000F", 1796389200, 0x52)
HISTORIES = {2: [(1, 0x40000000)], 3: [(1, 0x30000000)]}


@pytest.mark.parametrize("target, backups, histories, chosen", [
    # The latest timeline is 3: timeline 2's backup and timeline 1's after the branch cannot reach it.
    (Target(), [ON_1, ON_1_LATE, ON_2], HISTORIES, ON_1),
    (Target(at=1796390000), [ON_1, ON_1_LATE, ON_2, ON_3], HISTORIES, ON_3),
    # Back to timeline 2 (a safety point's): timeline 1's backups ended before it branched, 2's own.
    (Target(at=1796386000, timeline=2), [ON_1, ON_1_LATE, ON_2, ON_3], HISTORIES, ON_2),
    (Target(at=1796383000, timeline=2), [ON_1, ON_1_LATE, ON_2, ON_3], HISTORIES, ON_1_LATE),
    # Timeline 1 came from none: only its own backups.
    (Target(at=1796390000, timeline=1), [ON_1, ON_1_LATE, ON_2, ON_3], HISTORIES, ON_1_LATE),
    # No history read (none yet, or unreadable): by time alone, as before, and pgBackRest checks.
    (Target(), [ON_1, ON_1_LATE, ON_2], {}, ON_2),
    # A backup's label names it whatever its timeline.
    (Target(backup=ON_2.label), [ON_1, ON_2, ON_3], HISTORIES, ON_2),
])
def test_a_restore_replays_from_the_newest_backup_on_the_target_timelines_history(target, backups, histories,
                                                                                    chosen):
    assert choose_backup(target, backups, histories=histories) == chosen


def test_no_backup_on_the_targets_history_is_refused_saying_what_to_do():
    with pytest.raises(ConfigError, match=r"TARGET: no backup before the latest archived second is on timeline 3's "
                                          r"history .*invoke backup.create --type=full"):
        choose_backup(Target(), [ON_1_LATE, ON_2], histories=HISTORIES)


def test_a_timeline_whose_history_could_not_be_read_is_not_guessed():
    # The newest timeline (3) exists but its history is unknown: every backup may reach it, as before.
    assert choose_backup(Target(), [ON_1, ON_1_LATE, ON_2], histories={2: [(1, 0x40000000)], 3: None}) == ON_2


def test_a_restore_point_whose_time_is_not_a_real_one_is_refused_naming_the_flag():
    with pytest.raises(ConfigError, match=r"--at: 'vigil-safety-20261399T999999Z' is not a restore point"):
        parse_target("vigil-safety-20261399T999999Z", flag="--at")
