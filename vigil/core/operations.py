"""The operation framework: (facts, desired state) -> the commands needed, or the reason none are.

Every operation names the facts it reads and plans from them alone, so plans
are pure and tested without SSH. An operation that always changes says so.
The operations themselves are plugins, by subsystem, in vigil.operations.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from vigil.core.commands import Command
from vigil.core.facts import Fact
from vigil.core.paths import LocalState


class OperationError(Exception):
    """The host is in a state the operation refuses to change (it would lose data)."""


@dataclass(frozen=True)
class Plan:
    """What an operation would do: commands to run, or a reason for doing nothing.

    summary: one line on what changes (shown in the plan and the recap).
    diff: a unified diff for file content, secrets already masked.
    """

    commands: tuple[Command, ...] = ()
    reason: str = ""
    summary: str = ""
    diff: str | None = None

    @property
    def changes(self) -> bool:
        return bool(self.commands)


def noop(reason: str) -> Plan:
    return Plan(reason=reason)


def change(summary: str, *commands: Command, diff: str | None = None) -> Plan:
    return Plan(commands=tuple(commands), summary=summary, diff=diff)


class Operation:
    """Base class: a named desired state on one host.

    name: an imperative sentence shown in progress and the recap.
    notify: handler names to run once at the end of the host's run if this changed.
    """

    name: str = ""
    notify: tuple[str, ...] = ()

    def facts(self) -> list[Fact]:
        """The facts `plan` reads."""
        return []

    def plan(self, known: Mapping[str, Any]) -> Plan:
        """The commands that bring the host to the desired state, given the facts by key."""
        raise NotImplementedError


@dataclass
class ConfirmLogin(Operation):
    """A handler: after a change to how the host takes logins, a fresh login must still work,
    or `revert` runs over the session that is still open. The runner makes the login.

    Example: ConfirmLogin([cmd("mv", "-f", "/etc/ssh/sshd_config.vigil-previous", "/etc/ssh/sshd_config"),
                           cmd("systemctl", "reload", "ssh.service")])
    """

    revert: Sequence[Command]
    name: str = "Confirm a fresh SSH login still works, else revert."
    notify: tuple[str, ...] = ()
    # Users to log in as besides the one vigil runs as (without sudo): only those whose
    # key vigil holds, or the check would fail for want of a key, not for the change.
    also_users: tuple[str, ...] = ()

    def plan(self, known):
        return noop("checked by the runner with a fresh connection")


# Each template's text by its name (the SHA-256 of the text), for the environment's loader.
_SOURCES: dict[str, str] = {}


@functools.lru_cache(maxsize=1)
def _templates():
    # jinja2 is imported by the first render, not by every task that never renders one (CLI start-up).
    import jinja2  # noqa: PLC0415

    # Compiling a template is most of a render's cost, and every run renders the same few dozen: jinja2's own
    # bytecode cache keeps them compiled under .vigil/cache/jinja, checked against each template's text (and
    # the Python version), so a run compiles only a template that changed since the last.
    directory = LocalState.default().root / "cache" / "jinja"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        cache = jinja2.FileSystemBytecodeCache(str(directory))
    except OSError:  # a read-only checkout: compile every time, as without the cache
        cache = None
    return jinja2.Environment(loader=jinja2.FunctionLoader(_SOURCES.get), bytecode_cache=cache,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@functools.lru_cache(maxsize=256)
def _compiled(source: str):
    # Every host of a run renders the same templates: each is loaded (or compiled) once per process.
    name = hashlib.sha256(source.encode()).hexdigest()
    _SOURCES[name] = source
    return _templates().get_template(name)


def render_template(source: str, variables: Mapping[str, Any]) -> str:
    """Render Jinja2 `source` with `variables`; an undefined variable is an error, never ''."""
    return _compiled(source).render(**variables)
