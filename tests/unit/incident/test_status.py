"""incident.status: a host's answer parsed, and the verdict rules, table by table (no hosts)."""

import datetime
import json
import os
import subprocess
from types import SimpleNamespace

import pytest
import requests

from vigil.backup.repository import Backup, Contents, parse_status
from vigil.core.redaction import REDACTOR, mask_log_line
from vigil.deploy.maintenance import MAINTENANCE_FLAG, maintenance_operations
from vigil.incident.endpoints import https_checks
from vigil.incident.host_status import HostFacts, host_status_command, parse_host_status
from vigil.incident.logs import SINCE, journal_command, merge_logs, parse_journal
from vigil.incident.status_rules import (
    backup_checks,
    certificate_days,
    host_checks,
    release_checks,
    repository_checks,
    verdict,
)

ANSWER = """@units
nginx.service active
together-pray-backend@green.service active
postgresql.service failed
@failed
postgresql@17-main.service
@disk
/ 42%
/var/backups/vigil 91%
@memory
2048000 1024000
@load
0.52 0.40 0.30 2
@certificate
Nov 26 03:00:00 2027 GMT
@backup
{"create": {"at": "2026-11-26T03:15:00Z", "ok": true, "id": "20261126T031500Z-scheduled"}, \
"verify": {"at": "2026-11-22T04:30:00Z", "ok": true, "id": "x"}}
@maintenance
on
@now
2026-11-26T09:15:00Z
@end
"""


def test_a_hosts_answer_is_read_whole():
    facts = parse_host_status(ANSWER)
    assert facts.units == {
        "nginx.service": "active",
        "together-pray-backend@green.service": "active",
        "postgresql.service": "failed",
    }
    assert facts.failed == ["postgresql@17-main.service"] and facts.disks == {"/": 42, "/var/backups/vigil": 91}
    assert (facts.memory, facts.load, facts.maintenance, facts.now) == (
        (2048000, 1024000),
        (0.52, 2),
        True,
        "2026-11-26T09:15:00Z",
    )
    assert facts.backup["create"]["id"] == "20261126T031500Z-scheduled"


def test_the_checks_name_each_problem():
    facts = parse_host_status(ANSWER)
    checks = {c.name: (c.state, c.detail) for c in host_checks(facts, list(facts.units), database=True, web=True)}
    assert checks["postgresql.service"] == ("fail", "failed") and checks["nginx.service"][0] == "ok"
    assert checks["failed units"] == ("fail", "postgresql@17-main.service")
    assert checks["disk /var/backups/vigil"] == ("fail", "91% used") and checks["disk /"][0] == "ok"
    assert checks["TLS certificate"] == ("ok", "364 days left")
    assert checks["maintenance mode"][0] == "warn"
    assert checks["last backup"] == ("ok", "20261126T031500Z-scheduled, 6.0 h ago")
    assert verdict(host_checks(facts, list(facts.units), database=True, web=True)) == "unhealthy"


@pytest.mark.parametrize(
    "status, expected",
    [
        ({}, [("last backup", "fail"), ("last verify", "warn")]),
        (
            {
                "create": {"at": "2026-11-25T05:00:00Z", "ok": True, "id": "old"},
                "verify": {"at": "2026-11-25T06:00:00Z", "ok": True},
            },
            [("last backup", "warn"), ("last verify", "ok")],
        ),
        (
            {
                "create": {"at": "2026-11-24T03:00:00Z", "ok": True, "id": "older"},
                "verify": {"at": "2026-11-24T04:00:00Z", "ok": True},
            },
            [("last backup", "fail"), ("last verify", "ok")],
        ),
        (
            {
                "create": {"at": "2026-11-26T03:00:00Z", "ok": True, "id": "b"},
                "verify": {"at": "2026-11-26T04:00:00Z", "ok": False, "error": "row counts differ"},
            },
            [("last backup", "ok"), ("last verify", "fail")],
        ),
        # A failure after the last good backup: the timer's run tonight failed.
        (
            {
                "create": {"at": "2026-11-25T03:00:00Z", "ok": True, "id": "b"},
                "verify": {"at": "2026-11-25T04:00:00Z", "ok": True},
                "last_failure": {"at": "2026-11-26T03:00:00Z", "command": "create", "error": "No space left on device"},
            },
            [("last backup", "warn"), ("last verify", "ok"), ("backup failure", "fail")],
        ),
    ],
)
def test_backups_are_judged_by_age_verification_and_failures_since(status, expected):
    assert [(c.name, c.state) for c in backup_checks(status, "2026-11-26T09:00:00Z")] == expected


