"""The database's WAL and backups in an encrypted pgBackRest repository on a backup host of its own.

vps3 is the session's backup host (conftest: `--group=vps3:backup`) next to vps1 (database) and
vps2; onboarding both ends makes vps1 archive its WAL there. The destroyed-host test rebuilds vps1;
test_sandbox_vpses, after this module, removes the whole sandbox anyway.
"""

import base64
import hashlib
import json
import os
import re
import shlex
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.e2e.test_deploy import add_mood_column, current_release, scratch_with_backend, variant
from tests.support.accounts import signed_in
from tests.support.alerts import alert_state, prometheus, wait_for_alert_state
from tests.support.sandbox_hosts import REPO, invoke
from vigil.backup.repository import HOLD_MARK, HOLD_UNIT, LOCK_PATH
from vigil.core.errors import ExitCode

DATABASE, REPOSITORY = "vps1", "vps3"
STANZA = "together-pray"
CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
STATE = REPO / ".vigil" / "sandbox" / "state.json"
REPOSITORY_PATH = "/var/lib/pgbackrest/repository"
REPOSITORY_DISK = "512m"
RUNBOOK = REPO / "docs" / "runbooks" / "restore.md"


@pytest.fixture(scope="module")
def repository(provisioned, sandbox):
    """The backup host's address, and the session's first and second provision.server runs (both ends in them)."""
    first, second = provisioned
    assert first.code == 0, first.stdout[-4000:] + first.stderr
    return sandbox.addresses[REPOSITORY], first, second


def as_user(sandbox, address: str, user: str, command: str, check: bool = True) -> str:
    return sandbox.ssh_at(address, f"runuser -u {user} -- sh -c '{command}'", check)


def repository_info(sandbox, address: str) -> list:
    """pgBackRest's own account of the repository, asked on the backup host."""
    return json.loads(as_user(sandbox, address, "pgbackrest",
                              f"cd / && pgbackrest --stanza={STANZA} info --output=json"))


def sql(sandbox, statement: str, database: str = "together_pray") -> str:
    """`statement` in `database` (the app's) on the database host, as postgres; its rows, one per line."""
    return sandbox.ssh(DATABASE, f"cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {database} "
                                 f"<<'SQL'\n{statement}\nSQL").strip()


def test_onboarding_both_ends_converges_and_a_second_run_changes_nothing(repository):
    _, _, second = repository  # the first converged (the fixture checks it)
    assert second.code == 0 and [second.host(host)["changed"] for host in (DATABASE, REPOSITORY)] == [0, 0], \
        second.stdout[-3000:]


def test_the_database_archives_its_wal_into_the_backup_hosts_repository(repository, sandbox):
    address, _, _ = repository
    database = sandbox.addresses[DATABASE]
    settings = sql(sandbox, "select setting from pg_settings where name in ('archive_mode', 'archive_timeout') "
                            "order by name")
    assert settings.split() == ["on", "15"]  # the sandbox's pgbackrest_archive_timeout
    # `check` switches to a new WAL segment and waits until the repository has it: archiving works end to end.
    as_user(sandbox, database, "postgres", f"cd / && pgbackrest --stanza={STANZA} check")
    info = repository_info(sandbox, address)
    assert info[0]["archive"] and info[0]["archive"][0]["max"], info


def test_a_full_backup_lands_encrypted_in_the_repository_and_opens_a_restore_window(repository, sandbox):
    address, _, _ = repository
    made = invoke("backup.create", "--type=full", "--label=first", "--json", timeout=1800)
    assert made.code == 0, made.stdout + made.stderr
    assert made.json["type"] == "full" and made.json["annotation"] == {"vigil-label": "first"}
    listed = invoke("backup.list", "--json")
    assert listed.code == 0 and listed.json["status"] == 0, listed.stdout + listed.stderr
    # The newest of the repository's backups (the session's other modules made some before).
    assert [backup["label"] for backup in listed.json["backups"]][-1] == made.json["label"]
    window = listed.json["window"]
    assert window["from"] <= window["to"], window
    table = invoke("backup.list")
    assert f"restore to any second from {window['from']}" in table.stdout, table.stdout
    info = repository_info(sandbox, address)
    assert info[0]["cipher"] == "aes-256-cbc", info
    # Encrypted at rest: pgBackRest's files are OpenSSL-format ciphertext, unreadable without the passphrase.
    header = sandbox.ssh_at(address, f"head -c 8 /var/lib/pgbackrest/repository/backup/{STANZA}/backup.info")
    assert header == "Salted__"
    # The database host holds no passphrase: it could not read its own backups if taken.
    assert "cipher" not in sandbox.ssh(DATABASE, "grep -v '^#' /etc/pgbackrest/pgbackrest.conf")


@pytest.mark.parametrize("flag, message", [("--type=snapshot", "--type: 'snapshot' is not one of full, diff, incr"),
                                           ("--label=a b", "--label: 'a b' is not a label")])
