"""A checklist's line: what was checked, on which host, pass or fail, and the evidence."""

from __future__ import annotations

from dataclasses import dataclass

from vigil.incident.status import HostReport
from vigil.incident.status_rules import OK

# incident.status's line -> the checklist's item. The backup items judge the backup host's pgBackRest
# repository (status_rules.repository_checks), the only place backups are kept.
CERTIFICATE_ITEMS = {"TLS certificate": "certificate not close to expiry"}
BACKUP_ITEMS = {"last backup": "backups recent", "restore drill": "backups verified",
                "repository": "backup repository healthy"}
NO_BACKUP_HOST = ("the env has no backup host (inventory group `backup`, roles/pgbackrest): "
                  "nothing backs the database up")


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` 0.95: p95) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) + 1)) - 1))]


@dataclass(frozen=True)
class Item:
    """One line of the checklist: what, on which host, pass or fail, and the evidence."""

    name: str
    host: str
    ok: bool
    evidence: str


def status_items(reports: list[HostReport], has_backup_host: bool) -> list[Item]:
    """Certificates and backups, as incident.status judges them: a line passes only when it is "ok".

    The backup items are the backup host's; in an env without one (`has_backup_host`, from the
    inventory: --limit may leave the backup host's report out) they fail on its database host.
    """
    items = []
    for report in reports:
        checks = {check.name: check for check in report.checks}
        items += [Item(item, report.host, checks[name].state == OK, checks[name].detail)
                  for name, item in CERTIFICATE_ITEMS.items() if name in checks]
        if "backup" in report.roles:
            items += [Item(item, report.host, checks[name].state == OK, checks[name].detail) if name in checks
                      else Item(item, report.host, False, unjudged(report, checks))
                      for name, item in BACKUP_ITEMS.items()]
        elif "database" in report.roles and not has_backup_host:
            items += [Item(item, report.host, False, NO_BACKUP_HOST) for item in BACKUP_ITEMS.values()]
    return items


def unjudged(report: HostReport, checks: dict) -> str:
    """Why the backup host's report has no line for an item: unreachable, or what its repository line says
    (no backup yet, pgBackRest's info failed)."""
    if report.unreachable:
        return f"the backup host could not be asked: {report.unreachable}"
    return checks["repository"].detail if "repository" in checks else "incident.status did not judge it"
