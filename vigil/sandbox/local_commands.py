"""Running commands on this machine: the one place in the sandbox that executes one."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Optional

from vigil.sandbox.paths import COMMAND_TIMEOUT, SandboxError


def tail(text: str, lines: int = 5) -> str:
    """The last few non-empty lines of command output, joined for a one-line error."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def run_command(argv: list[str], *, timeout: float = COMMAND_TIMEOUT, log: Optional[Path] = None,
                ok_exit_codes: tuple[int, ...] = (0,)) -> str:
    """Run one local command and return its stdout; SandboxError names it and its stderr on failure.

    argv: the program and its arguments (never a shell string).
    timeout: seconds before the command is killed and reported.
    log: append stdout and stderr to this file instead of capturing them (long builds).
    ok_exit_codes: exit statuses that are answers rather than failures.
    Example: run_command(["ip", "netns", "list"])
    """
    shown = shlex.join(argv)
    try:
        if log is not None:
            with open(log, "ab") as log_stream:
                completed = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log_stream, stderr=subprocess.STDOUT,
                                           timeout=timeout, check=False)
        else:
            completed = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                       timeout=timeout, check=False)
    except FileNotFoundError:
        raise SandboxError(f"`{shown}` failed: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SandboxError(f"`{shown}` did not finish within {timeout:g} s") from None
    if completed.returncode not in ok_exit_codes:
        detail = (
            tail(completed.stderr or completed.stdout or "") if log is None else f"see {log}: {tail(read_tail(log))}"
        )
        raise SandboxError(f"`{shown}` failed (exit {completed.returncode}): {detail or 'no output'}")
    return completed.stdout or ""


def read_tail(path: Path, size: int = 4096) -> str:
    """The last `size` bytes of a log file as text (\"\" when it cannot be read)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(max(0, path.stat().st_size - size))
            return stream.read().decode(errors="replace")
    except OSError:
        return ""
