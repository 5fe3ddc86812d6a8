"""systemd: units enabled and running, daemon-reloads, and restarts or reloads for handlers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from vigil.core.commands import Command, cmd, script
from vigil.core.operations import Operation, change, noop
from vigil.facts.systemd import UnitState, unit_fact

UNIT_PATTERN = re.compile(r"^[A-Za-z0-9:_.@-]+\.(service|socket|timer|target|mount|path)$")

# UnitFileState values: these count as enabled; the others below cannot be enabled or disabled at all.
ENABLED_STATES = ("enabled", "enabled-runtime", "alias")
UNTOGGLEABLE_STATES = ("static", "indirect", "generated", "transient", "masked", "masked-runtime")


@dataclass
class SystemdUnit(Operation):
    """A systemd unit enabled/disabled and running/stopped; daemon-reload first when its file changed.

    Example: SystemdUnit("unattended-upgrades.service", enabled=True, running=True)
    """

    unit: str
    enabled: bool | None = True
    running: bool | None = True
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        if not UNIT_PATTERN.match(self.unit):
            raise ValueError(f"not a systemd unit name: {self.unit!r}")
        wants = [w for w, on in (("enabled", self.enabled), ("running", self.running)) if on]
        self.name = self.name or f"Ensure {self.unit} is {' and '.join(wants) or 'stopped'}."

    def facts(self):
        return [unit_fact(self.unit)]

    def plan(self, known):
        state: UnitState = known[f"unit:{self.unit}"]
        commands, notes = [], []
        if state.needs_daemon_reload:
            commands.append(cmd("systemctl", "daemon-reload"))
            notes.append("daemon-reload (unit file changed)")
        if not state.exists and not state.needs_daemon_reload and (self.enabled or self.running):
            # A unit installed earlier in this run is unknown until systemd reloads.
            commands.append(cmd("systemctl", "daemon-reload"))
        toggleable = state.enabled not in UNTOGGLEABLE_STATES
        if self.enabled is not None and toggleable and (state.enabled in ENABLED_STATES) != self.enabled:
            commands.append(cmd("systemctl", "enable" if self.enabled else "disable", self.unit))
            notes.append("enable" if self.enabled else "disable")
        if self.running is not None and (state.active in ("active", "activating", "reloading")) != self.running:
            commands.append(cmd("systemctl", "start" if self.running else "stop", self.unit))
            notes.append("start" if self.running else "stop")
        if not notes:
            return noop(f"{self.unit} already {state.enabled or 'present'} and {state.active}")
        return change(", ".join(notes), *commands)


@dataclass
class DaemonReload(Operation):
    """`systemctl daemon-reload`, for a handler after a unit file or drop-in changed. Always changes."""

    name: str = "Reload systemd's unit files."
    notify: tuple[str, ...] = ()

    def plan(self, known):
        return change("systemctl daemon-reload", cmd("systemctl", "daemon-reload"))


UNIT_GLOB_PATTERN = re.compile(r"^[A-Za-z0-9:_.@*-]+\.(service|socket|timer)$")


@dataclass
class ServiceAction(Operation):
    """Restart or reload units (names or globs like `app@*.service`). Always changes: meant for handlers.

    unit: one unit, or a list of them.
    `try-reload-or-restart` touches only units that are running, so it is safe
    before the units exist; a glob matching nothing does nothing.
    Example: ServiceAction("ssh.service", "reload")
    """

    unit: str | Sequence[str]
    action: str = "restart"
    name: str = ""
    notify: tuple[str, ...] = ()
    # Run first; its failure stops the action (nginx -t before a reload keeps a broken config out).
    check: Command | None = None

    def __post_init__(self):
        if self.action not in ("restart", "reload", "try-restart", "reload-or-restart", "try-reload-or-restart"):
            raise ValueError(f"unknown service action {self.action!r}")
        units = [self.unit] if isinstance(self.unit, str) else list(self.unit)
        for unit in units:
            if not isinstance(unit, str) or not UNIT_GLOB_PATTERN.match(unit):
                raise ValueError(f"not a systemd unit name: {unit!r}")
        if not units:
            raise ValueError("a service action needs at least one unit")
        self.units = tuple(units)
        self.name = self.name or f"{self.action.capitalize()} {' '.join(units)}."

    def plan(self, known):
        action = script(RETRY_SPAWN_FAILURE, self.action, *self.units)
        commands = (self.check, action) if self.check else (action,)
        return change(f"{self.action} {' '.join(self.units)} (always changes)", *commands)


# `systemctl "$@"`, once more two seconds later when the job failed with result 'resources' (systemctl:
# "unavailable resources"): nothing ran then. systemd in a container on a cgroup-v1 host (the sandbox)
# can fail to spawn a unit restarted moments after its last stop, while that stop's cgroup is still
# being removed ("Failed to spawn executor"); a person would simply run it again. Other failures stand.
RETRY_SPAWN_FAILURE = ('out=$(systemctl "$@" 2>&1) && exit 0; status=$?; case $out in *"unavailable resources"*) '
                       'sleep 2; exec systemctl "$@";; esac; printf "%s\\n" "$out" >&2; exit "$status"')


@dataclass
class SocketRestart(Operation):
    """Restart a socket-activated service with its socket, for a handler: stop both, then start the socket.

    `systemctl restart X.socket X.service` queues two restarts that systemd does not order against each
    other: the socket's new listener can be bound while the old service process still holds the port, and
    the socket fails with "Address already in use" (journal-remote did, with uploads arriving). Stopping the
    socket stops its service first (the service requires it, and stops run in reverse order), so the start
    that follows finds the port free; the service starts again with its next connection. Always changes.
    Example: SocketRestart("systemd-journal-remote.socket")
    """

    socket: str
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        if not UNIT_PATTERN.match(self.socket) or not self.socket.endswith(".socket"):
            raise ValueError(f"not a systemd socket unit: {self.socket!r}")
        self.service = self.socket.removesuffix(".socket") + ".service"
        self.name = self.name or f"Restart {self.socket} and {self.service}."

    def plan(self, known):
        return change(f"restart {self.socket} and {self.service} (always changes)",
                      cmd("systemctl", "stop", self.socket, self.service),
                      script(RETRY_SPAWN_FAILURE, "start", self.socket))
