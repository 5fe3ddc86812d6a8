"""Whole sandbox layouts: `sandbox.up --layout=NAME` boots every host a layout names in its groups."""

from __future__ import annotations

from vigil.sandbox.paths import SandboxError

# Whole layouts `up --layout=NAME` boots: each host's groups. `ha`: a balancer, two web hosts, a database
# cluster of three, a backup host and a monitor host (docs/ha.md).
LAYOUTS = {
    "ha": {"vps1": "lb", "vps2": "web", "vps3": "web", "vps4": "db", "vps5": "db", "vps6": "db", "vps7": "backup",
           "vps8": "monitor"},
}


def layout_flags(layout: str) -> tuple[int, list[str]]:
    """(how many hosts, the --group flags) of layout `layout`.
    Example: layout_flags("ha") == (8, ["vps1:lb", "vps2:web", ...])"""
    if layout not in LAYOUTS:
        raise SandboxError(f"--layout={layout}: unknown layout; choose {', '.join(LAYOUTS)}")
    hosts = LAYOUTS[layout]
    return len(hosts), [f"{name}:{group}" for name, group in hosts.items()]