def test_bad_input_is_refused_before_the_repository_is_touched(repository, sandbox, flag, message):
    address, _, _ = repository
    before = sandbox.ssh_at(address, f"ls /var/lib/pgbackrest/repository/backup/{STANZA}")
    refused = invoke("backup.create", flag)
    assert refused.code != 0 and message in refused.stderr, refused.stderr
    assert sandbox.ssh_at(address, f"ls /var/lib/pgbackrest/repository/backup/{STANZA}") == before


def test_a_restore_to_a_second_brings_back_what_was_committed_by_then_and_its_safety_point_undoes_it(
        repository, deployed, sandbox):
    sql(sandbox, "create table if not exists pitr_marks (n int primary key)")
    sql(sandbox, "insert into pitr_marks values (1)")
    time.sleep(2)
    target = sql(sandbox, "select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    time.sleep(2)
    sql(sandbox, "insert into pitr_marks values (2)")
    # Until its WAL is archived a second is not in the window yet: `check` closes the segment and waits for it.
    as_user(sandbox, sandbox.addresses[DATABASE], "postgres", f"cd / && pgbackrest --stanza={STANZA} check")

    # The app holds its pool's connections open while the restore runs: they are cut, and it reconnects.
    def app_connections() -> int:
        # A request first: the pool closes connections idle for 10 s.
        requests.get(f"https://{sandbox.addresses[DATABASE]}/api/health", verify=str(CA), timeout=10)
        return int(sql(sandbox, "select count(*) from pg_stat_activity where usename = 'together_pray'"))

    assert app_connections() > 0
    restored = invoke("backup.restore", target, "--yes", "--json", timeout=1800)
    assert restored.code == 0, restored.stdout[-3000:] + restored.stderr
    assert sql(sandbox, "select n from pitr_marks order by n") == "1"
    assert all(restored.json["health"].values()) and restored.json["timeline"] == 2, restored.json
    assert app_connections() > 0
    safety = restored.json["safety_point"]
    # A backup on the new timeline, which going back to the safety point will leave.
    left = invoke("backup.create", "--label=left-behind", "--json", timeout=1800)
    assert left.code == 0, left.stdout[-3000:] + left.stderr

    # The moment before the restore is still there: its named restore point, on the timeline it was on.
    undone = invoke("backup.restore", safety["name"], f"--timeline={safety['timeline']}", "--yes",
                    "--json", timeout=1800)
    assert undone.code == 0, undone.stdout[-3000:] + undone.stderr
    assert sql(sandbox, "select n from pitr_marks order by n").split() == ["1", "2"]
    # The latest second of the timeline that goes on from there: replayed past the backup on the one left.
    sql(sandbox, "insert into pitr_marks values (3)")
    as_user(sandbox, sandbox.addresses[DATABASE], "postgres", f"cd / && pgbackrest --stanza={STANZA} check")
    latest = invoke("backup.restore", "latest", "--yes", "--json", timeout=1800)
    assert latest.code == 0, latest.stdout[-3000:] + latest.stderr
    assert latest.json["backup"] != left.json["label"], latest.json
    assert sql(sandbox, "select n from pitr_marks order by n").split() == ["1", "2", "3"]
    # As docs/backup.md advises after going back in time: a full backup the drill can take.
    assert invoke("backup.create", "--type=full", "--label=after-going-back", timeout=1800).code == 0


def test_the_restore_runbook_as_written_returns_to_the_second_before_the_damage_past_a_held_session(
        repository, deployed, sandbox):
    sql(sandbox, "create table if not exists pitr_marks (n int primary key)")
    sql(sandbox, "insert into pitr_marks values (100)")
    time.sleep(2)
    before_damage = sql(sandbox, "select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    time.sleep(2)
    sql(sandbox, "insert into pitr_marks values (101)")  # the damage
    as_user(sandbox, sandbox.addresses[DATABASE], "postgres", f"cd / && pgbackrest --stanza={STANZA} check")
    # A session that holds its connection for ten minutes, as a busy app's pool would.
    sandbox.ssh(DATABASE, "setsid -f runuser -u postgres -- psql -X -d together_pray -c 'select pg_sleep(600)' "
                          ">/dev/null 2>&1 < /dev/null")
    holding = ("select count(*) from pg_stat_activity where datname = 'together_pray' "
               "and query like '%pg_sleep(600)%' and pid <> pg_backend_pid()")
    deadline = time.monotonic() + 10
    while sql(sandbox, holding) != "1":
        assert time.monotonic() < deadline, "the holding session never connected"
        time.sleep(0.25)
    commands = [line.strip() for block in re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), re.S)
                for line in block.splitlines() if line.strip().startswith("invoke ")]
    assert [command.split()[1] for command in commands] == ["backup.list", "backup.restore", "deploy.status"]
    for command in commands:
        args = [arg.replace("ENV", "sandbox").replace("TIME", before_damage) for arg in shlex.split(command)[1:]]
        run = invoke(*args, timeout=1800)
        assert run.code == 0, f"{command}: {run.stdout[-3000:]}{run.stderr}"
        if args[0] == "backup.restore":
            assert "health ok" in run.stdout and "vigil-safety-" in run.stdout, run.stdout
    assert sql(sandbox, "select n from pitr_marks where n >= 100 order by n") == "100"
    assert sql(sandbox, holding) == "0"  # cut by the restore
    maintenance = sandbox.ssh(DATABASE, "test -e /var/www/together-pray/maintenance.on && echo on || echo off")
    assert maintenance.strip() == "off"


