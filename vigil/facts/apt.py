"""Debian packages: what is installed, and how old the package lists are."""

from __future__ import annotations

from vigil.core.commands import cmd, script
from vigil.core.facts import Fact


def parse_dpkg_installed(stdout: str, status: int) -> dict[str, str]:
    """Parse `dpkg-query -W` lines `name<TAB>status<TAB>version` into {name: version} of installed ones."""
    installed = {}
    for line in stdout.splitlines():
        parts = line.split("\t")
        # "install ok installed", "hold ok installed": the last word is the package's state.
        if len(parts) == 3 and parts[1].split(" ")[-1] == "installed":
            installed[parts[0].split(":")[0]] = parts[2]
    return installed


def apt_installed_fact() -> Fact:
    """Every installed Debian package and its version."""
    return Fact(
        "apt:installed",
        cmd("dpkg-query", "-W", "-f", "${Package}\t${Status}\t${Version}\n"),
        parse_dpkg_installed,
    )


def parse_age_seconds(stdout: str, status: int) -> int | None:
    """Parse `<now> <mtime>` into an age in seconds; None when the file was absent."""
    parts = stdout.split()
    if len(parts) != 2:
        return None
    return max(0, int(parts[0]) - int(parts[1]))


def apt_cache_age_fact() -> Fact:
    """Seconds since the apt package lists were last updated (None: never)."""
    # pkgcache.bin is rebuilt by every `apt-get update`, so its mtime is the cache's age.
    return Fact(
        "apt:cache-age",
        script('m=$(stat -c %Y /var/cache/apt/pkgcache.bin 2>/dev/null) && echo "$(date +%s) $m"'),
        parse_age_seconds,
    )
