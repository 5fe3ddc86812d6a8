"""Trusting a host key: show its fingerprint, then pin it in the env's known_hosts.

Nothing else in vigil ever adds a key: connections only compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import paramiko

from vigil.core.connectors.ssh import fingerprint, known_hosts_name, scan_host_key
from vigil.core.inventory import Host
from vigil.core.paths import rel


@dataclass(frozen=True)
class TrustPlan:
    """What trusting a host would do: nothing (already pinned), add a key, or replace a changed one."""

    host: Host
    offered: paramiko.PKey
    pinned: paramiko.PKey | None

    @property
    def action(self) -> str:
        if self.pinned is None:
            return "add"
        return "none" if self.pinned == self.offered else "replace"

    def describe(self, known_hosts: Path) -> str:
        offered = f"{self.offered.get_name()} {fingerprint(self.offered)}"
        where = f"{self.host.name} ({known_hosts_name(self.host)})"
        if self.action == "none":
            return f"{where} offers {offered}: already pinned in {rel(known_hosts)}"
        if self.action == "add":
            return f"{where} offers {offered}: not yet pinned in {rel(known_hosts)}"
        return (f"{where} offers {offered}, but {rel(known_hosts)} pins "
                f"{self.pinned.get_name()} {fingerprint(self.pinned)}: the key CHANGED")


def plan_trust(host: Host, known_hosts: Path) -> TrustPlan:
    """Fetch the key `host` offers and compare it with the pinned one."""
    offered = scan_host_key(host)
    pinned = None
    if known_hosts.exists():
        keys = paramiko.HostKeys(str(known_hosts)).lookup(known_hosts_name(host)) or {}
        pinned = keys.get(offered.get_name()) or next(iter(keys.values()), None)
    return TrustPlan(host, offered, pinned)


def apply_trust(plan: TrustPlan, known_hosts: Path) -> None:
    """Pin the offered key: drop the host's old lines, append the new one, atomically."""
    name = known_hosts_name(plan.host)
    lines = known_hosts.read_text().splitlines() if known_hosts.exists() else []
    kept = [line for line in lines if name not in line.split(" ", 1)[0].split(",")]
    kept.append(f"{name} {plan.offered.get_name()} {plan.offered.get_base64()}")
    temporary = known_hosts.with_name(f".{known_hosts.name}.tmp")
    temporary.write_text("\n".join(kept) + "\n")
    temporary.replace(known_hosts)