@pytest.mark.parametrize("end, days, state", [
    ("Dec 20 09:00:00 2026 GMT", 24, "ok"), ("Dec  6 09:00:00 2026 GMT", 10, "warn"),
    ("Nov 28 09:00:00 2026 GMT", 2, "fail"), ("", None, "fail"),
])
def test_certificates_close_to_expiry_warn_then_fail(end, days, state):
    assert certificate_days(end, "2026-11-26T09:00:00Z") == days
    facts = HostFacts(certificate_end=end, now="2026-11-26T09:00:00Z")
    assert (
        next(c for c in host_checks(facts, [], database=False, web=True) if c.name == "TLS certificate").state == state
    )


def test_https_checks_want_the_app_not_just_an_answer():
    def get(url, verify, timeout):
        if url.endswith("/api/health"):
            return SimpleNamespace(status_code=503, text="maintenance", elapsed=datetime.timedelta(milliseconds=4))
        raise requests.ConnectionError("refused")

    checks = https_checks("10.0.0.1", "/ca.crt", get=get)
    assert [(c.name, c.state, c.detail) for c in checks] == [
        ("backend health (https)", "fail", "HTTP 503 in 4 ms"), ("frontend page (https)", "fail", "ConnectionError")]


def test_release_checks_carry_deploy_status_problems():
    rows = {
        "backend": {"release": "r2", "age": "3h 0m", "live": "green:3002", "problems": []},
        "frontend": {
            "release": "r1",
            "age": "1d 0h",
            "live": "",
            "problems": ["nginx's upstream names no color's port (none)"],
        },
    }
    assert [(c.name, c.state) for c in release_checks(rows)] == [
        ("backend release", "ok"),
        ("frontend release", "fail"),
    ]


def test_maintenance_is_the_flag_nginx_checks():
    on, = maintenance_operations(True)
    off, = maintenance_operations(False)
    assert on.path == off.path == MAINTENANCE_FLAG


@pytest.mark.parametrize("failed, expected", [
    (["together-pray-backend-migrate@r9.service"], [("failed release tasks", "warn")]),
    (["vigil-backup-create.service", "together-pray-backend-migrate@r9.service"],
     [("failed units", "fail"), ("failed release tasks", "warn")]),
    (["vigil-backup-create.service"], [("failed units", "fail")]),
])
def test_a_release_task_a_failed_deploy_left_warns_and_any_other_failed_unit_fails(failed, expected):
    facts = HostFacts(failed=failed)
    found = [(c.name, c.state) for c in host_checks(facts, [], database=False, web=False,
                                                      release_tasks=("together-pray-backend-migrate@",))
             if c.name.startswith("failed")]
    assert found == expected


JOURNAL_VPS1 = "\n".join(
    [
        '{"__REALTIME_TIMESTAMP": "1795662000000000", '
        '"_SYSTEMD_UNIT": "together-pray-backend@green.service", "MESSAGE": "started"}',
        '{"__REALTIME_TIMESTAMP": "1795662002000000", "_SYSTEMD_UNIT": "nginx.service", "MESSAGE": [104, 105, 255]}',
        "not json",
    ]
)
JOURNAL_VPS2 = '{"__REALTIME_TIMESTAMP": "1795662001000000", "_SYSTEMD_UNIT": "together-pray-backend@blue.service", ' \
               '"MESSAGE": "connect postgresql://app:hunter2-but-longer@10.0.0.5:5432/db failed for s3cr3t-value-xyz"}'


