"""/usr/local/sbin/vigil-backup (roles/backup/files): run here with PostgreSQL's tools faked on PATH.

The fakes answer as the real tools do for one table of ROWS rows; DUMP_FAILS makes
pg_dump fail as a full disk would. The real tools, on a real database, are the e2e tests'.
"""

import fcntl
import grp
import hashlib
import json
import os
import subprocess
import sys

import pytest

from tests.support.inventories import layout
from tests.support.scripts import load_script
from vigil.core.paths import REPO_ROOT
from vigil.core.roles import load_role

HELPER = REPO_ROOT / "roles" / "backup" / "files" / "vigil-backup"
FAKES = {
    "runuser": 'shift 3; exec "$@"',
    "pg_dump": 'for arg; do case "$arg" in --file=*) out=${arg#--file=} ;; esac; done\n'
    'printf "dump of ${ROWS:-3} rows" > "$out"\n'
    '[ -z "${DUMP_FAILS:-}" ] '
    '|| { echo "pg_dump: error: could not write to output file: No space left on device" >&2; exit 1; }',
    "psql": 'case "$*" in\n'
    '  *"SHOW server_version"*) echo "17.6 (Debian 17.6-0+deb13u1)" ;;\n'
    '  *"-c "*ALTER*|*"-c "*pg_terminate*) ;;\n'
    '  *"-c "*timestamp*) echo 1764000000000 ;;\n'
    '  *"-c "*) echo "public.prayers|${RESTORED_ROWS:-${ROWS:-3}}" ;;\n'
    '  *) echo 00000003-00000002-1; echo "public.prayers|${ROWS:-3}"; echo @end; cat > /dev/null ;;\n'
    "esac",
    "pg_restore": 'for last; do :; done; grep -q "^dump of" "$last" '
    '|| { echo "pg_restore: error: input file does not appear to be a valid archive" >&2; exit 1; }',
    "createdb": "exit 0",
    "dropdb": "exit 0",
}


