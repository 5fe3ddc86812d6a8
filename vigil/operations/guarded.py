"""The escape hatch: commands run only when a guard says so, so even they stay idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vigil.core.commands import Command
from vigil.core.operations import Operation, change, noop
from vigil.facts.files import file_fact
from vigil.facts.host import status_fact


@dataclass
class Guarded(Operation):
    """Commands run only when `creates` is absent and `unless` fails: the escape hatch, still idempotent.

    Example: Guarded([cmd("mkswap", "/swapfile")], creates="/swapfile", name="Create the swap file.")
    """

    commands: Sequence[Command]
    creates: str | None = None
    unless: Command | None = None
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        if self.creates is None and self.unless is None:
            raise ValueError("a guarded command needs `creates` or `unless`; otherwise it is not idempotent")
        self.name = self.name or "Run a guarded command."

    def facts(self):
        found = []
        if self.creates:
            found.append(file_fact(self.creates))
        if self.unless:
            found.append(status_fact(self.unless))
        return found

    def plan(self, known):
        if self.creates and known[f"file:{self.creates}"].kind is not None:
            return noop(f"{self.creates} exists")
        if self.unless and known[f"status:{self.unless.display()}"] == 0:
            return noop(f"`{self.unless.display()}` succeeded")
        return change("run " + "; ".join(c.display() for c in self.commands), *self.commands)


@dataclass
class HandlerCommands(Operation):
    """Commands that run whenever the handler they make is notified: for an action that is not a systemd
    unit's (PostgreSQL reloaded under Patroni, which owns its process). Handlers only: as a task, it would
    change on every run.

    Example: HandlerCommands([psql("select pg_reload_conf()")], name="Reload PostgreSQL's files.")
    """

    commands: Sequence[Command]
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        self.name = self.name or "Run a handler's commands."

    def facts(self):
        return []

    def plan(self, known):
        return change("run " + "; ".join(c.display() for c in self.commands), *self.commands)
