"""Every systemd unit vigil installs is hardened until `systemd-analyze security` rates it OK (at most 2.0),
scored offline on the rendered unit exactly as onboarding writes it."""

import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.inventories import layout
from vigil.core.roles import load_role
from vigil.operations.files import File

# At most this exposure (systemd's scale: 0 safe, 10 unsafe; "OK" up to about 4.9).
MOST = 2.0
ROLES = ("postgresql", "app", "nginx")


def service_files(operations) -> dict[str, bytes]:
    """The .service files among a role's operations (written ones: not the links it removes), by name."""
    return {op.path.rsplit("/", 1)[1]: op.content for op in operations
            if isinstance(op, File) and op.path.startswith("/etc/systemd/system/") and op.path.endswith(".service")}


def installed_units() -> dict[str, bytes]:
    """Every .service file the roles write for a host that is web and database at once."""
    inventory = layout({"web": ["web1"], "db": ["web1"]})
    roles = [load_role(name) for name in ROLES]
    vars = inventory.vars_for(inventory.hosts["web1"], roles, {})
    # postgresql's and nginx's settings only: their units are Debian's own.
    return service_files(op for role in roles if role.name == "app" for op in role.tasks(role, vars))


def repository_units() -> dict[str, bytes]:
    """The backup host's scheduled pgBackRest backups and the database host's archiving check (roles/pgbackrest)."""
    inventory = layout({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]})
    role = load_role("pgbackrest")
    secrets = {"PGBACKREST_CIPHER_PASS": "c" * 40, "PGBACKREST_SSH_SEED": "s" * 40}
    known_hosts = Path(tempfile.mkdtemp()) / "known_hosts"
    known_hosts.write_text("".join(f"{host.address} ssh-ed25519 AAAA\n" for host in inventory.hosts.values()))
    inventory = dataclasses.replace(inventory, known_hosts=known_hosts)
    units = {}
    for host in ("backup1", "db1"):
        vars = inventory.vars_for(inventory.hosts[host], [role], secrets=lambda: secrets)
        units.update(service_files(role.tasks(role, vars)))
    return units


def analytics_units() -> dict[str, bytes]:
    """The web hosts' visitor report (roles/analytics)."""
    inventory = layout({"web": ["web1"], "db": ["web1"]})
    role = load_role("analytics")
    vars = inventory.vars_for(inventory.hosts["web1"], [role], {})
    return service_files(role.tasks(role, vars))


UNITS = installed_units() | repository_units() | analytics_units()


def exposure(path) -> float:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: install systemd (scripts/bootstrap does)")
    scored = subprocess.run(["systemd-analyze", "security", "--offline=true", str(path)], capture_output=True,
                            text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", scored.stdout + scored.stderr)
    assert found, scored.stdout + scored.stderr
    return float(found.group(1))


def test_every_unit_of_the_app_and_the_backups_is_scored():
    assert {"together-pray-backend@.service", "together-pray-frontend@.service",
            "together-pray-backend-migrate@.service", "together-pray-served-colors.service",
            "vigil-pgbackrest-backup@.service", "vigil-pgbackrest-drill.service", "vigil-pgbackrest-check.service",
            "vigil-analytics.service"} <= set(UNITS)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_each_unit_is_rated_ok(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(UNITS[name])
    assert exposure(path) <= MOST


def test_the_score_would_catch_a_unit_that_lost_its_hardening(tmp_path):
    unit = UNITS["together-pray-backend@.service"].decode()
    weakened = "\n".join(line for line in unit.splitlines()
                         if not line.startswith(("CapabilityBoundingSet", "SystemCallFilter", "RestrictAddress")))
    path = tmp_path / "weakened@.service"
    path.write_text(weakened + "\n")
    assert exposure(path) > MOST