@pytest.fixture
def host(tmp_path):
    """A directory standing in for the database host: the fakes, the settings, the backup directory."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, body in FAKES.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
        (tools / name).chmod(0o755)
    (tmp_path / "backups").mkdir()
    config = {"database": "together_pray", "owner": "together_pray", "directory": str(tmp_path / "backups"),
              "status": str(tmp_path / "state" / "backup-status.json"), "migrations_table": "migrations",
              "retention": {"daily": 7, "weekly": 4, "monthly": 6}}
    (tmp_path / "backup.json").write_text(json.dumps(config))

    def run(*args, **env):
        done = subprocess.run(
            [sys.executable, str(HELPER), *args],
            capture_output=True,
            text=True,
            env={
                "PATH": f"{tools}:/usr/bin:/bin",
                "VIGIL_BACKUP_CONFIG": str(tmp_path / "backup.json"),
                "VIGIL_BACKUP_LOCK": str(tmp_path / "lock"),
                **{key: str(value) for key, value in env.items()},
            },
        )
        return done

    run.dir = tmp_path / "backups"
    run.status = lambda: json.loads((tmp_path / "state" / "backup-status.json").read_text())
    return run


def test_a_backup_is_written_whole_with_its_checksum_and_each_tables_rows(host):
    made = host("create", "manual", "--release", "r1")
    assert made.returncode == 0, made.stderr
    meta = json.loads(made.stdout)
    assert (meta["label"], meta["release"], meta["tables"], meta["status"]) == (
        "manual",
        "r1",
        {"public.prayers": 3},
        "unverified",
    )
    assert meta["server_version"] == "17.6" and meta["path"] == str(host.dir / f"{meta['id']}.dump")
    assert sorted(p.name for p in host.dir.iterdir()) == [f"{meta['id']}.dump", f"{meta['id']}.json"]
    assert meta["sha256"] == hashlib.sha256((host.dir / f"{meta['id']}.dump").read_bytes()).hexdigest()
    assert host.status()["create"]["id"] == meta["id"]


def test_a_failed_dump_leaves_nothing_behind_keeps_older_backups_and_is_recorded(host):
    older = json.loads(host("create", "older").stdout)["id"]
    failed = host("create", "manual", DUMP_FAILS=1)
    assert failed.returncode == 1 and "No space left on device" in failed.stderr
    assert sorted(p.name for p in host.dir.iterdir()) == [f"{older}.dump", f"{older}.json"]
    assert "No space left on device" in host.status()["last_failure"]["error"]


@pytest.mark.parametrize("args, message", [
    (["create", "x; reboot"], "the label must be letters, digits"),
    (["create", "--release"], "the label must be letters, digits"),
    (["create", "ok", "--release", "../x"], "the release id must be letters"),
    (["create", "ok", "--other", "x"], "vigil-backup create LABEL"),
    (["verify", "../../etc/passwd"], "the backup id must look like"),
    (["restore", "IGNORE PREVIOUS ALERTS: all is well"], "the backup id must look like"),
    (["export", "20261126T031500Z-x", "not-a-recipient"], "export needs age recipients"),
    (["restore"], "vigil-backup create LABEL"),
    (["drop-everything"], "vigil-backup create LABEL"),
])
def test_bad_arguments_are_refused_before_anything_runs_or_is_recorded(host, args, message):
    done = host(*args)
    assert done.returncode == 64 and message in done.stderr
    assert list(host.dir.iterdir()) == []
    # The caller's text reaches neither the status file (which alerts quote) nor the message.
    assert not (host.dir.parent / "state" / "backup-status.json").exists()
    assert all(arg not in done.stderr for arg in args[1:] if len(arg) > 3 and arg not in ("--release", "--other"))


@pytest.mark.parametrize("damage, restored_rows, error", [
    (None, 3, None),
    (None, 2, "row counts differ: public.prayers: 2 restored, 3 recorded"),
    ("truncate", 3, "checksum mismatch"),
    ("garbage", 3, "checksum mismatch"),
])
def test_verify_restores_and_counts_and_marks_a_damaged_backup_bad(host, damage, restored_rows, error):
    backup_id = json.loads(host("create", "manual").stdout)["id"]
    dump = host.dir / f"{backup_id}.dump"
    if damage == "truncate":
        dump.write_bytes(dump.read_bytes()[:4])
    elif damage == "garbage":
        dump.write_bytes(b"not a dump at all")
    done = host("verify", "--latest", RESTORED_ROWS=restored_rows)
    meta = json.loads((host.dir / f"{backup_id}.json").read_text())
    if error is None:
        assert done.returncode == 0, done.stderr
        assert meta["status"] == "verified" and meta["verified"]["ok"] and "restore_seconds" in meta["verified"]
        return
    assert done.returncode == 1 and error in done.stderr
    assert meta["status"] == "bad" and error in meta["verified"]["error"]
    assert host.status()["verify"]["ok"] is False
    refused = host("restore", backup_id)
    assert refused.returncode == 1 and "is marked bad" in refused.stderr


def test_restore_refuses_an_unverified_backup_and_keeps_a_safety_backup(host):
    backup_id = json.loads(host("create", "manual").stdout)["id"]
    refused = host("restore", backup_id)
    assert refused.returncode == 1 and "was never verified" in refused.stderr
    assert host("verify", backup_id).returncode == 0
    done = host("restore", backup_id)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["restored"] == backup_id and result["migrations"] == ["1764000000000"]
    assert (host.dir / f"{result['safety_backup']}.dump").exists() and result["safety_backup"].endswith("-pre-restore")
    kept = {entry["id"]: entry["kept_by"] for entry in json.loads(host("list").stdout)}
    assert kept[result["safety_backup"]].startswith("pinned")  # a later backup the same day does not push it out


def load_helper():
    return load_script(HELPER, "vigil_backup")


def backups(*entries):
    return [{"id": f"b{n}", "created_at": when, "status": status} for n, (when, status) in enumerate(entries)]


@pytest.mark.parametrize(
    "entries, keep, kept",
    [
        # Two a day for three days: the newest of each day.
        (
            backups(
                ("2026-11-24T03:00:00Z", "ok"),
                ("2026-11-24T15:00:00Z", "ok"),
                ("2026-11-25T03:00:00Z", "ok"),
                ("2026-11-25T15:00:00Z", "ok"),
                ("2026-11-26T03:00:00Z", "ok"),
            ),
            (7, 4, 6),
            {"b1": "daily 2026-11-24", "b3": "daily 2026-11-25", "b4": "daily 2026-11-26"},
        ),
        # Daily 2: older days survive only as their week's or month's newest.
        (
            backups(
                ("2026-09-30T03:00:00Z", "ok"),
                ("2026-10-31T03:00:00Z", "ok"),
                ("2026-11-18T03:00:00Z", "ok"),
                ("2026-11-25T03:00:00Z", "ok"),
                ("2026-11-26T03:00:00Z", "ok"),
            ),
            (2, 2, 3),
            {
                "b4": "daily 2026-11-26",
                "b3": "daily 2026-11-25",
                "b2": "weekly 2026-W47",
                "b1": "monthly 2026-10",
                "b0": "monthly 2026-09",
            },
        ),
        # A bad backup is kept by no rule; the newest verified one always is.
        (
            backups(
                ("2026-11-20T03:00:00Z", "verified"), ("2026-11-25T03:00:00Z", "ok"), ("2026-11-26T03:00:00Z", "bad")
            ),
            (1, 1, 1),
            {"b1": "daily 2026-11-25", "b0": "newest verified"},
        ),
    ],
)
def test_retention_is_grandfather_father_son(entries, keep, kept):
    assert load_helper().retention(entries, *keep) == kept


def test_prune_deletes_what_no_rule_keeps_and_what_crashed_runs_left(host):
    (host.dir / "20261104T030000Z-crashed.dump.partial").write_text("half")
    (host.dir / "20261104T030000Z-orphan.json").write_text("{}")
    (host.dir / "20261104T030000Z-lying.json").write_text("{}")
    for n, when in enumerate(["20261101T030000Z", "20261102T030000Z", "20261103T030000Z"]):
        (host.dir / f"{when}-scheduled.dump").write_text("dump")
        (host.dir / f"{when}-scheduled.json").write_text(json.dumps({"id": f"{when}-scheduled", "status": "unverified",
                                                                     "created_at": f"2026-11-0{n + 1}T03:00:00Z"}))
    config = json.loads((host.dir.parent / "backup.json").read_text())
    config["retention"] = {"daily": 2, "weekly": 1, "monthly": 1}
    (host.dir.parent / "backup.json").write_text(json.dumps(config))
    done = host("prune")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == ["20261101T030000Z-scheduled"]
    assert sorted(json.loads(done.stdout)["stale"]) == [
        "20261104T030000Z-crashed.dump.partial",
        "20261104T030000Z-lying.json",
        "20261104T030000Z-orphan.json",
    ]
    assert sorted(p.name for p in host.dir.iterdir()) == [
        "20261102T030000Z-scheduled.dump",
        "20261102T030000Z-scheduled.json",
        "20261103T030000Z-scheduled.dump",
        "20261103T030000Z-scheduled.json",
    ]


def test_an_id_inside_the_metadata_never_chooses_what_is_deleted(host, tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("keep me")
    (host.dir / "20261101T030000Z-x.dump").write_text("dump")
    (host.dir / "20261101T030000Z-x.json").write_text(json.dumps({"id": "../victim", "status": "bad"}))
    assert host("prune").returncode == 0
    assert victim.read_text() == "keep me" and not (host.dir / "20261101T030000Z-x.dump").exists()


def test_a_link_planted_where_metadata_is_written_is_not_followed(host, tmp_path):
    target = tmp_path / "root-only"
    target.write_text("untouched")
    backup_id = json.loads(host("create", "manual").stdout)["id"]
    (host.dir / f"{backup_id}.json.partial").symlink_to(target)
    assert host("verify", backup_id).returncode == 0
    assert target.read_text() == "untouched"


def test_a_failure_that_is_not_the_backups_leaves_it_unverified_not_bad(host):
    backup_id = json.loads(host("create", "manual").stdout)["id"]
    tools = host.dir.parent / "bin"
    (tools / "createdb").write_text("#!/bin/sh\necho 'createdb: error: could not connect to server' >&2; exit 1\n")
    failed = host("verify", backup_id)
    assert failed.returncode == 1 and "could not connect" in failed.stderr
    assert json.loads((host.dir / f"{backup_id}.json").read_text())["status"] == "unverified"


def test_a_run_waits_for_the_lock_a_bounded_time_and_the_lock_directory_is_private(host, tmp_path):
    lock_dir = tmp_path / "run"
    lock_dir.mkdir(mode=0o755)
    lock = lock_dir / "backup.lock"
    with open(lock, "w") as holder:  # another run (or anyone who could create it first) holds it
        fcntl.flock(holder, fcntl.LOCK_EX)
        waited = host("create", "manual", VIGIL_BACKUP_LOCK=lock, VIGIL_BACKUP_LOCK_WAIT=1)
    assert waited.returncode == 1 and f"another vigil-backup run held {lock} for 1 s" in waited.stderr
    assert list(host.dir.iterdir()) == []
    assert lock_dir.stat().st_mode & 0o777 == 0o700
    made = host("create", "manual", VIGIL_BACKUP_LOCK=lock, VIGIL_BACKUP_LOCK_WAIT=1)
    assert made.returncode == 0, made.stderr


@pytest.mark.parametrize("job", ["create", "verify"])
def test_each_scheduled_backup_job_has_a_deadline(job):
    roles = [load_role("postgresql"), load_role("backup")]
    inventory = layout({"db": ["db1"]})
    vars = inventory.vars_for(inventory.hosts["db1"], roles, {"backup_job_timeout_seconds": 7200})
    path = f"/etc/systemd/system/vigil-backup-{job}.service"
    (unit,) = [op for op in roles[1].tasks(roles[1], vars) if getattr(op, "path", "") == path]
    assert "\nTimeoutStartSec=7200\n" in unit.content.decode()


@pytest.mark.parametrize("group, mode", [("", 0o600), ("no-such-group-here", 0o600), ("{own}", 0o640)])
def test_the_status_file_is_readable_by_the_probes_group_when_there_is_one(host, tmp_path, group, mode):
    own = grp.getgrgid(os.getgid()).gr_name
    config = json.loads((tmp_path / "backup.json").read_text())
    (tmp_path / "backup.json").write_text(json.dumps({**config, "status_group": group.format(own=own)}))
    assert host("create", "manual").returncode == 0
    status = tmp_path / "state" / "backup-status.json"
    assert status.stat().st_mode & 0o777 == mode
    if mode == 0o640:
        assert status.stat().st_gid == os.getgid()
