"""Facts about this machine: what the sandbox may own right now (processes, namespaces, links, mounts,
firewall rules, state.json), read without changing anything, and the parsers of the commands' output."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from vigil.sandbox.local_commands import run_command
from vigil.sandbox.paths import (
    HOST_LINK_PREFIX,
    IMAGE_COMPLETE_MARKERS,
    IPTABLES_COMMENT,
    NETNS_PREFIX,
    PEER_LINK_PREFIX,
    IptablesRule,
    SandboxError,
    SandboxPaths,
    SandboxUnsupported,
    host_name_index,
)


def parse_netns_list(output: str) -> list[str]:
    """Namespace names from `ip netns list` ("vigil-vps1 (id: 0)" or just "vigil-vps1")."""
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def parse_link_names(output: str) -> list[str]:
    """Interface names from `ip -o link show` ("5: vgl-vps1@if4: <...> ...")."""
    names = []
    for line in output.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 3:
            continue
        names.append(parts[1].strip().split("@", 1)[0])
    return names


def parse_iptables_rules(table: str, output: str) -> list[IptablesRule]:
    """Our rules (those with the vigil-sandbox comment) from `iptables -t TABLE -S`."""
    rules = []
    for line in output.splitlines():
        tokens = shlex.split(line)
        if len(tokens) < 3 or tokens[0] != "-A":
            continue
        comments = [tokens[i + 1] for i, token in enumerate(tokens[:-1]) if token == "--comment"]
        if IPTABLES_COMMENT in comments:
            rules.append(IptablesRule(table, tokens[1], tuple(tokens[2:])))
    return rules


def parse_mount_points(mounts: str) -> list[str]:
    """Mount points from /proc/self/mounts, with its octal escapes (\\040 for a space) decoded."""
    points = []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            points.append(re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), fields[1]))
    return points


def parse_default_route_device(output: str) -> Optional[str]:
    """The device of the default route in `ip route show default` ("default via X dev eth0 ...")."""
    for line in output.splitlines():
        tokens = line.split()
        if tokens[:1] == ["default"] and "dev" in tokens:
            index = tokens.index("dev")
            if index + 1 < len(tokens):
                return tokens[index + 1]
    return None


def parse_pid_list(output: str) -> list[int]:
    """Process ids from `ip netns pids NAME`, one per line."""
    return [int(line) for line in output.split() if line.isdigit()]


def nspawn_machine_of(argv: list[str], netns_dir: Path = Path("/run/netns")) -> Optional[str]:
    """The VPS name if `argv` is a systemd-nspawn of ours (joined to a vigil-* netns), else None."""
    if not argv or os.path.basename(argv[0]) != "systemd-nspawn":
        return None
    machine = netns = None
    for token in argv[1:]:
        if token.startswith("--machine="):
            machine = token.split("=", 1)[1]
        elif token.startswith("--network-namespace-path="):
            netns = token.split("=", 1)[1]
    if machine and netns == str(netns_dir / f"{NETNS_PREFIX}{machine}"):
        return machine
    return None


def is_image_builder(argv: list[str], cwd: Optional[str], partial: Path) -> bool:
    """Whether a process is a debootstrap writing into `partial` (its target may be relative to its cwd)."""
    if not any(os.path.basename(token) == "debootstrap" for token in argv[:2]):
        return False
    for token in argv[1:]:
        if token.startswith("-"):
            continue
        target = Path(token) if os.path.isabs(token) or cwd is None else Path(cwd) / token
        if os.path.normpath(target) == os.path.normpath(partial):
            return True
    return False


def image_is_complete(root: Path) -> bool:
    """Whether a debootstrap target finished: its own work dir is gone and the key binaries exist."""
    return (root.is_dir() and not (root / "debootstrap").exists()
            and all((root / marker).exists() for marker in IMAGE_COMPLETE_MARKERS))


@dataclass
class ProcessInfo:
    """A process as /proc shows it."""

    pid: int
    argv: list[str]
    cwd: Optional[str]


def list_processes() -> list[ProcessInfo]:
    """Every live (non-zombie) process with its argv; processes that exit meanwhile are skipped."""
    processes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not raw:
            continue  # kernel threads and zombies have no command line
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = None
        processes.append(ProcessInfo(int(entry.name), raw.rstrip(b"\0").decode(errors="replace").split("\0"), cwd))
    return processes


def process_is_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie counts as dead (nothing may reap an orphaned nspawn here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def tcp_port_open(address: str, port: int = 22, timeout: float = 1.0) -> bool:
    """Whether something accepts a TCP connection at address:port."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class SandboxFacts:
    """What exists on this machine right now that the sandbox may own.

    state: state.json's hosts by name.
    nspawn_pids: our running systemd-nspawn processes, by VPS name.
    netns: our network namespaces (vigil-*).
    links: our host-side interfaces (vgl-*, vgv-*).
    mounts: mount points under vps_base (parents before children).
    vps_dirs: per-VPS directories under vps_base.
    netns_pids: processes inside each of our namespaces (a container whose nspawn died).
    rules: our iptables rules in the filter and nat tables.
    """

    state: dict[str, dict] = field(default_factory=dict)
    nspawn_pids: dict[str, int] = field(default_factory=dict)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    vps_dirs: list[str] = field(default_factory=list)
    netns_pids: dict[str, list[int]] = field(default_factory=dict)
    rules: list[IptablesRule] = field(default_factory=list)


