"""Exit codes and the errors vigil raises on purpose.

Every error here carries a one-line message meant for a person: it names the
file, key, flag or host at fault. Tasks turn them into an exit code; nothing
in vigil prints a traceback for an error it raised itself.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a vigil task's exit status means."""

    OK = 0
    # At least one host failed a step; the others' results are still reported.
    HOST_FAILED = 2
    # Bad input (inventory, flags, a key file): nothing was attempted on any host.
    BAD_INPUT = 3
    # At least one host could not be reached or refused our pinned host key.
    UNREACHABLE = 4
    # The control machine cannot do what was asked (not root, not Linux, a tool missing).
    UNSUPPORTED = 5


class VigilError(Exception):
    """An expected failure with a message for a person and the exit code it means."""

    exit_code = ExitCode.HOST_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(VigilError):
    """Bad input: inventory, playbook, role defaults or flags."""

    exit_code = ExitCode.BAD_INPUT


class MissingSecretError(ConfigError):
    """A role needs a secret the env's secrets file lacks: that host cannot be planned, the others can."""


class UnsupportedError(VigilError):
    """The control machine lacks something the task needs."""

    exit_code = ExitCode.UNSUPPORTED


class HostError(VigilError):
    """One host failed; carries the host's name so the recap can attribute it."""

    def __init__(self, host: str, message: str):
        super().__init__(f"{host}: {message}")
        self.host = host
        self.reason = message


class UnreachableError(HostError):
    """The host could not be connected to, or did not answer in time."""

    exit_code = ExitCode.UNREACHABLE


class HostKeyError(UnreachableError):
    """The host's key is unknown or differs from the pinned one."""
