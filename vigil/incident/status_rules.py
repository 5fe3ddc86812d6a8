"""The verdicts of `incident.status`, pure: one host's facts in, a line per concern out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from vigil.backup.repository import STANZA_NO_BACKUP, STANZA_OK, Contents, utc
from vigil.database.cluster import ClusterStatus
from vigil.incident.host_status import HostFacts
from vigil.monitor.alerts import FiringAlert

OK, WARN, FAIL = "ok", "warn", "fail"
# Thresholds: a disk this full, memory this scarce, a certificate this close to expiry, the repository's newest
# backup this old.
DISK_WARN, DISK_FAIL = 80, 90
MEMORY_WARN = 10  # % available
CERT_WARN_DAYS, CERT_FAIL_DAYS = 21, 7
BACKUP_WARN_HOURS, BACKUP_FAIL_HOURS = 26, 50
# The database host's archive check closes a WAL segment every 5 minutes: WAL this old has stopped coming.
WAL_LAG_WARN_SECONDS = 900
# The restore drill runs weekly: a pass older than this proves little about today's backups.
DRILL_WARN_DAYS = 8


@dataclass(frozen=True)
class Check:
    """One line of the status screen."""

    name: str
    state: str  # ok, warn, fail
    detail: str


def certificate_days(end: str, now: str) -> int | None:
    """Whole days from `now` (ISO) to openssl's -enddate ("Nov 26 03:00:00 2027 GMT")."""
    try:
        expires = datetime.strptime(re.sub(r"\s+", " ", end), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=timezone.utc)
        current = datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int((expires - current).total_seconds() // 86400)


def host_checks(facts: HostFacts, expected_units: list[str], web: bool,
                release_tasks: tuple[str, ...] = ()) -> list[Check]:
    """The verdict on one host's facts, a line per concern.

    release_tasks: unit name prefixes of the app's release tasks ("together-pray-backend-migrate@"): one
    left failed by a deploy is that deploy's story (it marked the release bad and said so), so it warns.
    """
    checks = []
    for unit in expected_units:
        state = facts.units.get(unit, "unknown")
        checks.append(Check(unit, OK if state == "active" else FAIL, state))
    left_by_deploys = [unit for unit in facts.failed if unit.startswith(release_tasks)] if release_tasks else []
    others = [unit for unit in facts.failed if unit not in left_by_deploys]
    if others:
        checks.append(Check("failed units", FAIL, ", ".join(others)))
    if left_by_deploys:
        checks.append(Check("failed release tasks", WARN, f"{', '.join(left_by_deploys)} (a failed deploy's; "
                                                          "deploy.releases shows the release marked bad)"))
    for directory, used in sorted(facts.disks.items()):
        state = FAIL if used >= DISK_FAIL else WARN if used >= DISK_WARN else OK
        checks.append(Check(f"disk {directory}", state, f"{used}% used"))
    total, available = facts.memory
    if total:
        free = round(100 * available / total)
        checks.append(Check("memory", WARN if free < MEMORY_WARN else OK, f"{free}% available of {total // 1024} MiB"))
    one, cores = facts.load
    checks.append(Check("load", WARN if one > 2 * cores else OK, f"{one:.2f} on {cores} cores"))
    if web:
        days = certificate_days(facts.certificate_end, facts.now)
        if days is None:
            checks.append(Check("TLS certificate", FAIL, "not readable"))
        else:
            state = FAIL if days < CERT_FAIL_DAYS else WARN if days < CERT_WARN_DAYS else OK
            checks.append(Check("TLS certificate", state, f"{days} days left"))
        if facts.maintenance:
            checks.append(Check("maintenance mode", WARN, "on: visitors get the maintenance page"))
    return checks


def repository_checks(contents: Contents, drill: dict | None, now: float) -> list[Check]:
    """The backup host's pgBackRest repository: its state and restore window, WAL still arriving, the
    newest backup's age, and the last restore drill (its result file's document, None before the first)."""
    if contents.status not in (STANZA_OK, STANZA_NO_BACKUP):
        checks = [Check("repository", FAIL, f"pgBackRest says: {contents.message} (code {contents.status})")]
    elif contents.window is None:
        checks = [Check("repository", FAIL, "no backup yet: nothing can be restored "
                                            "(invoke backup.create --type=full)")]
    else:
        start, end = contents.window
        checks = [Check("repository", OK, f"restore to any second from {utc(start)} to {utc(end)} "
                                          f"({len(contents.backups)} backups)")]
    if contents.newest_wal is not None:
        lag = now - contents.newest_wal
        checks.append(Check("WAL archive", WARN if lag > WAL_LAG_WARN_SECONDS else OK,
                            f"the newest WAL arrived {lag / 60:.0f} min ago"))
    if contents.backups:
        newest = contents.backups[-1]
        age = (now - newest.stopped) / 3600
        state = FAIL if age > BACKUP_FAIL_HOURS else WARN if age > BACKUP_WARN_HOURS else OK
        checks.append(Check("last backup", state, f"{newest.label} ({newest.type}), {age:.1f} h ago"))
    checks.append(drill_check(drill, now))
    return checks


def drill_check(drill: dict | None, now: float) -> Check:
    """The last restore drill: passed lately, passed too long ago, failed, or none yet."""
    if not drill:
        return Check("restore drill", WARN, "none yet (invoke backup.verify latest)")
    try:
        at = datetime.strptime(str(drill.get("at")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return Check("restore drill", FAIL, f"its result has no time: {drill.get('at')!r}")
    days = (now - at) / 86400
    if drill.get("ok") is not True:
        return Check("restore drill", FAIL, f"{drill.get('backup') or 'the newest backup'} failed "
                                            f"{days:.1f} days ago: {drill.get('error', 'no reason given')}")
    return Check("restore drill", WARN if days > DRILL_WARN_DAYS else OK,
                 f"{drill.get('backup')} passed {days:.1f} days ago, restored in {drill.get('rto_seconds')}s")


def alert_checks(alerts: list[FiringAlert]) -> list[Check]:
    """The monitor host's line: the alerts Alertmanager sends now (one line each), or none firing."""
    if not alerts:
        return [Check("alerts", OK, "none firing")]
    return [Check(f"alert {alert.name}", FAIL if alert.severity == "page" else WARN,
                  f"on {alert.host} since {alert.since}: {alert.summary}") for alert in alerts]


def release_checks(rows: dict[str, dict]) -> list[Check]:
    """From deploy.status rows (service -> row): the current release, its age, and what is wrong."""
    return [
        Check(
            f"{service} release",
            FAIL if row["problems"] else OK,
            "; ".join(row["problems"]) if row["problems"] else f"{row['release']} ({row['age']} ago, {row['live']})",
        )
        for service, row in rows.items()
    ]


def verdict(checks: list[Check]) -> str:
    states = {check.state for check in checks}
    return "unhealthy" if FAIL in states else "degraded" if WARN in states else "healthy"


def cluster_checks(status: ClusterStatus) -> dict[str, Check]:
    """Each member's `cluster` line: its role and state, and what is wrong with the cluster (on every
    member's line, so the screen says it wherever one looks). No leader fails; other problems warn."""
    problems = status.problems()
    level = FAIL if status.leader is None else WARN if problems else OK
    listed = {member.name: member for member in status.members}
    checks = {}
    for name in status.expected:
        member = listed.get(name)
        if member is not None:
            text = f"{member.role.lower()}, {member.state}" + (
                f", timeline {member.timeline}" if member.timeline is not None else "") + (
                f", {member.lag_mb:g} MB behind" if member.lag_mb else "")
        elif name in status.own:
            text = f"{status.own[name].role} ({status.own[name].state}), by its own account"
        else:
            text = "not in the cluster"
        checks[name] = Check("cluster", level, "; ".join([text, *problems]))
    return checks