@pytest.mark.parametrize("flags, message", [
    (["2001-01-01T00:00:00Z"], "TARGET: 2001-01-01 00:00:00+00 is outside the window the repository "
                                         "on vps3 can restore to: any second from"),
    (["yesterday"], "TARGET: 'yesterday' is not a time"),
    (["20010101-000000F"], "TARGET: '20010101-000000F' is not a backup in the repository on vps3"),
])
def test_a_restore_target_the_repository_cannot_reach_is_refused_and_nothing_changes(repository, sandbox, flags,
                                                                                     message):
    before = sql(sandbox, "select pg_postmaster_start_time()")
    refused = invoke("backup.restore", *flags, "--yes")
    assert refused.code != 0 and message in refused.stderr, refused.stderr
    assert sql(sandbox, "select pg_postmaster_start_time()") == before


# Every table of the app's database with its rows, as the drill counts them.
LIVE_ROWS = r"""
select coalesce(sum((xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', n.nspname,
       c.relname), false, true, '')))[1]::text::bigint), 0), count(*)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and not c.relispartition
  and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\_toast%'
"""


def repository_backups(label: str | None = None) -> list[dict] | dict:
    listed = invoke("backup.list", "--json")
    assert listed.code == 0, listed.stdout + listed.stderr
    backups = listed.json["backups"]
    return next(backup for backup in backups if backup["label"] == label) if label else backups


def drill_alerts(sandbox) -> tuple[str | None, float]:
    """What the monitor host makes of the backup host's restore drill: the BackupFailed alert's state,
    and the seconds since the last drill that passed (its textfile metric)."""
    wait = time.time()
    while True:  # the node exporter's next scrape, after the drill's unit changed
        state = alert_state(sandbox, "BackupFailed", REPOSITORY)
        passed = prometheus(sandbox, "query", query=f'time() - vigil_restore_drill_last_success_timestamp_seconds'
                                                    f'{{host="{REPOSITORY}"}}')["result"]
        age = float(passed[0]["value"][1]) if passed else float("inf")
        if time.time() - wait > 15:
            return state, age
        time.sleep(3)


def history_files(sandbox, address: str) -> str:
    return sandbox.ssh_at(address, f"find /var/lib/pgbackrest/repository/archive/{STANZA} -name '*.history' | sort")


def test_the_restore_drill_restores_the_newest_backup_beside_the_live_database_and_records_its_rto(
        repository, deployed, sandbox):
    address, _, _ = repository
    histories = history_files(sandbox, address)
    drilled = invoke("backup.verify", "latest", "--json", timeout=1800)
    assert drilled.code == 0, drilled.stdout[-3000:] + drilled.stderr
    result = drilled.json
    rows, tables = sql(sandbox, LIVE_ROWS).split("|")
    # Every table, with the rows the live database holds (nothing writes here meanwhile).
    assert result["ok"] and result["verified"] and (result["rows"], result["tables"]) == (int(rows), int(tables)), \
        result
    assert int(tables) >= 1 and result["rto_seconds"] > 0
    newest = repository_backups()[-1]
    assert result["backup"] == newest["label"]
    assert newest["annotation"]["vigil-drill"] == "ok"
    assert newest["annotation"]["vigil-drill-rto"] == str(result["rto_seconds"])
    # Nothing is left behind: no scratch cluster, nothing listening, nothing written into the repository
    # by the scratch cluster (it was promoted on a timeline of its own, with archiving off).
    assert sandbox.ssh_at(address, "ls /var/lib/pgbackrest/drill").split() == ["last.json"]
    assert sandbox.ssh_at(address, "pg_lsclusters --no-header") == ""
    assert ":5499 " not in sandbox.ssh_at(address, "ss -ltnH")
    assert history_files(sandbox, address) == histories
    # The monitor host sees it pass: no BackupFailed, and the drill's success is a minute old at most.
    state, age = drill_alerts(sandbox)
    assert state is None and age < 60, (state, age)
    # incident.status shows the backup host's repository, its window and the drill.
    status = invoke("incident.status", "--json", f"--limit={REPOSITORY}", timeout=300)
    lines = {check["name"]: check for check in status.json["hosts"][0]["checks"]}
    assert lines["repository"]["state"] == "ok" and "restore to any second from" in lines["repository"]["detail"]
    assert lines["restore drill"]["state"] == "ok" and newest["label"] in lines["restore drill"]["detail"], lines


