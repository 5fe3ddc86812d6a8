"""incident.status: a host's answer parsed, and the verdict rules, table by table (no hosts)."""

import datetime
import json
import subprocess
from types import SimpleNamespace

import pytest
import requests

from tests.support.inventories import layout
from vigil.backup.repository import Backup, Contents, parse_status
from vigil.core.connectors import Result
from vigil.core.redaction import REDACTOR, mask_log_line
from vigil.deploy.maintenance import MAINTENANCE_FLAG, maintenance_operations
from vigil.incident import status
from vigil.incident.endpoints import https_checks
from vigil.incident.host_status import HostFacts, host_status_command, parse_host_status
from vigil.incident.logs import SINCE, journal_command, merge_logs, parse_journal
from vigil.incident.status_rules import (
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
/var/lib/pgbackrest/repository 91%
@memory
2048000 1024000
@load
0.52 0.40 0.30 2
@certificate
Nov 26 03:00:00 2027 GMT
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
    assert facts.failed == ["postgresql@17-main.service"]
    assert facts.disks == {"/": 42, "/var/lib/pgbackrest/repository": 91}
    assert (facts.memory, facts.load, facts.maintenance, facts.now) == (
        (2048000, 1024000),
        (0.52, 2),
        True,
        "2026-11-26T09:15:00Z",
    )


def test_the_checks_name_each_problem():
    facts = parse_host_status(ANSWER)
    checks = {c.name: (c.state, c.detail) for c in host_checks(facts, list(facts.units), web=True)}
    assert checks["postgresql.service"] == ("fail", "failed") and checks["nginx.service"][0] == "ok"
    assert checks["failed units"] == ("fail", "postgresql@17-main.service")
    assert checks["disk /var/lib/pgbackrest/repository"] == ("fail", "91% used") and checks["disk /"][0] == "ok"
    assert checks["TLS certificate"] == ("ok", "364 days left")
    assert checks["maintenance mode"][0] == "warn"
    # Backups are judged on the backup host, from its repository (repository_checks), never from a host's own answer.
    assert not [name for name in checks if "backup" in name]
    assert verdict(host_checks(facts, list(facts.units), web=True)) == "unhealthy"


@pytest.mark.parametrize("end, days, state", [
    ("Dec 20 09:00:00 2026 GMT", 24, "ok"), ("Dec  6 09:00:00 2026 GMT", 10, "warn"),
    ("Nov 28 09:00:00 2026 GMT", 2, "fail"), ("", None, "fail"),
])
def test_certificates_close_to_expiry_warn_then_fail(end, days, state):
    assert certificate_days(end, "2026-11-26T09:00:00Z") == days
    facts = HostFacts(certificate_end=end, now="2026-11-26T09:00:00Z")
    assert (
        next(c for c in host_checks(facts, [], web=True) if c.name == "TLS certificate").state == state
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
    (["vigil-pgbackrest-backup@incr.service", "together-pray-backend-migrate@r9.service"],
     [("failed units", "fail"), ("failed release tasks", "warn")]),
    (["vigil-pgbackrest-backup@incr.service"], [("failed units", "fail")]),
])
def test_a_release_task_a_failed_deploy_left_warns_and_any_other_failed_unit_fails(failed, expected):
    facts = HostFacts(failed=failed)
    found = [(c.name, c.state) for c in host_checks(facts, [], web=False,
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


def test_the_host_status_script_reports_the_filesystem_of_each_directory_asked(tmp_path):
    """HOST_STATUS for real: the directories after the units and the certificate are df'ed, / always."""
    command = host_status_command([], "", [str(tmp_path), str(tmp_path / "absent")])
    answer = subprocess.run(list(command.argv), capture_output=True, text=True, timeout=60)
    disks = parse_host_status(answer.stdout).disks
    assert set(disks) == {"/", str(tmp_path)} and all(0 <= used <= 100 for used in disks.values())


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
def test_the_backup_hosts_repository_is_judged_by_its_window_wal_last_backup_and_drill(contents, drill, expected):
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


class AnswersNothing:
    """A host that answers every question with nothing: the checks say what they can of that."""

    def run(self, command, timeout=None):
        return Result(0, "", "")


@pytest.mark.parametrize("groups, warned", [
    ({"web": ["web1"], "db": ["db1"]}, ["db1"]),                       # nothing backs the database up
    ({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]}, []),     # the backup host's lines say it
    ({"web": ["web1"]}, []),                                           # no database here to back up
])
def test_the_database_host_warns_when_the_env_has_no_backup_host(monkeypatch, groups, warned):
    monkeypatch.setattr(status, "load_inventory", lambda env: layout(groups))
    monkeypatch.setattr(status, "on_hosts", lambda inventory, hosts, ask: {
        host.name: ask(AnswersNothing(), host) for host in hosts})
    monkeypatch.setattr(status, "https_checks", lambda *args: [])
    reports = status.gather("sandbox", None)
    assert [report.host for report in reports
            if any(check == status.NO_BACKUPS for check in report.checks)] == warned
    # The backup host's empty answer is its own failing line, never the end of the whole screen.
    assert [(check.state, check.detail) for report in reports for check in report.checks
            if check.name == "repository"] == ([("fail", "pgBackRest's info is not JSON: ''")] if "backup" in groups
                                               else [])
    assert status.NO_BACKUPS.state == "warn" and "no backup host" in status.NO_BACKUPS.detail
