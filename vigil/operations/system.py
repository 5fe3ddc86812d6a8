"""The host itself: its clock kept in sync, and swap when it has none."""

from __future__ import annotations

from dataclasses import dataclass

from vigil.core.commands import cmd, script
from vigil.core.operations import Operation, change, noop
from vigil.facts.host import container_fact, swaps_fact
from vigil.facts.systemd import UnitState, unit_fact
from vigil.operations.apt import APT_LOCK_WAIT
from vigil.operations.systemd import SystemdUnit

OTHER_TIME_DAEMONS = ("chrony.service", "ntpsec.service", "ntp.service", "openntpd.service")


@dataclass
class TimeSync(Operation):
    """The clock kept in sync: systemd-timesyncd unless another time daemon already runs.

    Nothing in a container, whose clock is the outer host's. timesyncd is
    installed only where needed: Debian's package replaces chrony or ntp.
    Example: TimeSync()
    """

    name: str = "Ensure the clock is kept in sync."
    notify: tuple[str, ...] = ()

    def facts(self):
        return [container_fact(), unit_fact("systemd-timesyncd.service"),
                *[unit_fact(unit) for unit in OTHER_TIME_DAEMONS]]

    def plan(self, known):
        if known["container"]:
            return noop(f"runs in a {known['container']} container: the outer host keeps the clock")
        running = [unit for unit in OTHER_TIME_DAEMONS if known[f"unit:{unit}"].active == "active"]
        if running:
            return noop(f"{running[0]} keeps the clock")
        timesyncd: UnitState = known["unit:systemd-timesyncd.service"]
        if not timesyncd.exists:
            return change("install and start systemd-timesyncd",
                          cmd("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "-o",
                              APT_LOCK_WAIT, "systemd-timesyncd"),
                          cmd("systemctl", "enable", "--now", "systemd-timesyncd.service"))
        return SystemdUnit("systemd-timesyncd.service", enabled=True, running=True).plan(known)


@dataclass
class Swapfile(Operation):
    """A swap file of `size_mb` MiB, active and in /etc/fstab, when the host has no swap at all.

    In a container swap belongs to the outer host, so nothing is done there.
    Example: Swapfile("/swapfile", 1024)
    """

    path: str = "/swapfile"
    size_mb: int = 1024
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.size_mb, int) or self.size_mb <= 0:
            raise ValueError(f"swap size must be a positive number of MiB, got {self.size_mb!r}")
        self.name = self.name or f"Ensure a {self.size_mb} MiB swap file exists if the host has no swap."

    def facts(self):
        return [swaps_fact(), container_fact()]

    def plan(self, known):
        if known["container"]:
            return noop(f"runs in a {known['container']} container: swap is the outer host's to manage")
        if known["swaps"]:
            return noop(f"swap already active: {', '.join(known['swaps'])}")
        fstab_line = f"{self.path} none swap sw 0 0"
        return change(
            f"create and enable {self.path}",
            cmd("fallocate", "-l", f"{self.size_mb}M", self.path),
            cmd("chmod", "0600", self.path),
            cmd("mkswap", self.path),
            cmd("swapon", self.path),
            # Append on a line of its own even when fstab lacks a final newline.
            script('grep -qxF -- "$1" /etc/fstab || { [ -z "$(tail -c1 /etc/fstab)" ] || echo >> /etc/fstab; '
                   'printf "%s\\n" "$1" >> /etc/fstab; }', fstab_line),
        )
