"""Host traits and guards: a check command's exit status, active swap, the container the host runs in, its memory."""

from __future__ import annotations

import re

from vigil.core.commands import Command, cmd
from vigil.core.facts import Fact


def parse_status(stdout: str, status: int) -> int:
    """The fact is the command's exit status."""
    return status


def status_fact(command: Command) -> Fact:
    """The exit status of a read-only check command, e.g. a guard's `unless`."""
    return Fact(f"status:{command.display()}", command, parse_status)


def parse_swaps(stdout: str, status: int) -> list[str]:
    """Parse /proc/swaps into the active swap devices or files."""
    return [line.split()[0] for line in stdout.splitlines()[1:] if line.strip()]


def swaps_fact() -> Fact:
    """Active swap areas."""
    return Fact("swaps", cmd("cat", "/proc/swaps"), parse_swaps)


def parse_container(stdout: str, status: int) -> str | None:
    """Parse `systemd-detect-virt --container`: the container technology, or None on a VM or metal."""
    value = stdout.strip()
    return value if status == 0 and value and value != "none" else None


def container_fact() -> Fact:
    """Which container technology the host runs in, if any (swap and clocks belong to the outer host)."""
    return Fact("container", cmd("systemd-detect-virt", "--container"), parse_container)


def parse_memory_mb(stdout: str, status: int) -> int:
    """MemTotal from /proc/meminfo, in MiB (0 when it cannot be read)."""
    match = re.search(r"^MemTotal:\s+(\d+) kB", stdout, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else 0


def memory_fact() -> Fact:
    """The host's memory in MiB (PostgreSQL sizes its connections from it)."""
    return Fact("memory:total-mb", Command(("cat", "/proc/meminfo"), sudo=False), parse_memory_mb)
