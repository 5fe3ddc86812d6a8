"""Which hosts one `sandbox.up` or `sandbox.down` concerns: the VPSes `--hosts` asks for, and the inventory
their hosts are listed in.

By default every VPS is listed in inventory/sandbox.yml. `up --inventory=DIR` lists the VPSes it boots in
DIR/sandbox.yml instead, apart: `deploy.all` or `provision.server` on the default inventory never reaches
them, and an `up` or `down` of one inventory leaves the VPSes of another exactly as they are (running,
powered off or booting), which is what lets a second layout run beside the first (the e2e suite's second
stream; a team member trying the HA layout beside their own sandbox). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

from vigil.sandbox.paths import DEBIAN_RELEASES, DEFAULT_RELEASE, MAX_HOSTS, SandboxError, SandboxPaths, Vps

# The inventory groups a sandbox host may be put in with `up --group=NAME:GROUP`.
SANDBOX_GROUPS = ("web", "db", "backup", "monitor", "lb")
# `--hosts=vps7-vps13`: a range of names; `--hosts=vps5,vps6`: a list (ranges may be items of it).
NAME_RANGE = re.compile(r"^vps([1-9][0-9]*)-vps([1-9][0-9]*)$")


@dataclass(frozen=True)
class HostSelection:
    """The VPSes `--hosts` asks for, in order, and the flag as given (for messages).

    counted: given as a count N, meaning vps1..vpsN (the form every older command line uses).
    Example: parse_hosts("vps5,vps6").names == ("vps5", "vps6")
    """

    names: tuple[str, ...]
    flag: str
    counted: bool = False

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def describe(self) -> str:
        """The selection in a message: "vps1..vps3 (--hosts=3)"."""
        listed = f"vps1..{self.names[-1]}" if self.counted else ", ".join(self.names)
        return f"{listed} (--hosts={self.flag})"


def check_hosts_count(requested: int) -> None:
    if not 1 <= requested <= MAX_HOSTS:
        raise SandboxError(f"--hosts must be between 1 and {MAX_HOSTS}, not {requested}")


def parse_hosts(value: Union[int, str, HostSelection]) -> HostSelection:
    """The selection `--hosts=VALUE` asks for: a count N (vps1..vpsN), a range vpsA-vpsB, or a comma list
    of names and ranges. Each name at most once, at most MAX_HOSTS of them.
    Example: parse_hosts("vps7-vps9").names == ("vps7", "vps8", "vps9")
    """
    if isinstance(value, HostSelection):
        return value
    text = str(value).strip()
    if re.fullmatch(r"-?[0-9]+", text):
        check_hosts_count(int(text))
        return HostSelection(tuple(f"vps{index}" for index in range(1, int(text) + 1)), text, counted=True)
    names: list[str] = []
    for item in text.split(","):
        item = item.strip()
        span = NAME_RANGE.match(item)
        try:
            if span:
                first, last = int(span.group(1)), int(span.group(2))
                if first > last:
                    raise SandboxError(f"{item!r} runs backwards")
                names += [Vps(index).name for index in range(first, last + 1)]
            else:
                names.append(Vps.from_name(item).name)
        except SandboxError as error:
            raise SandboxError(f"--hosts={text}: {error}; give a count (3), a range (vps5-vps7) "
                               "or names (vps5,vps6)") from None
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SandboxError(f"--hosts={text}: {', '.join(repeated)} named twice")
    if len(names) > MAX_HOSTS:
        raise SandboxError(f"--hosts={text}: {len(names)} VPSes; at most {MAX_HOSTS}")
    return HostSelection(tuple(names), text)


def parse_release_flags(flags: Iterable[str], requested: Union[int, str, HostSelection]) -> dict[str, str]:
    """The Debian release each selected host must run, from the `--debian` flags.

    A bare release ("12") applies to every host, "vps3:12" to one host (and wins
    over a bare one); hosts no flag names run DEFAULT_RELEASE.
    Example: parse_release_flags(["vps2:12"], 2) == {"vps1": "13", "vps2": "12"}
    """
    selection = parse_hosts(requested)
    default, per_host = DEFAULT_RELEASE, {}
    known = ", ".join(f"{version} ({name})" for version, name in DEBIAN_RELEASES.items())
    for flag in flags:
        name, _, release = flag.rpartition(":")
        if release not in DEBIAN_RELEASES:
            raise SandboxError(f"--debian={flag}: unknown Debian release {release!r}; choose {known}")
        if not name:
            default = release
            continue
        if name not in selection:
            raise SandboxError(f"--debian={flag}: {name!r} is not one of {selection.describe()}")
        if per_host.get(name, release) != release:
            raise SandboxError(f"--debian: {name} is given two releases, {per_host[name]} and {release}")
        per_host[name] = release
    return {name: per_host.get(name, default) for name in selection.names}


def parse_group_flags(flags: Iterable[str], requested: Union[int, str, HostSelection]) -> dict[str, list[str]]:
    """The inventory groups of each host a `--group=NAME:GROUP` flag names (repeatable: a host may be in
    several). Hosts no flag names keep the groups they were given before, else the default layout.
    Example: parse_group_flags(["vps3:backup"], 3) == {"vps3": ["backup"]}
    """
    selection = parse_hosts(requested)
    groups: dict[str, list[str]] = {}
    for flag in flags:
        name, _, group = flag.partition(":")
        if name not in selection:
            raise SandboxError(f"--group={flag}: {name!r} is not one of {selection.describe()}")
        if group not in SANDBOX_GROUPS:
            raise SandboxError(f"--group={flag}: unknown group {group!r}; choose {', '.join(SANDBOX_GROUPS)}")
        if group not in groups.setdefault(name, []):
            groups[name].append(group)
    return groups


def inventory_home(paths: SandboxPaths, directory: Optional[Path]) -> Optional[str]:
    """How state.json records the inventory a host is listed in: None for the repository's inventory/,
    else the directory's absolute path."""
    if directory is None:
        return None
    resolved = Path(directory).resolve()
    return None if resolved == paths.inventory_file.parent.resolve() else str(resolved)


def inventory_file_of(paths: SandboxPaths, home: Optional[str]) -> Path:
    """The sandbox.yml that lists the hosts recorded with `home` (see inventory_home)."""
    return paths.inventory_file if home is None else Path(home) / paths.inventory_file.name


def hosts_in_scope(state: dict[str, dict], selection: HostSelection, home: Optional[str]) -> set[str]:
    """The hosts a call on the inventory `home` concerns: those it asks for and those that inventory lists.

    A host it asks for that another inventory lists is refused, naming that inventory: each VPS is listed
    in one inventory only.
    """
    for name in selection.names:
        if name in state and state[name].get("inventory") != home:
            raise SandboxError(
                f"--hosts={selection.flag}: {name} is listed in {_listing(state[name].get('inventory'))}, not in "
                f"{_listing(home)}; pick other VPSes, or remove it first "
                f"with `sudo invoke sandbox.down{_inventory_flag(state[name].get('inventory'))}`")
    return set(selection.names) | {name for name, host in state.items() if host.get("inventory") == home}


def _inventory_flag(home: Optional[str]) -> str:
    # The repository's inventory named too: a plain `sandbox.down` would remove every VPS.
    return f" --inventory={home or 'inventory'}"


def _listing(home: Optional[str]) -> str:
    return "inventory/sandbox.yml" if home is None else f"{home}/sandbox.yml"
