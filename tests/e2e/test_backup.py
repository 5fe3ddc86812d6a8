"""Backups of the real sample app's database on vps1 (the database host), as a person runs them: `invoke backup.*`.

Each test reads the host back over plain SSH: the files in /var/backups/vigil,
the database itself, the status file incident.status reads.
"""

import hashlib
import json
import re
import shlex
import time

import pytest
from pyrage import x25519

from tests.support.sandbox_hosts import REPO, invoke
from vigil.core.errors import ExitCode

BACKUPS = "/var/backups/vigil"
RUNBOOK = REPO / "docs" / "runbooks" / "restore.md"


def psql(sandbox, sql: str) -> str:
    return sandbox.ssh(
        "vps1", f"su postgres -c {shlex.quote(f'psql -X -tA -d together_pray -c {shlex.quote(sql)}')}"
    ).strip()


def created(run) -> dict:
    assert run.code == 0, run.stdout[-2000:] + run.stderr
    return run.json


def test_a_backup_is_made_listed_and_verified(deployed, sandbox):
    rows = int(psql(sandbox, "select count(*) from prayers"))
    meta = created(invoke("backup.create", "--label=e2e", "--json"))
    assert meta["tables"]["public.prayers"] == rows and meta["status"] == "unverified"
    assert sandbox.ssh("vps1", f"sha256sum {BACKUPS}/{meta['id']}.dump").split()[0] == meta["sha256"]
    assert sandbox.ssh("vps1", f"ls {BACKUPS} | grep -c partial || true").strip() == "0"
    verified = invoke("backup.verify", meta["id"], "--json")
    assert verified.code == 0, verified.stdout + verified.stderr
    assert verified.json["status"] == "verified" and verified.json["verified"]["rows"] == sum(meta["tables"].values())
    listed = {entry["id"]: entry for entry in invoke("backup.list", "--json").json}
    assert listed[meta["id"]]["status"] == "verified" and listed[meta["id"]]["kept_by"]
    assert not psql(sandbox, "select datname from pg_database where datname like 'vigil_verify_%'")  # scratch dropped
    status = json.loads(sandbox.ssh("vps1", "cat /var/lib/vigil/backup-status.json"))
    assert status["verify"]["ok"] and status["verify"]["id"] == meta["id"]
    # The lock every backup and restore takes is where no other user can take it first.
    assert sandbox.ssh("vps1", "stat -c '%a %U' /run/vigil").split() == ["700", "root"]
    refused = sandbox.ssh("vps1", "su -s /bin/sh deploy -c ': > /run/vigil/backup.lock' 2>&1 && echo created || true")
    assert "Permission denied" in refused and "created" not in refused


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_backup_fails_verification_is_marked_bad_and_refused(deployed, sandbox, damage):
    meta = created(invoke("backup.create", f"--label=damaged-{damage}", "--json"))
    dump = f"{BACKUPS}/{meta['id']}.dump"
    if damage == "truncate":
        sandbox.ssh("vps1", f"truncate -s $(( $(stat -c %s {dump}) / 2 )) {dump}")
    else:
        sandbox.ssh("vps1", f"printf 'XXXX' | dd of={dump} bs=1 seek=200 conv=notrunc status=none")
    failed = invoke("backup.verify", meta["id"])
    assert failed.code == ExitCode.HOST_FAILED and "checksum mismatch" in failed.stderr
    assert json.loads(sandbox.ssh("vps1", f"cat {BACKUPS}/{meta['id']}.json"))["status"] == "bad"
    refused = invoke("backup.restore", meta["id"], "--yes")
    assert refused.code == ExitCode.HOST_FAILED and "is marked bad" in refused.stderr
    # It said maintenance went on, so it says it went off again.
    turned_on = re.search(r"^maintenance on: (.+)$", refused.stdout, re.MULTILINE)
    assert turned_on and f"maintenance off: {turned_on.group(1)}" in refused.stdout, refused.stdout
    assert sandbox.ssh("vps1", "test -e /var/www/together-pray/maintenance.on && echo on || echo off").strip() == "off"