def test_journals_from_several_hosts_merge_by_time_with_secrets_masked():


    REDACTOR.add("s3cr3t-value-xyz")
    merged = merge_logs([parse_journal("vps1", JOURNAL_VPS1), parse_journal("vps2", JOURNAL_VPS2)])
    shown = [mask_log_line(line.render()) for line in merged]
    assert shown == [
        "2026-11-26T03:00:00.000Z vps1 together-pray-backend@green: started",
        "2026-11-26T03:00:01.000Z vps2 together-pray-backend@blue: "
        "connect postgresql://app:***@10.0.0.5:5432/db failed for ***",
        "2026-11-26T03:00:02.000Z vps1 nginx: hi\ufffd",
    ]


@pytest.mark.parametrize("since, ok", [("1 hour ago", True), ("2026-11-26 03:00", True), ("today", True),
                                       ("1 hour ago; reboot", False), ("$(id)", False), ("", False)])
def test_since_is_what_journalctl_reads_and_nothing_else(since, ok):
    assert bool(SINCE.match(since)) is ok


def test_the_journal_is_asked_for_exactly_these_units():
    command = journal_command(["together-pray-backend@*", "nginx.service"], "1 hour ago", 500)
    assert command.argv == ("journalctl", "--no-pager", "--quiet", "-o", "json", "--since", "1 hour ago", "-n", "500",
                            "-u", "together-pray-backend@*", "-u", "nginx.service") and command.sudo


