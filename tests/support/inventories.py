"""Inventories built in code, for planning roles without files or hosts."""

from __future__ import annotations

from pathlib import Path

from vigil.core.inventory import Host, HostVars, Inventory
from vigil.core.roles import Role


def layout(
    groups: dict[str, list[str]], private: dict[str, str] | None = None, host_vars: dict | None = None
) -> Inventory:
    """An inventory of web/db hosts at 203.0.113.N, with optional private addresses."""
    names = list(dict.fromkeys(name for members in groups.values() for name in members))
    hosts = {name: Host(name, f"203.0.113.{index}", 22, "deploy", None,
                        tuple(group for group, members in groups.items() if name in members), 5, 30,
                        private_address=(private or {}).get(name)) for index, name in enumerate(names, 1)}
    return Inventory("sandbox", Path("inventory/sandbox.yml"), Path("k"), hosts, groups, {}, {}, host_vars or {})


def role_vars(role: Role, inventory: Inventory | None = None, host: str = "web1", **overrides) -> HostVars:
    """`host`'s vars for `role` in `inventory` (one host that is both web and db by default), `overrides` as --var."""
    inventory = inventory or layout({"web": ["web1"], "db": ["web1"]})
    return inventory.vars_for(inventory.hosts[host], [role], overrides)