def test_a_full_disk_during_a_dump_removes_the_partial_file_and_keeps_older_backups(deployed, sandbox):
    older = created(invoke("backup.create", "--label=before-full", "--json"))["id"]
    before = set(sandbox.ssh("vps1", f"ls {BACKUPS}").split())
    # A 64 KiB filesystem over the backup directory: the dump cannot fit (the older files are hidden under it).
    sandbox.ssh(
        "vps1", f"mount -t tmpfs -o size=64k,mode=0700,uid=$(id -u postgres),gid=$(id -g postgres) vigil-full {BACKUPS}"
    )
    try:
        sandbox.ssh("vps1", f"su postgres -c {shlex.quote(f'head -c 60000 /dev/zero > {BACKUPS}/filler')}")
        full = invoke("backup.create", "--label=no-room")
        assert full.code == ExitCode.HOST_FAILED and "No space left on device" in full.stderr, full.stdout + full.stderr
        assert sandbox.ssh("vps1", f"ls {BACKUPS}").split() == ["filler"]  # no partial dump, no metadata
    finally:
        sandbox.ssh("vps1", f"umount {BACKUPS}")
    assert set(sandbox.ssh("vps1", f"ls {BACKUPS}").split()) == before and f"{older}.dump" in before
    status = json.loads(sandbox.ssh("vps1", "cat /var/lib/vigil/backup-status.json"))
    assert (
        status["last_failure"]["command"] == "create" and "No space left on device" in status["last_failure"]["error"]
    )


def test_the_restore_runbook_as_written_brings_back_the_data_while_the_app_holds_connections(deployed, sandbox):
    good = created(invoke("backup.create", "--label=runbook", "--json"))
    marker = f"written after the backup {time.time_ns()}"
    psql(sandbox, f"insert into prayers (author, body) values ('e2e', '{marker}')")
    # A session that holds its connection for ten minutes, as a busy app's pool would (the sample's own
    # pool lets idle connections go after ten seconds).
    sandbox.ssh(
        "vps1",
        "setsid -f su postgres -c \"psql -X -d together_pray -c 'select pg_sleep(600)'\" >/dev/null 2>&1 < /dev/null",
    )
    holding = (
        "select count(*) from pg_stat_activity where datname = 'together_pray' "
        "and query like '%pg_sleep(600)%' and pid <> pg_backend_pid()"
    )
    for _ in range(20):
        if psql(sandbox, holding) == "1":
            break
        time.sleep(0.25)
    assert psql(sandbox, holding) == "1"
    commands = [
        line.strip()
        for block in re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), re.S)
        for line in block.splitlines()
        if line.strip().startswith("invoke ")
    ]
    assert [command.split()[1] for command in commands] == [
        "backup.list",
        "backup.verify",
        "backup.restore",
        "deploy.status",
    ]
    for command in commands:
        args = [arg.replace("ENV", "sandbox").replace("ID", good["id"]) for arg in shlex.split(command)[1:]]
        run = invoke(*args, timeout=1200)
        assert run.code == 0, f"{command}: {run.stdout[-3000:]}{run.stderr}"
        if args[0] == "backup.restore":
            assert "health ok" in run.stdout and "safety backup" in run.stdout and "warning" not in run.stdout
            safety = re.search(r"safety backup (\S+) kept", run.stdout).group(1)
    assert psql(sandbox, f"select count(*) from prayers where body = '{marker}'") == "0"
    assert psql(sandbox, holding) == "0"  # ended by the swap
    assert sandbox.ssh("vps1", f"test -e {BACKUPS}/{safety}.dump && echo kept").strip() == "kept"
    assert psql(sandbox, "select count(*) from pg_database where datname like 'together_pray_%'") == "0"
    assert sandbox.ssh("vps1", "test -e /var/www/together-pray/maintenance.on && echo on || echo off").strip() == "off"


def test_an_unverified_backup_is_refused_and_a_restore_needs_confirmation(deployed, sandbox):
    meta = created(invoke("backup.create", "--label=unverified", "--json"))
    refused = invoke("backup.restore", meta["id"], "--yes")
    assert refused.code == ExitCode.HOST_FAILED and "was never verified" in refused.stderr
    unconfirmed = invoke("backup.restore", meta["id"])  # no terminal to ask on
    assert unconfirmed.code == ExitCode.BAD_INPUT and "pass --yes" in unconfirmed.stderr