def load_state(paths: SandboxPaths) -> dict[str, dict]:
    """state.json's hosts by name; empty when there is no state."""
    try:
        data = json.loads(paths.state_file.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise SandboxError(
            f"{paths.state_file}: unreadable sandbox state ({error}); run `invoke sandbox.down`"
        ) from None
    return {host["name"]: host for host in data.get("hosts", [])}


def sandbox_hosts(paths: SandboxPaths = SandboxPaths()) -> list[dict]:
    """The sandbox hosts state.json records, as [{"name": "vps1", "address": "10.213.1.2"}, ...].

    Example: [host["address"] for host in sandbox_hosts()]
    """
    return [{"name": host["name"], "address": host["address"]}
            for host in sorted(load_state(paths).values(), key=lambda host: host["index"])]


def gather_facts(paths: SandboxPaths) -> SandboxFacts:
    """Read everything the sandbox may own on this machine (read-only; needs root for iptables)."""
    facts = SandboxFacts(state=load_state(paths))
    for process in list_processes():
        machine = nspawn_machine_of(process.argv, paths.netns_dir)
        if machine:
            facts.nspawn_pids[machine] = process.pid
    facts.netns = [name for name in parse_netns_list(run_command(["ip", "netns", "list"]))
                   if name.startswith(NETNS_PREFIX)]
    facts.links = [name for name in parse_link_names(run_command(["ip", "-o", "link", "show"]))
                   if name.startswith((HOST_LINK_PREFIX, PEER_LINK_PREFIX))]
    facts.mounts = mounts_under(paths.vps_base)
    if paths.vps_base.is_dir():
        facts.vps_dirs = sorted(entry.name for entry in paths.vps_base.iterdir()
                                if entry.is_dir() and host_name_index(entry.name) is not None)
    for netns in facts.netns:
        try:
            facts.netns_pids[netns] = parse_pid_list(run_command(["ip", "netns", "pids", netns]))
        except SandboxError:
            facts.netns_pids[netns] = []  # a stale /run/netns entry with no namespace behind it
    for table in ("filter", "nat"):
        facts.rules += parse_iptables_rules(table, run_command(["iptables", "-w", "-t", table, "-S"]))
    return facts


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below `base`, parents before children."""
    prefix = str(base).rstrip("/") + "/"
    points = parse_mount_points(Path("/proc/self/mounts").read_text())
    return sorted({point for point in points if point == str(base) or point.startswith(prefix)})


def uplink_device() -> str:
    """The device of the host's default route, where NAT sends VPS traffic out."""
    device = parse_default_route_device(run_command(["ip", "-4", "route", "show", "default"]))
    if not device:
        raise SandboxError("this machine has no IPv4 default route, so the VPSes could not reach the Debian mirror")
    return device


def healthy_hosts(facts: SandboxFacts, authorized_key: Optional[str]) -> set[str]:
    """Hosts to keep: recorded, our nspawn alive, netns present, our key authorized.

    Whether sshd answers is not asked: a busy VPS, or one a test is cutting off
    on purpose, is still running and must not be wiped by the next `up`.
    """
    healthy = set()
    for name, host in facts.state.items():
        if (facts.nspawn_pids.get(name) == host.get("pid") and host.get("netns") in facts.netns
                and (authorized_key is None or host.get("authorized_key") == authorized_key)):
            healthy.add(name)
    return healthy


def stopped_hosts(facts: SandboxFacts, healthy: set[str]) -> set[str]:
    """Recorded hosts whose VPS does not run but whose disk (its overlay's upper layer) is still here.

    A machine reboot or a poweroff leaves these; replacing one would lose what was onboarded on it.
    """
    return {name for name in facts.state
            if name not in healthy and name not in facts.nspawn_pids and name in facts.vps_dirs}


def check_preconditions(task: str, tools: dict[str, str], need_overlay: bool = True) -> None:
    """Raise SandboxUnsupported with one line for the first thing this machine lacks to run `task`."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnsupported(f"{task} needs Linux (network namespaces and systemd-nspawn); this is {sys.platform}")
    if os.geteuid() != 0:
        raise SandboxUnsupported(
            f"{task} needs root (it creates network namespaces and runs systemd-nspawn); run it with sudo"
        )
    missing = [f"{tool} (apt-get install {package})" for tool, package in tools.items() if shutil.which(tool) is None]
    if missing:
        raise SandboxUnsupported(f"{task} needs tools this machine lacks: {', '.join(missing)}")
    if need_overlay and not overlayfs_available():
        raise SandboxUnsupported(f"{task} needs overlayfs, which this kernel does not offer (try `modprobe overlay`)")


def overlayfs_available() -> bool:
    """Whether the kernel lists the overlay filesystem."""
    try:
        return any(line.split()[-1:] == ["overlay"] for line in Path("/proc/filesystems").read_text().splitlines())
    except OSError:
        return False
