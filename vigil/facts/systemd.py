"""systemd units: load, activity and enablement, every unit of a batch in one `systemctl show`."""

from __future__ import annotations

from dataclasses import dataclass

from vigil.core.commands import Command, cmd
from vigil.core.facts import Fact, Together


@dataclass(frozen=True)
class UnitState:
    """A systemd unit's load, activity and enablement, as `systemctl show` reports them."""

    load: str
    active: str
    enabled: str
    needs_daemon_reload: bool

    @property
    def exists(self) -> bool:
        return self.load == "loaded"


def parse_systemctl_show(stdout: str, status: int) -> UnitState:
    """Parse `systemctl show -p LoadState,ActiveState,UnitFileState,NeedDaemonReload` key=value lines."""
    values = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    return UnitState(
        load=values.get("LoadState", "not-found"),
        active=values.get("ActiveState", "inactive"),
        enabled=values.get("UnitFileState", ""),
        needs_daemon_reload=values.get("NeedDaemonReload") == "yes",
    )


_UNIT_PROPERTIES = "LoadState,ActiveState,UnitFileState,NeedDaemonReload"


def _units_command(units: tuple[str, ...]) -> Command:
    return cmd("systemctl", "show", "-p", _UNIT_PROPERTIES, "--", *units)


def _split_units(stdout: str, status: int, count: int) -> list[str]:
    """`systemctl show A B`: each unit's properties, in order, separated by an empty line."""
    if status != 0 and not stdout.strip():
        return [""] * count  # systemd did not answer (no bus): each unit reads as not found, as alone
    parts = stdout.strip("\n").split("\n\n") if stdout.strip() else []
    if len(parts) != count:
        raise ValueError(f"systemctl show answered for {len(parts)} units, not {count}")
    return parts


def unit_fact(unit: str) -> Fact:
    """The state of systemd unit `unit` (read with every other unit fact of the batch, in one systemctl)."""
    return Fact(f"unit:{unit}", _units_command((unit,)), parse_systemctl_show,
                together=Together("systemctl-show", unit, _units_command, _split_units))