def test_a_pulled_backup_is_encrypted_checked_copied_and_only_the_right_key_opens_it(deployed, sandbox, tmp_path):
    meta = created(invoke("backup.create", "--label=offsite", "--json"))
    pulled = invoke("backup.pull", meta["id"], f"--to-dir={tmp_path}", "--to-host=vps2", "--json")
    assert pulled.code == 0, pulled.stdout + pulled.stderr
    path = tmp_path / f"sandbox-{meta['id']}.dump.age"
    assert path.read_bytes().startswith(b"age-encryption.org/v1")
    assert pulled.json["copied_to"] == f"vps2:/var/backups/vigil-offsite/{path.name}"
    remote = sandbox.ssh("vps2", f"sha256sum /var/backups/vigil-offsite/{path.name}").split()[0]
    assert remote == json.loads(path.with_suffix(".json").read_text())["encrypted_sha256"]
    wrong = invoke("backup.decrypt", str(path), f"--out={tmp_path / 'wrong.dump'}",
                   extra_env={"VIGIL_AGE_IDENTITY": str(x25519.Identity.generate())})
    assert (
        wrong.code == ExitCode.HOST_FAILED
        and "cannot decrypt it" in wrong.stderr
        and not (tmp_path / "wrong.dump").exists()
    )
    assert not list(tmp_path.glob("*.partial"))
    right = invoke("backup.decrypt", str(path), f"--out={tmp_path / 'offsite.dump'}")
    assert right.code == 0, right.stdout + right.stderr
    assert hashlib.sha256((tmp_path / "offsite.dump").read_bytes()).hexdigest() == meta["sha256"]


def test_the_timer_makes_a_scheduled_backup(deployed, sandbox):
    every_minute = ["--var", "backup_create_schedule=*:*:00", "--var", "backup_randomized_delay=0"]
    scheduled = invoke("provision.server", "--limit=vps1", *every_minute)
    assert scheduled.code == 0, scheduled.stdout[-2000:] + scheduled.stderr
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            made = sandbox.ssh("vps1", f"ls {BACKUPS} | grep -- '-scheduled.dump$' || true").split()
            if made:
                break
            time.sleep(5)
        assert made, sandbox.ssh(
            "vps1", "systemctl list-timers vigil-backup-create.timer; journalctl -u vigil-backup-create -n 20"
        )
        # The job ends (its status recorded, pruned) as it would under its hardening, not just its dump.
        while "ActiveState=active" in sandbox.ssh("vps1", "systemctl show -p ActiveState vigil-backup-create.service") \
                or "ActiveState=activating" in sandbox.ssh("vps1", "systemctl show -p ActiveState vigil-backup-create"):
            assert time.monotonic() < deadline + 120, "the scheduled backup job did not finish"
            time.sleep(2)
        assert "Result=success" in sandbox.ssh("vps1", "systemctl show -p Result vigil-backup-create.service"), \
            sandbox.ssh("vps1", "journalctl -u vigil-backup-create -n 30")
        status = json.loads(sandbox.ssh("vps1", "cat /var/lib/vigil/backup-status.json"))
        assert status["create"]["ok"] and status["create"]["id"].endswith("-scheduled")
        # Readable by the unprivileged probe, through its group.
        assert sandbox.ssh("vps1", "stat -c '%a %U %G' /var/lib/vigil/backup-status.json").split() == [
            "640", "root", "vigil-probe"]
    finally:
        assert invoke("provision.server", "--limit=vps1").code == 0
    assert "03:15:00" in sandbox.ssh("vps1", "systemctl cat vigil-backup-create.timer")


def test_pruning_keeps_one_a_day_the_newest_verified_and_the_pinned_safety_backups(deployed, sandbox):
    first = created(invoke("backup.create", "--label=prune-a", "--json"))["id"]
    assert invoke("backup.verify", first).code == 0
    second = created(invoke("backup.create", "--label=prune-b", "--json"))["id"]  # newer, unverified
    planned = invoke("backup.prune", "--dry-run", "--json")
    assert planned.code == 0, planned.stdout + planned.stderr
    kept, doomed = planned.json["kept"], planned.json["deleted"]
    assert kept[second].startswith("daily") and kept[first] == "newest verified"
    pinned = [backup_id for backup_id in kept if backup_id.endswith("-pre-restore")]
    assert all(kept[backup_id].startswith("pinned") for backup_id in pinned)
    on_host = set(sandbox.ssh("vps1", f"ls {BACKUPS}").split())
    assert {f"{backup_id}.dump" for backup_id in doomed} <= on_host  # a dry run deletes nothing
    pruned = invoke("backup.prune", "--json")
    assert pruned.code == 0 and pruned.json["deleted"] == doomed
    left = {name[: -len(".dump")] for name in sandbox.ssh("vps1", f"ls {BACKUPS}").split() if name.endswith(".dump")}
    assert left == set(kept)
