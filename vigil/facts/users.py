"""Local users: their passwd entry and groups."""

from __future__ import annotations

from dataclasses import dataclass

from vigil.core.commands import script
from vigil.core.facts import Fact


@dataclass(frozen=True)
class UserState:
    """A local user as passwd and group membership describe it; exists False when absent."""

    exists: bool
    uid: int = -1
    home: str = ""
    shell: str = ""
    groups: tuple[str, ...] = ()


def parse_user(stdout: str, status: int) -> UserState:
    """Parse a `getent passwd` line followed by an `id -nG` line."""
    lines = stdout.splitlines()
    if not lines or not lines[0].strip():
        return UserState(exists=False)
    fields = lines[0].split(":")
    groups = tuple(lines[1].split()) if len(lines) > 1 else ()
    return UserState(exists=True, uid=int(fields[2]), home=fields[5], shell=fields[6], groups=groups)


def user_fact(name: str) -> Fact:
    """The passwd entry and groups of user `name`."""
    return Fact(f"user:{name}", script('getent passwd "$1" && id -nG "$1"', name), parse_user)
