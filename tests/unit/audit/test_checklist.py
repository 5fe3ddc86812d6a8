"""audit.security's certificate and backup items, from incident.status's reports, table by table (no hosts)."""

import pytest

from vigil.audit.checklist import status_items
from vigil.incident.status import HostReport
from vigil.incident.status_rules import Check

WEB = HostReport("web1", ["web"], [Check("TLS certificate", "ok", "80 days left"), Check("load", "ok", "0.1")])
DATABASE = HostReport("db1", ["database"], [Check("postgresql.service", "ok", "active")])
REPOSITORY_OK = Check("repository", "ok", "restore to any second from 2026-12-01 02:30:31+00 to 2026-12-03 14:41:20+00 "
                                          "(3 backups)")
HEALTHY = HostReport("backup1", ["backup"], [
    REPOSITORY_OK, Check("WAL archive", "ok", "the newest WAL arrived 2 min ago"),
    Check("last backup", "ok", "20261203-023000F (full), 9.0 h ago"),
    Check("restore drill", "ok", "20261203-023000F passed 0.4 days ago")])
STALE = HostReport("backup1", ["backup"], [REPOSITORY_OK,
                                           Check("last backup", "fail", "20261201-023000F (full), 60.0 h ago"),
                                           Check("restore drill", "warn", "none yet (invoke backup.verify latest)")])
EMPTY = HostReport("backup1", ["backup"], [
    Check("repository", "fail", "no backup yet: nothing can be restored (invoke backup.create --type=full)"),
    Check("restore drill", "warn", "none yet (invoke backup.verify latest)")])
INFO_FAILED = HostReport("backup1", ["backup"], [
    Check("repository", "fail", "pgBackRest's info failed: ERROR: [103]: unable to find a valid repository")])
GONE = HostReport("backup1", ["backup"], unreachable="connection refused")
NO_BACKUP_HOST = ("the env has no backup host (inventory group `backup`, roles/pgbackrest): "
                  "nothing backs the database up")
BACKUP_ITEMS = ("backups recent", "backups verified", "backup repository healthy")

# (reports, has_backup_host, expected items: (name, host, ok, evidence))
CASES = [
    ([WEB, DATABASE, HEALTHY], True, [
        ("certificate not close to expiry", "web1", True, "80 days left"),
        ("backups recent", "backup1", True, "20261203-023000F (full), 9.0 h ago"),
        ("backups verified", "backup1", True, "20261203-023000F passed 0.4 days ago"),
        ("backup repository healthy", "backup1", True, REPOSITORY_OK.detail)]),
    # A warning is not a pass: a drill that never ran verifies nothing.
    ([STALE], True, [
        ("backups recent", "backup1", False, "20261201-023000F (full), 60.0 h ago"),
        ("backups verified", "backup1", False, "none yet (invoke backup.verify latest)"),
        ("backup repository healthy", "backup1", True, REPOSITORY_OK.detail)]),
    # No backup yet, so no "last backup" line: the item fails with the repository's reason.
    ([EMPTY], True, [
        ("backups recent", "backup1", False, EMPTY.checks[0].detail),
        ("backups verified", "backup1", False, "none yet (invoke backup.verify latest)"),
        ("backup repository healthy", "backup1", False, EMPTY.checks[0].detail)]),
    ([INFO_FAILED], True, [(item, "backup1", False, INFO_FAILED.checks[0].detail) for item in BACKUP_ITEMS]),
    ([GONE], True, [(item, "backup1", False, "the backup host could not be asked: connection refused")
                    for item in BACKUP_ITEMS]),
    # No backup host in the env: nothing backs the database up, which fails on the database host.
    ([WEB, DATABASE], False, [("certificate not close to expiry", "web1", True, "80 days left"),
                              *[(item, "db1", False, NO_BACKUP_HOST) for item in BACKUP_ITEMS]]),
    # --limit left the env's backup host out: its items are not this run's to judge.
    ([WEB, DATABASE], True, [("certificate not close to expiry", "web1", True, "80 days left")]),
    ([WEB], False, [("certificate not close to expiry", "web1", True, "80 days left")]),
]


@pytest.mark.parametrize("reports, has_backup_host, expected", CASES, ids=[
    "healthy", "stale", "no backup yet", "info failed", "backup host unreachable", "no backup host",
    "backup host not selected", "database not selected"])
def test_backup_items_come_from_the_backup_hosts_repository_checks(reports, has_backup_host, expected):
    items = status_items(reports, has_backup_host)
    assert [(item.name, item.host, item.ok, item.evidence) for item in items] == expected
