"""Debian packages installed, touching apt's lists only when they are old."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from vigil.core.commands import cmd
from vigil.core.operations import Operation, change, noop
from vigil.facts.apt import apt_cache_age_fact, apt_installed_fact

PACKAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
# A fresh server's apt-daily job may hold the dpkg lock for a while: wait for it instead of failing.
APT_LOCK_WAIT = "DPkg::Lock::Timeout=300"


@dataclass
class AptPackages(Operation):
    """Debian packages installed; `apt-get update` only when the cache is older than `cache_valid_seconds`.

    A run where everything is installed never touches the cache.
    Example: AptPackages(["curl", "unattended-upgrades"])
    """

    packages: Sequence[str]
    cache_valid_seconds: int = 3600
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        for package in self.packages:
            if not PACKAGE_PATTERN.match(package):
                raise ValueError(f"not a Debian package name: {package!r}")
        self.name = self.name or f"Ensure packages are installed: {', '.join(self.packages)}."

    def facts(self):
        return [apt_installed_fact(), apt_cache_age_fact()]

    def plan(self, known):
        installed = known["apt:installed"]
        missing = [package for package in self.packages if package not in installed]
        if not missing:
            return noop(f"already installed: {', '.join(self.packages)}")
        commands = []
        age = known["apt:cache-age"]
        if age is None or age > self.cache_valid_seconds:
            commands.append(cmd("apt-get", "update", "-q", "-o", APT_LOCK_WAIT))
        commands.append(
            cmd("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "-o", APT_LOCK_WAIT,
                "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold", *missing)
        )
        return change(f"install {', '.join(missing)}", *commands)
