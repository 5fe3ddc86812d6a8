"""The local connector: commands run on this control machine, answered in the same shape as over SSH."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vigil.core.commands import Command
from vigil.core.connectors import Result


class LocalTransport:
    """Runs commands on the control machine (same Result shape as SSHTransport.run).

    Example: LocalTransport().run(cmd("ip", "netns", "list", sudo=False))
    """

    def run(self, command: Command, timeout: float | None = None) -> Result:
        argv = ["sh", "-c", command.render(None)]
        if isinstance(command.stdin, Path):
            with open(command.stdin, "rb") as stream:
                completed = subprocess.run(argv, stdin=stream, capture_output=True, timeout=timeout)
        else:
            completed = subprocess.run(argv, input=command.stdin, capture_output=True, timeout=timeout)
        return Result(
            completed.returncode, completed.stdout.decode(errors="replace"), completed.stderr.decode(errors="replace")
        )
