"""Connectors: how a command reaches a host. Everything above them sees only `Transport` and `Result`.

ssh: the SSH connection to an inventory host (pinned keys); local: this machine; trust: pinning a new key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from vigil.core.commands import Command


@dataclass(frozen=True)
class Result:
    """What a command returned: exit status and both streams, raw (redact before displaying)."""

    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


class Transport(Protocol):
    """Runs one command on one host and waits for it (at most `timeout` seconds)."""

    def run(self, command: Command, timeout: float | None = None) -> Result: ...
