"""A checklist's line: what was checked, on which host, pass or fail, and the evidence."""

from __future__ import annotations

from dataclasses import dataclass

from vigil.incident.status import HostReport


@dataclass(frozen=True)
class Item:
    """One line of the checklist: what, on which host, pass or fail, and the evidence."""

    name: str
    host: str
    ok: bool
    evidence: str


def status_items(reports: list[HostReport]) -> list[Item]:
    """Certificates and backups, as incident.status judges them."""
    wanted = {"TLS certificate": "certificate not close to expiry", "last backup": "backups recent",
              "last verify": "backups verified", "backup failure": "no backup failure since the last good one"}
    return [Item(wanted[check.name], report.host, check.state == "ok", check.detail)
            for report in reports for check in report.checks if check.name in wanted]