def test_a_flipped_byte_in_a_backup_fails_the_drill_naming_it_and_restores_pass_that_backup_over(
        repository, deployed, sandbox):
    address, _, _ = repository
    before = repository_backups()[-1]["label"]
    made = invoke("backup.create", "--type=full", "--label=to-damage", "--json", timeout=1800)
    assert made.code == 0, made.stdout + made.stderr
    label = made.json["label"]
    bundles = f"/var/lib/pgbackrest/repository/backup/{STANZA}/{label}/bundle"
    damaged = sandbox.ssh_at(address, f"ls -S {bundles} | head -n 1").strip()
    path = f"{bundles}/{damaged}"
    sandbox.ssh_at(address, f"cp -p {path} /root/undamaged && size=$(stat -c %s {path}) && "
                            f"printf '\\336\\255\\276\\357' | dd of={path} bs=1 seek=$((size / 2)) conv=notrunc "
                            "status=none")
    try:
        failed = invoke("backup.verify", "latest", timeout=1800)
        assert failed.code != 0 and f"invalid checksum '{label}/bundle/{damaged}'" in failed.stderr, \
            failed.stdout + failed.stderr
        assert repository_backups(label)["annotation"]["vigil-drill"] == "failed"
        # The drill's unit failed: the monitor host pages BackupFailed for the backup host.
        wait_for_alert_state(sandbox, "BackupFailed", REPOSITORY, ("firing",), timeout=60)

        # Restoring that backup is refused before anything changes...
        started = sql(sandbox, "select pg_postmaster_start_time()")
        refused = invoke("backup.restore", label, "--yes")
        assert refused.code != 0 and "failed its restore drill" in refused.stderr, refused.stderr
        assert sql(sandbox, "select pg_postmaster_start_time()") == started
        # ...and the latest second is restored from the sound backup before it, with the WAL since.
        sql(sandbox, "create table if not exists drill_marks (n int primary key); insert into drill_marks values (1)")
        as_user(sandbox, sandbox.addresses[DATABASE], "postgres", f"cd / && pgbackrest --stanza={STANZA} check")
        restored = invoke("backup.restore", "latest", "--yes", "--json", timeout=1800)
        assert restored.code == 0 and restored.json["backup"] == before, restored.stdout[-3000:] + restored.stderr
        assert sql(sandbox, "select n from drill_marks") == "1"
    finally:
        sandbox.ssh_at(address, f"cp -p /root/undamaged {path}")
    repaired = invoke("backup.verify", "latest", timeout=1800)
    assert repaired.code == 0, repaired.stdout[-3000:] + repaired.stderr
    wait_for_alert_state(sandbox, "BackupFailed", REPOSITORY, (None,), timeout=60)


def test_a_wrong_repository_passphrase_is_refused_before_anything_is_written(repository, sandbox, tmp_path):
    address, _, _ = repository
    config = "sha256sum /etc/pgbackrest/pgbackrest.conf"
    before = sandbox.ssh_at(address, config)
    secrets = REPO / "secrets" / "sandbox.env.age"
    saved = tmp_path / "sandbox.env.age"
    saved.write_bytes(secrets.read_bytes())
    wrong = "a-passphrase-this-repository-was-never-encrypted-with"
    try:
        changed = invoke("secrets.set", "PGBACKREST_CIPHER_PASS", input=wrong + "\n")
        assert changed.code == 0, changed.stdout + changed.stderr
        refused = invoke("provision.server", "--json", f"--limit={REPOSITORY}", timeout=1800)
        assert refused.code != 0
        assert refused.host(REPOSITORY)["changed"] == 0, refused.stdout[-3000:]
        assert "encrypted with another passphrase than the env's PGBACKREST_CIPHER_PASS" in refused.stdout, \
            refused.stdout[-3000:]
        assert wrong not in refused.stdout + refused.stderr
    finally:
        secrets.write_bytes(saved.read_bytes())
    assert sandbox.ssh_at(address, config) == before
    assert invoke("backup.list").code == 0


