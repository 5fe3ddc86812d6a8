"""vigil.backup.branch and the branch half of vigil-pgbackrest-drill: which names a branch may take,
what the backup host is told, and the database host's scripts run for real with stand-ins on PATH."""

import fcntl
import re
import subprocess
import threading

import pytest

from tests.support.inventories import layout
from tests.support.scripts import load_script
from vigil.backup.branch import DROP, MARK, branch_command, check_name
from vigil.backup.pitr import Target, check_target, choose_backup
from vigil.backup.repository import Backup, Contents, find_repository
from vigil.cli.backup import _timeline
from vigil.core.errors import ConfigError
from vigil.core.paths import REPO_ROOT

INVENTORY = layout({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]})
REPOSITORY = find_repository(INVENTORY)
drill = load_script(REPO_ROOT / "roles" / "pgbackrest" / "files" / "vigil-pgbackrest-drill", "vigil_drill_branch")


@pytest.mark.parametrize("name, message", [
    ("together_pray", "is the app's or PostgreSQL's own database"),
    ("postgres", "is the app's or PostgreSQL's own database"),
    ("Yesterday", "is not a database name"),
    ("x; drop database together_pray", "is not a database name"),
    ("1st", "is not a database name"),
])
def test_a_branch_never_takes_the_apps_database_or_a_name_that_is_not_one(name, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_name(name, INVENTORY, REPOSITORY.database)


def test_the_backup_host_is_told_the_set_and_the_target_as_separate_arguments():
    command = branch_command("yesterday", "20261203-100000F", Target(at=1796292031))
    assert command.argv == ("/usr/local/lib/vigil/vigil-pgbackrest-drill", "branch", "yesterday", "20261203-100000F",
                            "--type=time", "--target=2026-12-03 10:00:31+00", "--target-action=promote")
    assert command.as_user == "pgbackrest"
    assert drill.usable_branch(list(command.argv[1:]))
    owned = branch_command("preview_a", "20261203-100000F", Target(at=1796292031), owner="preview_a")
    assert owned.argv[4] == "--owner=preview_a" and drill.usable_branch(list(owned.argv[1:]))


@pytest.mark.parametrize("argv, usable", [
    (["branch", "yesterday", "20261203-100000F", "--type=time", "--target=2026-12-03 10:00:31+00",
      "--target-action=promote", "--set=20261203-100000F"], False),  # --set is the program's to add
    (["branch", "yesterday", "20261203-100000F", "--type=time", "--target=2026-12-03 10:00:31+00",
      "--target-action=promote"], True),
    (["branch", "yesterday", "20261203-100000F", "--type=default"], True),
    (["branch", "yesterday", "20261203-100000F", "--type=name", "--target=vigil-safety-20261203T100031Z",
      "--target-action=promote", "--target-timeline=2"], True),
    (["branch", "Yesterday", "20261203-100000F", "--type=default"], False),
    (["branch", "yesterday", "latest", "--type=default"], False),
    (["branch", "yesterday", "20261203-100000F", "--type=time", "--target=x'; rm -rf /"], False),
    (["branch", "yesterday", "20261203-100000F", "--exec=/bin/sh"], False),
    (["branch", "yesterday", "20261203-100000F"], False),
    # A preview's role may own its branch; no other role may, and an owner alone is no target.
    (["branch", "preview_a", "20261203-100000F", "--owner=preview_a", "--type=default"], True),
    (["branch", "preview_a", "20261203-100000F", "--owner=postgres", "--type=default"], False),
    (["branch", "preview_a", "20261203-100000F", "--owner=preview_a"], False),
    (["branch", "preview_a", "20261203-100000F", "--type=default", "--owner=preview_a"], False),
])
def test_the_program_takes_only_a_name_a_label_and_pgbackrests_target_options(argv, usable):
    assert drill.usable_branch(argv) == usable


def fake_path(tmp_path, fakes: dict) -> dict:
    for name, body in fakes.items():
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    return {"PATH": f"{tmp_path}:/usr/bin:/bin"}


RESTORE = "pg_restore --no-owner --role=together_pray --exit-on-error --single-transaction -d yesterday"


@pytest.mark.parametrize("existing, restore_exit, acl, code, calls", [
    ("", 0, "", 0, ["createdb --owner=together_pray --template=template0 yesterday", "comment", RESTORE]),
    # A preview's branch: the live database's grants left out.
    ("", 0, "no-acl", 0, ["createdb --owner=together_pray --template=template0 yesterday", "comment",
                          RESTORE.replace("--no-owner", "--no-owner --no-acl")]),
    # A name already taken: refused before anything is created, and nothing is dropped.
    ("1", 0, "", 3, []),
    # A copy that fails half-way leaves no half a branch.
    ("", 1, "", 4, ["createdb --owner=together_pray --template=template0 yesterday", "comment", RESTORE,
                    "dropdb yesterday"]),
])
def test_a_branch_is_created_empty_filled_in_one_transaction_and_dropped_if_the_fill_fails(
        tmp_path, existing, restore_exit, acl, code, calls):
    log = tmp_path / "calls"
    env = fake_path(tmp_path, {
        "psql": f'case "$*" in *pg_database*) echo "{existing}" ;; *comment*) echo comment >> {log} ;; esac',
        "createdb": f'echo "createdb $*" >> {log}',
        "pg_restore": f'echo "pg_restore $*" >> {log}; cat > /dev/null; exit {restore_exit}',
        "dropdb": f'echo "dropdb $*" >> {log}',
    })
    done = subprocess.run(["sh", "-c", drill.BRANCH_FILL, "vigil", "yesterday", "together_pray", "vigil branch of x",
                           acl],
                          input="dump", capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == code, done.stderr
    assert (log.read_text().splitlines() if log.exists() else []) == calls


@pytest.mark.parametrize("found, code, dropped, said", [
    (f"found:{MARK}together_pray from 20261203-100000F", 0, True, ""),
    ("found:", 3, False, "yesterday is not a branch vigil made"),
    ("found:the team's reporting copy", 3, False, "yesterday is not a branch vigil made"),
    ("", 3, False, "there is no database yesterday on this host"),
])
def test_only_a_database_vigil_made_as_a_branch_is_dropped(tmp_path, found, code, dropped, said):
    log = tmp_path / "calls"
    env = fake_path(tmp_path, {"psql": f'echo "{found}"', "dropdb": f'echo "dropdb $*" >> {log}'})
    done = subprocess.run(["sh", "-c", DROP, "vigil", "yesterday", MARK], capture_output=True, text=True,
                          timeout=30, env=env)
    assert done.returncode == code and said in done.stderr
    assert log.exists() == dropped
    if dropped:
        assert log.read_text().strip() == "dropdb --force yesterday"


@pytest.mark.parametrize("given, timeline", [(None, None), ("2", 2), (3, 3)])
def test_a_timeline_flag_is_a_number_or_absent(given, timeline):
    assert _timeline(given) == timeline


@pytest.mark.parametrize("given", ["0", "two", "1;reboot", "-1"])
def test_a_timeline_that_is_not_one_is_refused_naming_the_flag(given):
    with pytest.raises(ConfigError, match=re.escape(f"--timeline: {given!r} is not a timeline number")):
        _timeline(given)


def test_a_branch_outside_the_window_is_refused_naming_its_own_flag():
    contents = Contents(0, "ok", [Backup("20261203-100000F", "full", 1796292000, 1796292030, 1, 1)], 1796299200)
    with pytest.raises(ConfigError, match=re.escape("--at: 2001-01-01 00:00:00+00 is outside the window")):
        check_target(Target(at=978307200), contents, REPOSITORY, flag="--at")
    with pytest.raises(ConfigError, match=re.escape("--at: no backup ended before")):
        choose_backup(Target(at=1796292000), contents.backups, flag="--at")


@pytest.mark.parametrize("released_after, wait, taken", [
    (None, 0, True),   # nobody holds it
    (0.5, 10, True),   # a branch waits for the drill or branch before it
    (0, 0, False),     # the drill does not wait (released only after)
])
def test_a_branch_waits_its_turn_for_the_lock_and_the_drill_does_not(tmp_path, released_after, wait, taken):
    path = tmp_path / "drill.lock"
    with open(path, "a") as holder, open(path, "a") as waiter:
        release = None
        if released_after is not None:
            fcntl.flock(holder, fcntl.LOCK_EX)
            release = threading.Timer(released_after, fcntl.flock, (holder, fcntl.LOCK_UN))
            if released_after:
                release.start()
        assert drill.take_lock(waiter, wait) == taken
        if release is not None:
            release.cancel()
            fcntl.flock(holder, fcntl.LOCK_UN)
