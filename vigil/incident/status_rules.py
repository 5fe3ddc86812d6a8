"""The verdicts of `incident.status`, pure: one host's facts in, a line per concern out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from vigil.incident.host_status import HostFacts

OK, WARN, FAIL = "ok", "warn", "fail"
# Thresholds: a disk this full, memory this scarce, a certificate this close to expiry, a backup this old.
DISK_WARN, DISK_FAIL = 80, 90
MEMORY_WARN = 10  # % available
CERT_WARN_DAYS, CERT_FAIL_DAYS = 21, 7
BACKUP_WARN_HOURS, BACKUP_FAIL_HOURS = 26, 50


@dataclass(frozen=True)
class Check:
    """One line of the status screen."""

    name: str
    state: str  # ok, warn, fail
    detail: str


def _hours_since(when: str, now: str) -> float | None:
    try:
        parse = lambda text: datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)  # noqa: E731
        return (parse(now) - parse(when)).total_seconds() / 3600
    except (TypeError, ValueError):
        return None


def certificate_days(end: str, now: str) -> int | None:
    """Whole days from `now` (ISO) to openssl's -enddate ("Nov 26 03:00:00 2027 GMT")."""
    try:
        expires = datetime.strptime(re.sub(r"\s+", " ", end), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=timezone.utc)
        current = datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int((expires - current).total_seconds() // 86400)


def host_checks(facts: HostFacts, expected_units: list[str], database: bool, web: bool,
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
    if database:
        checks += backup_checks(facts.backup, facts.now, facts.newest_backup)
    return checks


def backup_checks(status: dict, now: str, on_disk: tuple[str, str] = ("", "")) -> list[Check]:
    """The newest backup's age, the last verification, and the last failure if it came after them.

    on_disk: (when, id) of the newest backup file, which speaks when the status file has lost track.
    """
    checks = []
    created = status.get("create", {})
    age = _hours_since(created.get("at", ""), now) if created.get("ok") else None
    disk_age = _hours_since(on_disk[0], now) if on_disk[0] else None
    if age is None and disk_age is not None:
        lost = "unreadable" if "unreadable" in status else "empty" if not status else "without a good backup"
        state = FAIL if disk_age > BACKUP_FAIL_HOURS else WARN
        checks.append(Check("last backup", state, f"{on_disk[1]}, {disk_age:.1f} h ago (found on disk; the status "
                                                  f"file /var/lib/vigil/backup-status.json is {lost})"))
    elif age is None:
        checks.append(Check("last backup", FAIL, "none recorded"))
    else:
        state = FAIL if age > BACKUP_FAIL_HOURS else WARN if age > BACKUP_WARN_HOURS else OK
        checks.append(Check("last backup", state, f"{created.get('id', '?')}, {age:.1f} h ago"))
    verified = status.get("verify")
    if verified:
        checks.append(Check("last verify", OK if verified.get("ok") else FAIL,
                            f"{verified.get('id', '?')} at {verified.get('at', '?')}"
                            + ("" if verified.get("ok") else f": {verified.get('error', 'failed')}")))
    else:
        checks.append(Check("last verify", WARN, "never verified"))
    failure = status.get("last_failure")
    if failure and failure.get("at", "") > max(
        created.get("at", "") if created.get("ok") else "", (verified or {}).get("at", "")
    ):
        checks.append(
            Check(
                "backup failure", FAIL, f"{failure.get('command')} at {failure.get('at')}: {failure.get('error', '')}"
            )
        )
    return checks


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