# (a log line, as incident.logs, runbooks and snapshots show it)
MASKED = [
    ("JWT_SECRET=abc,def and more", "JWT_SECRET=*** and more"),
    ("password='hunter2 with spaces' ok", "password='***' ok"),
    ('{"password": "my secret pass", "user": "bob"}', '{"password": "***", "user": "bob"}'),
    ("STRIPE_KEY=sk_live_123 next", "STRIPE_KEY=*** next"),
    ("Environment=SENTRY_DSN=https://k@o.ingest.sentry.io/1", "Environment=SENTRY_DSN=***"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y", "Authorization: Bearer ***"),
    ("postgresql://app:pw@db:5432/app", "postgresql://app:***@db:5432/app"),
    (
        'duplicate key value violates unique constraint "prayers_pkey"',
        'duplicate key value violates unique constraint "prayers_pkey"',
    ),
    ("GET /api/prayers 200 12ms", "GET /api/prayers 200 12ms"),
]


@pytest.mark.parametrize("line, shown", MASKED)
def test_log_lines_lose_every_value_named_as_a_secret(line, shown):
    assert mask_log_line(line) == shown


@pytest.mark.parametrize("status, on_disk, expected", [
    # The status file lost track (a full disk left it empty, or it is unreadable): the dump on disk speaks.
    ({}, ("2026-11-26T03:00:00Z", "20261126T030000Z-scheduled"),
     ("warn", "20261126T030000Z-scheduled, 6.0 h ago (found on disk; the status file "
              "/var/lib/vigil/backup-status.json is empty)")),
    ({"unreadable": '{"create": {"at'}, ("2026-11-23T03:00:00Z", "old"),
     ("fail", "old, 78.0 h ago (found on disk; the status file /var/lib/vigil/backup-status.json is unreadable)")),
    # Nothing recorded and nothing on disk.
    ({}, ("", ""), ("fail", "none recorded")),
    # A recorded backup wins over the file listing.
    ({"create": {"at": "2026-11-26T08:00:00Z", "ok": True, "id": "b"}}, ("2026-11-20T03:00:00Z", "old"),
     ("ok", "b, 1.0 h ago")),
])
def test_the_last_backup_is_found_on_disk_when_the_status_file_lost_track(status, on_disk, expected):
    last = backup_checks(status, "2026-11-26T09:00:00Z", on_disk)[0]
    assert (last.name, last.state, last.detail) == ("last backup", *expected)


def test_the_newest_backup_on_disk_is_read_from_the_hosts_answer():
    facts = parse_host_status("@newest-backup\n2026-11-26T03:00:00Z 20261126T030000Z-scheduled\n@end\n")
    assert facts.newest_backup == ("2026-11-26T03:00:00Z", "20261126T030000Z-scheduled")
    assert parse_host_status("@newest-backup\n@end\n").newest_backup == ("", "")


def test_the_host_status_script_finds_the_newest_dump(tmp_path):
    for name, when in (("older", 1_764_120_000), ("newest", 1_764_126_000), ("partial.dump.partial", 1_764_129_000)):
        path = tmp_path / (name if name.endswith(".partial") else f"{name}.dump")
        path.write_text("x")
        os.utime(path, (when, when))
    command = host_status_command([], "", [], str(tmp_path))
    answer = subprocess.run(list(command.argv), capture_output=True, text=True, timeout=60)
    assert parse_host_status(answer.stdout).newest_backup == ("2025-11-26T03:00:00Z", "newest")


NOW = 1796309000.0  # 2026-12-03T14:43:20Z
FULL = Backup("20261203-023000F", "full", NOW - 9 * 3600 - 60, NOW - 9 * 3600, 1, 1)
STALE = Backup("20261201-023000F", "full", NOW - 60 * 3600 - 60, NOW - 60 * 3600, 1, 1)


def drilled(days_ago: float, ok: bool = True) -> dict:
    at = datetime.datetime.fromtimestamp(NOW - days_ago * 86400, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    return {"at": at, "ok": ok, "backup": FULL.label, "rto_seconds": 3.1,
            **({} if ok else {"error": "pgbackrest verify found damage in the repository: invalid checksum"})}


@pytest.mark.parametrize("contents, drill, expected", [
    (Contents(0, "ok", [FULL], NOW - 120), drilled(2),
     [("repository", "ok"), ("WAL archive", "ok"), ("last backup", "ok"), ("restore drill", "ok")]),
    # WAL stopped arriving (the archive check runs every 5 minutes), the newest backup is 60 h old,
    # the drill failed.
    (Contents(0, "ok", [STALE], NOW - 3600), drilled(0.5, ok=False),
     [("repository", "ok"), ("WAL archive", "warn"), ("last backup", "fail"), ("restore drill", "fail")]),
    (Contents(2, "no valid backups", [], None), None, [("repository", "fail"), ("restore drill", "warn")]),
    (Contents(99, "[FormatError] unable to load info file", [], None), None,
     [("repository", "fail"), ("restore drill", "warn")]),
    (Contents(0, "ok", [FULL], NOW - 120), drilled(9),
     [("repository", "ok"), ("WAL archive", "ok"), ("last backup", "ok"), ("restore drill", "warn")]),
])
def test_the_backup_hosts_repository_is_judged_by_its_window_wal_newest_backup_and_drill(contents, drill, expected):
    assert [(check.name, check.state) for check in repository_checks(contents, drill, NOW)] == expected


def test_the_repository_line_says_the_window_and_a_failed_drill_says_why():
    checks = {check.name: check.detail for check in repository_checks(
        Contents(0, "ok", [FULL], NOW - 120), drilled(0.5, ok=False), NOW)}
    assert checks["repository"] == "restore to any second from 2026-12-03 05:43:21+00 to 2026-12-03 14:41:20+00 " \
                                   "(1 backups)"
    assert checks["restore drill"] == ("20261203-023000F failed 0.5 days ago: pgbackrest verify found damage in the "
                                       "repository: invalid checksum")


@pytest.mark.parametrize("drill_part, drill", [
    ('{"at": "2026-12-03T05:00:00Z", "ok": true}', {"at": "2026-12-03T05:00:00Z", "ok": True}),
    ("", None),
    ("{not json", {"at": "", "ok": False, "error": "its result file is not JSON"}),
])
def test_the_backup_hosts_one_answer_holds_the_repository_and_the_last_drill(drill_part, drill):
    info = json.dumps([{"name": "together-pray", "status": {"code": 0, "message": "ok"}, "backup": [], "db": []}])
    contents, parsed = parse_status(f"{info}\n@wal\n1796308880.5\n@drill\n{drill_part}", "together-pray")
    assert (contents.status, contents.newest_wal, parsed) == (0, 1796308880.5, drill)