def test_a_pulled_set_is_a_repository_of_its_own_that_pgbackrest_verifies_still_encrypted(
        repository, sandbox, tmp_path):
    address, _, _ = repository
    newest = repository_backups()[-1]
    offsite, unpacked = "/var/tmp/vigil-e2e-offsite", "/var/tmp/vigil-e2e-pulled"
    pulled = invoke("backup.pull", "latest", f"--to-dir={tmp_path}", f"--to-host={REPOSITORY}",
                    f"--host-dir={offsite}", "--json", timeout=1800)
    assert pulled.code == 0, pulled.stdout[-3000:] + pulled.stderr
    assert pulled.json["id"] == newest["label"] and pulled.json["from"] == REPOSITORY
    tar = tmp_path / f"sandbox-{newest['label']}.pgbackrest.tar"
    record = json.loads(tar.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest() and record["sets"][-1] == newest["label"]
    try:
        # Unpacked elsewhere, it is a repository pgBackRest reads with the env's passphrase: the set is
        # listed, and `verify` finds every file of it and of its WAL sound.
        as_user(sandbox, address, "root", f"install -d -o pgbackrest -g pgbackrest -m 0750 {unpacked} && "
                                          f"tar -xf {offsite}/{tar.name} -C {unpacked} && "
                                          f"chown -R pgbackrest:pgbackrest {unpacked}")
        assert as_user(sandbox, address, "root", f"head -c 8 {unpacked}/backup/{STANZA}/{newest['label']}/"
                                                 "backup.manifest") == "Salted__"
        other = f"cd / && pgbackrest --stanza={STANZA} --repo1-path={unpacked}"
        listed = json.loads(as_user(sandbox, address, "pgbackrest", f"{other} info --output=json"))
        assert newest["label"] in [backup["label"] for backup in listed[0]["backup"]], listed
        verified = as_user(sandbox, address, "pgbackrest",
                           f"{other} --set={newest['label']} --output=text --verbose verify 2>&1", check=False)
        assert re.findall(r"^status: (\S+)", verified, re.MULTILINE) == ["ok"], verified
    finally:
        sandbox.ssh_at(address, f"rm -rf {offsite} {unpacked}")
    missing = invoke("backup.pull", "20200101-000000F", f"--to-dir={tmp_path}")
    assert missing.code != 0 and "ID: 20200101-000000F is not in vps3's repository" in missing.stderr, missing.stderr


def test_the_scheduled_backup_runs_as_its_timer_starts_it_and_prune_keeps_what_the_window_promises(
        repository, sandbox):
    address, _, _ = repository
    timers = sandbox.ssh_at(address, "systemctl list-timers --all --no-legend 'vigil-pgbackrest-*'")
    for timer in ("vigil-pgbackrest-full.timer", "vigil-pgbackrest-incr.timer", "vigil-pgbackrest-drill.timer"):
        assert timer in timers, timers
    before = [backup["label"] for backup in repository_backups()]
    # What the daily timer starts: an incremental on the newest backup, annotated as scheduled.
    sandbox.ssh_at(address, "systemctl start vigil-pgbackrest-backup@incr.service")
    made = repository_backups()[-1]
    assert made["label"] not in before and made["type"] == "incr", made
    assert made["annotation"]["vigil-label"] == "scheduled"
    window = invoke("backup.list", "--json").json["window"]
    pruned = invoke("backup.prune", "--json")
    # Everything is inside the 14-day window: pgBackRest's expire removes nothing.
    assert pruned.code == 0 and pruned.json["deleted"] == [], pruned.stdout + pruned.stderr
    after = invoke("backup.list", "--json").json
    assert after["window"]["from"] == window["from"]
    assert [backup["label"] for backup in after["backups"]] == [*before, made["label"]]


# Every table's exact row count, one "table=rows" per line.
ROW_COUNTS = ("select table_name || '=' || (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from "
              "%I.%I', table_schema, table_name), false, true, '')))[1]::text from information_schema.tables "
              "where table_schema = 'public' and table_type = 'BASE TABLE' order by 1")


def test_an_export_is_a_portable_dump_that_loads_into_another_database_with_every_row(
        repository, deployed, sandbox, tmp_path):
    exported = invoke("backup.export", f"--to-dir={tmp_path}", "--json", timeout=1800)
    assert exported.code == 0, exported.stdout[-3000:] + exported.stderr
    path = Path(exported.json["path"])
    assert path.read_bytes().startswith(b"age-encryption.org/v1")  # encrypted before it left the host
    dump = tmp_path / "export.dump"
    opened = invoke("backup.decrypt", str(path), f"--out={dump}")
    assert opened.code == 0, opened.stdout + opened.stderr
    # Loaded where the data moves to (here a new database beside the live one): every row is there.
    copy = base64.b64encode(dump.read_bytes()).decode()
    try:
        sandbox.ssh(DATABASE, f"base64 -d > /var/tmp/vigil-e2e-export.dump <<'EOF'\n{copy}\nEOF\n"
                              "cd / && runuser -u postgres -- createdb vigil_e2e_export && "
                              "runuser -u postgres -- pg_restore --no-owner --exit-on-error -d vigil_e2e_export "
                              "/var/tmp/vigil-e2e-export.dump")
        assert sql(sandbox, ROW_COUNTS, database="vigil_e2e_export") == sql(sandbox, ROW_COUNTS)
    finally:
        sandbox.ssh(DATABASE, "cd / && runuser -u postgres -- dropdb --if-exists vigil_e2e_export; "
                              "rm -f /var/tmp/vigil-e2e-export.dump")


def test_a_branch_of_a_past_second_is_a_new_database_beside_the_live_one_which_is_not_touched(
        repository, deployed, sandbox):
    sql(sandbox, "drop table if exists branch_marks; create table branch_marks (n int primary key); "
                 "insert into branch_marks values (1)")
    time.sleep(2)
    moment = sql(sandbox, "select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    time.sleep(2)
    sql(sandbox, "insert into branch_marks values (2)")
    as_user(sandbox, sandbox.addresses[DATABASE], "postgres", f"cd / && pgbackrest --stanza={STANZA} check")
    started = sql(sandbox, "select pg_postmaster_start_time()")

    made = invoke("backup.branch", "--name=before_two", f"--at={moment}", "--json", timeout=1800)
    assert made.code == 0, made.stdout[-3000:] + made.stderr
    assert sql(sandbox, "select n from branch_marks", database="before_two") == "1"
    rows, tables = sql(sandbox, LIVE_ROWS, database="before_two").split("|")
    assert (made.json["rows"], made.json["tables"]) == (int(rows), int(tables))
    # The app's role owns it and everything in it, as it owns the live database.
    assert sql(sandbox, "select pg_get_userbyid(datdba) from pg_database where datname = 'before_two'") == \
        "together_pray"
    assert sql(sandbox, "select distinct tableowner from pg_tables where schemaname = 'public'",
               database="before_two") == "together_pray"
    # The live database went on as it was: not restarted, both rows there.
    assert sql(sandbox, "select pg_postmaster_start_time()") == started
    assert sql(sandbox, "select n from branch_marks order by n").split() == ["1", "2"]

    taken = invoke("backup.branch", "--name=before_two", f"--at={moment}")
    assert taken.code != 0 and "a database named before_two already exists" in taken.stderr, taken.stderr
    assert sql(sandbox, "select n from branch_marks", database="before_two") == "1"
    for flags, message in ((["--name=together_pray"], "is the app's or PostgreSQL's own database"),
                           (["--name=together_pray", "--drop"], "is the app's or PostgreSQL's own database"),
                           (["--name=x", "--at=yesterday"], "--at: 'yesterday' is not a time")):
        refused = invoke("backup.branch", *flags)
        assert refused.code != 0 and message in refused.stderr, refused.stderr
    dropped = invoke("backup.branch", "--name=before_two", "--drop")
    assert dropped.code == 0, dropped.stdout + dropped.stderr
    assert sql(sandbox, "select count(*) from pg_database where datname = 'before_two'") == "0"


def test_a_migrating_deploy_makes_a_restore_point_and_a_rollback_returns_the_database_to_it(
        repository, deployed, sandbox, tmp_path):
    """With a backup host, a deploy makes a restore point before it migrates (vigil.deploy.safety), and
    `deploy.rollback --restore-point` undoes the migration by the database's history: the database
    returns to the point, then the code to the release before, under maintenance mode."""
    # The deploy user's root helper takes only its two words.
    as_deploy = "runuser -u deploy -- sudo -n /usr/local/sbin/vigil-restore-point"
    assert "password is required" in sandbox.ssh(DATABASE, f"cd / && {as_deploy} drop 2>&1 || true")
    sql(sandbox, "drop table if exists migrate_marks; create table migrate_marks (n int primary key); "
                 "insert into migrate_marks values (1)")
    columns = "select column_name from information_schema.columns where table_name = 'prayers' order by 1"
    web = ("vps1", "vps2")
    before, schema = {host: current_release(sandbox, host) for host in web}, sql(sandbox, columns)
    inventory = scratch_with_backend(sandbox, tmp_path, variant(tmp_path, "with-mood", add_mood_column))
    migrated = invoke("deploy.backend", "--json", inventory=inventory, timeout=900)
    assert migrated.code == 0, migrated.stdout[-3000:] + migrated.stderr
    release = current_release(sandbox, "vps1")
    # The first host ran the migration, after the restore point, and recorded it beside the release.
    record = json.loads(sandbox.ssh("vps1", f"cat /srv/together-pray/backend/releases/{release}/"
                                            ".vigil-restore-point.json"))
    made = next(op for op in migrated.host("vps1")["operations"] if op["name"] == "Make a restore point.")
    assert made["summary"].startswith(f"restore point {record['name']} ") and record["release"] == release
    assert "mood" in sql(sandbox, columns).split()
    sql(sandbox, "insert into migrate_marks values (2)")  # a write after the migration, lost by the restore

    # The database is every web host's: a rollback that would leave one serving the new release is refused.
    partial = invoke("deploy.rollback", "--app=backend", "--restore-point", "--yes", "--limit=vps2",
                     inventory=inventory, timeout=300)
    assert partial.code != 0 and "--limit must select them all; it leaves out vps1" in partial.stderr, partial.stderr
    assert sql(sandbox, "select n from migrate_marks order by n") == "1\n2"

    rolled = invoke("deploy.rollback", "--app=backend", "--restore-point", "--yes", "--json", inventory=inventory,
                    timeout=1800)
    assert rolled.code == 0, rolled.stdout[-3000:] + rolled.stderr
    assert rolled.json["restore"]["target"] == f"restore point {record['name']}", rolled.stdout[-3000:]
    assert {host["host"]: host["status"] for host in rolled.json["rollback"]} == {"vps1": "changed", "vps2": "changed"}
    assert {host: current_release(sandbox, host) for host in web} == before
    assert sql(sandbox, columns) == schema and sql(sandbox, "select n from migrate_marks order by n") == "1"
    assert all(healthy for healthy in rolled.json["restore"]["health"].values())
    # The release serving now keeps only its own, older restore point (its first deploy ran the first
    # migrations), if any: a second call could never return to the point just restored to. Unconfirmed,
    # with no terminal to ask on (or that point outside the window, or none), it changes nothing.
    points = [sandbox.ssh(host, f"cat /srv/together-pray/backend/releases/{before[host]}/.vigil-restore-point.json "
                                "2>/dev/null || true").strip() for host in web]
    made_at = record["name"].rsplit("-", 1)[1]  # a point's name ends in the UTC time it was made
    assert all(json.loads(found)["name"].rsplit("-", 1)[1] < made_at for found in points if found), points
    again = invoke("deploy.rollback", "--app=backend", "--restore-point", inventory=inventory, timeout=300)
    assert again.code == ExitCode.BAD_INPUT, again.stdout + again.stderr
    assert sql(sandbox, "select n from migrate_marks order by n") == "1"


def test_a_backup_host_out_of_reach_alerts_and_the_archive_catches_up_with_no_gap(repository, deployed, sandbox):
    address, _, _ = repository
    database = sandbox.addresses[DATABASE]
    drop = f"ufw insert 1 deny from {database}"
    sandbox.ssh_at(address, drop)  # the backup host's firewall drops the database host
    try:
        sql(sandbox, "create table if not exists outage_marks (n int primary key)")
        sql(sandbox, "insert into outage_marks values (1)")
        time.sleep(2)
        inside = sql(sandbox, "select to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
        time.sleep(2)
        sql(sandbox, "insert into outage_marks values (2)")  # the database keeps taking writes
        failed = sandbox.ssh(DATABASE, "systemctl start vigil-pgbackrest-check.service", check=False)
        assert "failed" in failed or sandbox.ssh(
            DATABASE, "systemctl show -p Result --value vigil-pgbackrest-check.service").strip() != "success"
        # The monitor host sees the archive check fail: WalArchivingFailing is on its way (it waits 5 min).
        wait_for_alert_state(sandbox, "WalArchivingFailing", DATABASE, ("pending", "firing"), timeout=60)
    finally:
        sandbox.ssh_at(address, f"ufw delete deny from {database}")
    # Back in reach: the WAL that waited on the database host reaches the repository, with no gap.
    sandbox.ssh(DATABASE, "systemctl start vigil-pgbackrest-check.service")
    wait_for_alert_state(sandbox, "WalArchivingFailing", DATABASE, (None,), timeout=60)
    restored = invoke("backup.restore", inside, "--yes", "--json", timeout=1800)
    assert restored.code == 0, restored.stdout[-3000:] + restored.stderr
    assert sql(sandbox, "select n from outage_marks order by n") == "1"


def test_a_backup_and_a_restore_never_run_at_once(repository, deployed, sandbox):
    address, _, _ = repository
    # A backup running (pgBackRest's backup lock held, as a backup holds it): a restore is refused
    # before anything changes.
    started = sql(sandbox, "select pg_postmaster_start_time()")
    sandbox.ssh_at(address, f"systemd-run --quiet --unit=vigil-e2e-backup --uid=pgbackrest flock "
                            f"{LOCK_PATH}/{STANZA}-backup-1.lock sleep 300 && sleep 1")
    try:
        refused = invoke("backup.restore", "latest", "--yes", timeout=600)
        assert refused.code != 0 and "nothing was restored: a backup is running" in refused.stderr, refused.stderr
        assert sql(sandbox, "select pg_postmaster_start_time()") == started
    finally:
        sandbox.ssh_at(address, "systemctl stop vigil-e2e-backup")
    # A restore running: a backup asked for meanwhile is refused by pgBackRest, and vigil says why.
    with ThreadPoolExecutor(1) as pool:
        restoring = pool.submit(invoke, "backup.restore", "latest", "--yes", "--json", timeout=1800)
        deadline = time.monotonic() + 120
        while sandbox.ssh_at(address, f"test -e {HOLD_MARK} && echo held || true").strip() != "held":
            assert time.monotonic() < deadline and not restoring.done(), "the restore never held the backup lock"
            time.sleep(0.5)
        refused = invoke("backup.create", "--label=during-a-restore", timeout=600)
        restored = restoring.result()
    assert refused.code != 0 and "a restore of the database is running" in refused.stderr, refused.stderr
    assert restored.code == 0, restored.stdout[-3000:] + restored.stderr
    assert "during-a-restore" not in json.dumps(repository_backups())
    # Released once the restore ended: the next backup is not refused (test_a_full_repository_disk_...).
    assert sandbox.ssh_at(address, f"systemctl is-active {HOLD_UNIT} || true").strip() != "active"


def move_the_repository_onto_a_disk_of_its_own(sandbox, address: str) -> None:
    """As an operator gives the repository a disk of its own (here a REPOSITORY_DISK filesystem, so that
    filling it fills nothing else): pgBackRest stopped on both ends while it is copied (WAL waits on the
    database host), the new filesystem mounted in its place, pgBackRest started again."""
    ends = ((sandbox.addresses[DATABASE], "postgres"), (address, "pgbackrest"))
    for host, user in ends:
        as_user(sandbox, host, user, f"cd / && pgbackrest --stanza={STANZA} stop")
    try:
        disk = "/mnt/vigil-e2e-repository"
        sandbox.ssh_at(address, f"mkdir -p {disk} && mount -t tmpfs -o size={REPOSITORY_DISK},mode=0750,"
                                f"uid=$(id -u pgbackrest),gid=$(id -g pgbackrest) vigil-e2e-repository {disk} && "
                                f"cp -a {REPOSITORY_PATH}/. {disk}/ && mount --bind {disk} {REPOSITORY_PATH}")
    finally:
        for host, user in ends:
            as_user(sandbox, host, user, f"cd / && pgbackrest --stanza={STANZA} start")


def test_a_full_repository_disk_alerts_records_no_broken_backup_and_recovers_once_freed(
        repository, deployed, sandbox):
    address, _, _ = repository
    move_the_repository_onto_a_disk_of_its_own(sandbox, address)
    before = [backup["label"] for backup in repository_backups()]
    filler = f"{REPOSITORY_PATH}/vigil-e2e-filler"
    sandbox.ssh_at(address, f"dd if=/dev/zero of={filler} bs=1M status=none 2>/dev/null; df --output=avail "
                            f"{REPOSITORY_PATH} | tail -n 1 | grep -qx ' *0'")  # full: not a byte left
    try:
        refused = invoke("backup.create", "--type=full", "--label=no-room", timeout=1800)
        assert refused.code != 0 and "the repository's disk is full (100% used)" in refused.stderr, \
            refused.stdout + refused.stderr
        # Nothing half-written is listed as a backup, and the monitor host sees the repository's disk full.
        assert [backup["label"] for backup in repository_backups()] == before
        wait_for_alert_state(sandbox, "DiskAlmostFull", REPOSITORY, ("pending", "firing"), timeout=60)
        sql(sandbox, "create table if not exists full_marks (n int primary key); insert into full_marks values (1)")
    finally:
        sandbox.ssh_at(address, f"rm -f {filler}")
    # Room again: the WAL that waited reaches the repository, a backup lands, the check recovers.
    as_user(sandbox, sandbox.addresses[DATABASE], "postgres", f"cd / && pgbackrest --stanza={STANZA} check")
    made = invoke("backup.create", "--type=full", "--label=room-again", "--json", timeout=1800)
    assert made.code == 0, made.stdout + made.stderr
    assert [backup["label"] for backup in repository_backups()] == [*before, made.json["label"]]
    wait_for_alert_state(sandbox, "DiskAlmostFull", REPOSITORY, (None,), timeout=60)


def post_prayer(address: str, body: str) -> dict:
    answer = requests.post(f"https://{address}/api/prayers", json={"body": body}, verify=str(CA), timeout=10,
                           headers=signed_in(f"https://{address}", str(CA), name="dr"))
    answer.raise_for_status()
    return answer.json()


def prayers(address: str) -> set[str]:
    answer = requests.get(f"https://{address}/api/prayers", verify=str(CA), timeout=10)
    answer.raise_for_status()
    return {prayer["body"] for prayer in answer.json()}


def test_a_database_host_lost_for_good_is_rebuilt_with_everything_archived_before_the_loss(
        repository, deployed, sandbox):
    """Runs last in this module: it replaces vps1 (the database host, and a web host) as a disk that died would."""
    web = sandbox.addresses["vps2"]
    kept = [post_prayer(web, f"before the loss {n}")["body"] for n in range(5)]
    # PostgreSQL closes the segment holding them within archive_timeout (15 s in the sandbox), and it is
    # pushed at once: wait until the archiver reports that segment, or a later one, in the repository.
    written = sql(sandbox, "select pg_walfile_name(pg_current_wal_lsn())")
    deadline = time.monotonic() + 90
    while sql(sandbox, f"select coalesce(last_archived_wal >= '{written}', false) from pg_stat_archiver") != "t":
        assert time.monotonic() < deadline, f"{written} not archived within 90 s"
        time.sleep(1)
    post_prayer(web, "in the last seconds")  # may be lost: within archive_timeout of the loss (the RPO)
    pid = next(host["pid"] for host in json.loads(STATE.read_text())["hosts"] if host["name"] == DATABASE)
    os.kill(pid, signal.SIGKILL)  # the power cut: no shutdown, nothing flushed or archived after this
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.5)

    replaced = invoke("sandbox.up", "--hosts=3", f"--replace={DATABASE}", timeout=1200)
    assert replaced.code == 0, replaced.stdout + replaced.stderr
    onboarded = invoke("provision.server", f"--limit={DATABASE},{REPOSITORY}", timeout=1800)
    assert onboarded.code == 0, onboarded.stdout[-4000:] + onboarded.stderr
    # The new host made its own TLS certificate: the web hosts verify the database by it.
    pushed = invoke("secrets.push")
    assert pushed.code == 0, pushed.stdout[-3000:] + pushed.stderr
    restored = invoke("backup.restore", "latest", "--yes", "--json", timeout=1800)
    # vps1 runs no app yet (the runbook's last step deploys it): its health fails at once, vps2's is back.
    assert restored.json["safety_point"] is None and restored.json["health"] == {DATABASE: False, "vps2": True}, \
        restored.stdout[-3000:] + restored.stderr
    assert set(kept) <= prayers(web)
    # The restored cluster archives on into the same repository, and its restore drill passes.
    as_user(sandbox, sandbox.addresses[DATABASE], "postgres", f"cd / && pgbackrest --stanza={STANZA} check")
    drilled = invoke("backup.verify", "latest", timeout=1800)
    assert drilled.code == 0, drilled.stdout[-3000:] + drilled.stderr
