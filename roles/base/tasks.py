"""The base role: time zone and clock sync, login banner, base packages, automatic security updates, swap."""

from vigil.core.operations import render_template
from vigil.operations.apt import AptPackages
from vigil.operations.files import File, Symlink
from vigil.operations.system import Swapfile, TimeSync
from vigil.operations.systemd import SystemdUnit

TIMEZONE_PATTERN = r"[A-Za-z_]+(/[A-Za-z0-9_+-]+)*"
PACKAGE_PATTERN = r"[a-z0-9][a-z0-9+.-]+"

# APT::Periodic switches the daily apt timers between "update and upgrade" and "do nothing".
AUTO_UPGRADES = """// Managed by vigil (roles/base).
APT::Periodic::Update-Package-Lists "{on}";
APT::Periodic::Unattended-Upgrade "{on}";
"""


def tasks(role, vars):
    """The base role's operations for one host, in order."""
    timezone = vars.string("base_timezone", TIMEZONE_PATTERN)
    upgrades = vars.boolean("base_unattended_upgrades")
    motd = render_template(
        role.template("motd.j2"),
        {
            "hostname": vars.host.name,
            "env": vars.get("vigil_env", ""),
            "groups": list(vars.host.groups),
            "organisation": vars.string("base_motd_organisation"),
            "contact": vars.string("base_motd_contact"),
        },
    )
    return [
        AptPackages(vars.string_list("base_packages", PACKAGE_PATTERN), name="Ensure the base packages are installed."),
        Symlink("/etc/localtime", f"/usr/share/zoneinfo/{timezone}", name=f"Ensure the time zone is {timezone}."),
        File("/etc/timezone", f"{timezone}\n", name="Ensure /etc/timezone names the time zone."),
        File("/etc/motd", motd, name="Ensure the login banner is managed."),
        File(
            "/etc/apt/apt.conf.d/20auto-upgrades",
            AUTO_UPGRADES.format(on=1 if upgrades else 0),
            name=f"Ensure automatic security updates are {'on' if upgrades else 'off'}.",
        ),
        SystemdUnit(
            "unattended-upgrades.service",
            enabled=upgrades,
            running=upgrades,
            name=f"Ensure unattended-upgrades is {'enabled and running' if upgrades else 'stopped'}.",
        ),
        TimeSync(),
        Swapfile(vars.path("base_swap_path"), vars.integer("base_swap_size_mb", minimum=64)),
    ]
