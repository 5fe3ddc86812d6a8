"""Sandbox VPSes: real systemd Debian 13 servers booted on this machine.

Each VPS is a systemd-nspawn container with its own network namespace, a
veth pair to the host, a /30 from 10.213.0.0/16, NAT out of the host's uplink,
a writable overlayfs on a cached debootstrap image, and a real sshd whose
freshly generated host key is pinned in inventory/sandbox.known_hosts.

The module is split the way the rest of vigil is:

- pure planners return argv lists or rendered text and do no I/O (unit tested);
- fact readers run one read-only command or read /proc and parse it;
- `up`, `down`, `status` read facts, plan the difference, then apply it
  through `run_command`, the one place that executes a local command.

Everything vigil creates on the host is named so it can be found again after
a killed run: netns `vigil-vpsN`, links `vgl-vpsN` (`vgv-vpsN` before the peer
moves into its namespace), iptables rules commented `vigil-sandbox`, mounts and
directories under /var/lib/vigil/sandbox.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from vigil.errors import ExitCode, VigilError

REPO_ROOT = Path(__file__).resolve().parents[1]

SANDBOX_NETWORK = ipaddress.ip_network("10.213.0.0/16")
IPTABLES_COMMENT = "vigil-sandbox"
NETNS_PREFIX = "vigil-"
HOST_LINK_PREFIX = "vgl-"
# The VPS end is created under this name in the host namespace, then moved and renamed.
PEER_LINK_PREFIX = "vgv-"
VPS_INTERFACE = "eth0"
HOST_NAME_PATTERN = re.compile(r"^vps([1-9][0-9]*)$")
# Each VPS costs a systemd boot and ~50 MB of RAM; past this a typo is likelier than a need.
MAX_HOSTS = 32

# The Debian releases a sandbox VPS can run, by version, and the one it runs unless told.
DEBIAN_RELEASES = {"12": "bookworm", "13": "trixie"}
DEFAULT_RELEASE = "13"
IMAGE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "python3",
    "ca-certificates",
    "iproute2",
)
# Files a finished debootstrap leaves; a `.partial` without them is not an image.
IMAGE_COMPLETE_MARKERS = ("usr/lib/systemd/systemd", "usr/sbin/sshd", "usr/bin/python3")

NSPAWN_PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
SSHD_DROPIN = "etc/ssh/sshd_config.d/00-vigil-sandbox.conf"
COMMAND_TIMEOUT = 60
IMAGE_BUILD_TIMEOUT = 1800
BOOT_TIMEOUT = 60
STOP_TIMEOUT = 30

# Tool -> the Debian package that brings it, for the precondition message.
REQUIRED_TOOLS = {
    "ip": "iproute2",
    "iptables": "iptables",
    "systemd-nspawn": "systemd-container",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mount": "mount",
    "umount": "mount",
}
IMAGE_BUILD_TOOLS = {"debootstrap": "debootstrap"}
# `down` only tears down; it must work on a machine that lost nspawn or ssh.
TEARDOWN_TOOLS = {"ip": "iproute2", "iptables": "iptables", "umount": "mount"}

Echo = Callable[[str], None]


class SandboxError(VigilError):
    """The sandbox cannot be brought up, down or inspected; the message says why in one line."""

    exit_code = ExitCode.HOST_FAILED


class SandboxUnsupported(SandboxError):
    """This machine cannot run sandbox VPSes: not Linux, not root, a tool or overlayfs missing."""

    exit_code = ExitCode.UNSUPPORTED


# ---------------------------------------------------------------------------
# Where things live


@dataclass(frozen=True)
class SandboxPaths:
    """Every path the sandbox reads or writes; tests swap in a temporary tree.

    repo: the repository root (parent of the vigil package).
    image_cache: holds the pristine image and its `.partial` while it is built.
    vps_base: per-VPS overlay directories, console logs and the lock.
    apt_archives: .debs shared by every VPS (hard-linked in at boot, collected back at teardown).
    netns_dir: where `ip netns` keeps its named namespaces.
    Example: SandboxPaths(repo=tmp_path, vps_base=tmp_path / "vps")
    """

    repo: Path = REPO_ROOT
    image_cache: Path = Path("/var/cache/vigil/images")
    vps_base: Path = Path("/var/lib/vigil/sandbox")
    apt_archives: Path = Path("/var/cache/vigil/apt-archives")
    netns_dir: Path = Path("/run/netns")

    @property
    def state_dir(self) -> Path:
        return self.repo / ".vigil" / "sandbox"

    @property
    def private_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def public_key(self) -> Path:
        return self.state_dir / "id_ed25519.pub"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def inventory_file(self) -> Path:
        return self.repo / "inventory" / "sandbox.yml"

    @property
    def known_hosts_file(self) -> Path:
        return self.repo / "inventory" / "sandbox.known_hosts"

    def image(self, release: str) -> Path:
        """The pristine image of Debian `release` ("12", "13")."""
        return self.image_cache / f"debian-{DEBIAN_RELEASES[release]}"

    def image_partial(self, release: str) -> Path:
        return self.image_cache / f"debian-{DEBIAN_RELEASES[release]}.partial"

    def image_build_log(self, release: str) -> Path:
        return self.image_cache / f"debian-{DEBIAN_RELEASES[release]}.build.log"

    def release_apt_archives(self, release: str) -> Path:
        """The shared .debs of one release: a bookworm .deb must never reach a trixie VPS."""
        return self.apt_archives / DEBIAN_RELEASES[release]

    @property
    def lock_file(self) -> Path:
        return self.vps_base / ".lock"

    @property
    def ip_forward_marker(self) -> Path:
        """Present while forwarding is on only because `up` turned it on."""
        return self.vps_base / ".ip_forward.restore"

    def vps_dir(self, name: str) -> Path:
        return self.vps_base / name

    def vps_release_file(self, name: str) -> Path:
        """Which Debian release the VPS's overlay sits on, so teardown files its .debs correctly."""
        return self.vps_dir(name) / "release"


@dataclass(frozen=True)
class Vps:
    """One sandbox VPS's names and addresses, all derived from its index.

    index: 1 for vps1; it picks the /30 10.213.<index>.0.
    Example: Vps(2).address == "10.213.2.2"
    """

    index: int

    def __post_init__(self):
        if not 1 <= self.index <= 254:
            raise SandboxError(f"sandbox host index {self.index} is outside 1..254 (one /30 per third octet)")

    @property
    def name(self) -> str:
        return f"vps{self.index}"

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def host_link(self) -> str:
        return f"{HOST_LINK_PREFIX}{self.name}"

    @property
    def peer_link(self) -> str:
        return f"{PEER_LINK_PREFIX}{self.name}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        base = int(SANDBOX_NETWORK.network_address) + self.index * 256
        return ipaddress.ip_network(f"{ipaddress.ip_address(base)}/30")

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def address(self) -> str:
        return str(self.subnet.network_address + 2)

    @classmethod
    def from_name(cls, name: str) -> "Vps":
        """The VPS called `name` (vps1, vps2, ...); SandboxError for anything else."""
        match = HOST_NAME_PATTERN.match(name)
        if not match:
            raise SandboxError(f"{name!r} is not a sandbox host name (vps1, vps2, ...)")
        return cls(int(match.group(1)))


def host_name_index(name: str) -> Optional[int]:
    """The index in a name like vps3, or None for a name vigil did not make."""
    match = HOST_NAME_PATTERN.match(name)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------
# Running commands: the one place that executes


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
        detail = tail(completed.stderr or completed.stdout or "") if log is None else f"see {log}: {tail(_read_tail(log))}"
        raise SandboxError(f"`{shown}` failed (exit {completed.returncode}): {detail or 'no output'}")
    return completed.stdout or ""


def _read_tail(path: Path, size: int = 4096) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(max(0, path.stat().st_size - size))
            return stream.read().decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# Pure planners: argv lists and rendered files


def network_up_commands(vps: Vps) -> list[list[str]]:
    """Commands that give `vps` its namespace, veth pair, addresses and default route."""
    inside = ["ip", "-n", vps.netns]
    return [
        ["ip", "netns", "add", vps.netns],
        ["ip", "link", "add", vps.host_link, "type", "veth", "peer", "name", vps.peer_link],
        ["ip", "link", "set", vps.peer_link, "netns", vps.netns],
        inside + ["link", "set", vps.peer_link, "name", VPS_INTERFACE],
        ["ip", "addr", "add", f"{vps.gateway}/30", "dev", vps.host_link],
        ["ip", "link", "set", vps.host_link, "up"],
        inside + ["addr", "add", f"{vps.address}/30", "dev", VPS_INTERFACE],
        inside + ["link", "set", "lo", "up"],
        inside + ["link", "set", VPS_INTERFACE, "up"],
        inside + ["route", "add", "default", "via", vps.gateway],
    ]


@dataclass(frozen=True)
class IptablesRule:
    """One rule in `iptables -S` form, so a planned rule compares equal to a listed one.

    table: filter or nat.
    chain: POSTROUTING, FORWARD, ...
    spec: the match and target tokens after the chain, in the order `iptables -S` prints them.
    insert: add it at the top of the chain instead of appending (ahead of a DROP rule).
    """

    table: str
    chain: str
    spec: tuple[str, ...]
    insert: bool = field(default=False, compare=False)

    def add_argv(self) -> list[str]:
        position = ["-I", self.chain, "1"] if self.insert else ["-A", self.chain]
        return ["iptables", "-w", "-t", self.table, *position, *self.spec]

    def delete_argv(self) -> list[str]:
        return ["iptables", "-w", "-t", self.table, "-D", self.chain, *self.spec]


def desired_iptables_rules(uplink: str) -> list[IptablesRule]:
    """The rules that let every VPS reach the outside through `uplink`, each tagged with our comment."""
    network = str(SANDBOX_NETWORK)
    tag = ("-m", "comment", "--comment", IPTABLES_COMMENT)
    return [
        IptablesRule("nat", "POSTROUTING", ("-s", network, "-o", uplink, *tag, "-j", "MASQUERADE")),
        # FORWARD may default to DROP (Docker sets that); insert so a DROP rule cannot shadow ours.
        IptablesRule("filter", "FORWARD", ("-s", network, *tag, "-j", "ACCEPT"), insert=True),
        IptablesRule("filter", "FORWARD", ("-d", network, *tag, "-j", "ACCEPT"), insert=True),
    ]


def plan_iptables(existing: Iterable[IptablesRule], desired: Iterable[IptablesRule]) -> list[list[str]]:
    """Delete our rules that are not wanted (or duplicated), add the wanted ones that are missing."""
    desired = list(desired)
    commands: list[list[str]] = []
    seen: set[IptablesRule] = set()
    for rule in existing:
        if rule in desired and rule not in seen:
            seen.add(rule)
        else:
            commands.append(rule.delete_argv())
    commands += [rule.add_argv() for rule in desired if rule not in seen]
    return commands


def overlay_mount_command(lower: Path, upper: Path, work: Path, root: Path) -> list[str]:
    """Mount a writable overlay of the image at `root`."""
    for path in (lower, upper, work):
        # The option string is comma and colon separated; such a path would be misread.
        if any(char in str(path) for char in ",:"):
            raise SandboxError(f"overlay path {path} contains ',' or ':'")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    return ["mount", "-t", "overlay", "overlay", "-o", options, str(root)]


def nspawn_command(vps: Vps, root: Path, paths: SandboxPaths) -> list[str]:
    """The systemd-nspawn command that boots `vps` from `root` inside its network namespace."""
    return [
        "systemd-nspawn",
        "--directory", str(root),
        "--boot",
        # The host runs no systemd or D-Bus; without these nspawn fails to open the system bus.
        "--register=no",
        "--keep-unit",
        # ufw, fail2ban and iptables inside the VPS need it.
        "--capability=CAP_NET_ADMIN",
        f"--network-namespace-path={paths.netns_dir / vps.netns}",
        f"--machine={vps.name}",
        "--timezone=off",
        # Keep the resolv.conf we copied in; nspawn would otherwise manage it.
        "--resolv-conf=off",
        "--link-journal=no",
        "--console=read-only",
    ]


def host_key_command(root: Path, vps: Vps) -> list[str]:
    """Generate the VPS's only sshd host key inside its writable layer."""
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{vps.name}",
            "-f", str(root / "etc/ssh/ssh_host_ed25519_key")]


def client_key_command(private_key: Path) -> list[str]:
    """Generate the key vigil logs in to every sandbox VPS with."""
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vigil-sandbox", "-f", str(private_key)]


def image_build_command(target: Path, release: str) -> list[str]:
    """The debootstrap that builds the pristine image (default Debian mirror, as SANDBOX.md checked)."""
    return ["debootstrap", "--variant=minbase", f"--include={','.join(IMAGE_PACKAGES)}", DEBIAN_RELEASES[release], str(target)]


def ssh_options(paths: SandboxPaths) -> list[str]:
    """ssh options that log in with the sandbox key and trust only the pinned host keys."""
    return [
        "-i", str(paths.private_key),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={paths.known_hosts_file}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "ConnectTimeout=5",
    ]


def ssh_command(paths: SandboxPaths, address: str, remote: Optional[list[str]] = None,
                batch: bool = True, user: str = "root") -> list[str]:
    """An ssh command to user@address; `remote` is the command to run there (None: a login shell)."""
    argv = ["ssh", *ssh_options(paths)]
    if batch:
        argv += ["-o", "BatchMode=yes"]
    argv.append(f"{user}@{address}")
    if remote:
        argv += ["--", *remote]
    return argv


# A container's early boot sometimes fails to spawn a unit ("Failed to spawn executor", result
# "resources": seen with systemd-journal-flush.service). A real VPS does not: start such units
# once more, so a sandbox VPS is as a fresh VPS would be. Prints the state once boot has finished.
BOOT_WAIT = r'''
systemctl is-system-running --wait >/dev/null
for unit in $(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}'); do
    if [ "$(systemctl show -p Result --value -- "$unit")" = resources ]; then systemctl restart -- "$unit"; fi
done
systemctl is-system-running
'''


def boot_wait_command(paths: SandboxPaths, vps: Vps) -> list[str]:
    """Ask the VPS's systemd to report once boot has finished (running or degraded)."""
    # ssh hands the remote shell one string: the script travels quoted inside it.
    return ssh_command(paths, vps.address, [shlex.join(["sh", "-c", BOOT_WAIT])])


def render_inventory(hosts: list[dict], paths: SandboxPaths) -> str:
    """inventory/sandbox.yml for `hosts` (dicts with name and address, in order); web = all, db = the first."""
    ssh_key = os.path.relpath(paths.private_key, paths.inventory_file.parent)
    known_hosts = os.path.relpath(paths.known_hosts_file, paths.inventory_file.parent)
    names = [host["name"] for host in hosts]
    lines = [
        "# Generated by `invoke sandbox.up`; edits are overwritten.",
        f"known_hosts: {known_hosts}      # relative to inventory/",
        "defaults:",
        "  user: deploy            # deploys log in as deploy; its sudo covers deploys only (roles/users)",
        "  admin_user: ops         # provisioning logs in as ops, root through sudo (roles/users)",
        "  bootstrap_user: root    # until then: a fresh VPS knows only root",
        "  port: 22",
        f"  ssh_key: {ssh_key}   # relative to the inventory file",
        "vars:",
        "  nginx_tls: local-ca   # HTTPS from the sandbox's own CA (.vigil/sandbox/ca/ca.crt)",
        f"  users_admin_authorized_keys: [{_public_key_line(paths)!r}]",
        f"  users_deploy_authorized_keys: [{_public_key_line(paths)!r}]",
        "groups:",
        f"  web: {{hosts: [{', '.join(names)}]}}   # every host",
        f"  db: {{hosts: [{', '.join(names[:1])}]}}          # the first host",
        "hosts:",
    ]
    # The control machine reaches each VPS from its gateway address: exempt it from the
    # firewall's SSH rate limit, as a real setup exempts its bastion or CI runner.
    lines += [f"  {host['name']}: {{address: {host['address']}, "
              f"vars: {{firewall_ssh_trusted_sources: [{Vps.from_name(host['name']).gateway}]}}}}" for host in hosts]
    return "\n".join(lines) + "\n"


def _public_key_line(paths: SandboxPaths) -> str:
    return paths.public_key.read_text().strip() if paths.public_key.exists() else ""


def render_known_hosts(hosts: list[dict]) -> str:
    """known_hosts lines pinning each host's key (`host_key` is "ssh-ed25519 AAAA...") at its address."""
    lines = []
    for host in hosts:
        key_type, key_data = host["host_key"].split()[:2]
        lines.append(f"{host['address']} {key_type} {key_data}")
    return "".join(line + "\n" for line in lines)


# What Debian's installer writes, for an image without /etc/hosts (a bookworm minbase has none).
DEBIAN_ETC_HOSTS = """127.0.0.1\tlocalhost

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""


def render_etc_hosts(existing: str, hostname: str) -> str:
    """/etc/hosts with exactly one `127.0.1.1 hostname` line, as Debian's installer writes it."""
    if not any(line.split()[:1] == ["127.0.0.1"] for line in existing.splitlines()):
        existing = "127.0.0.1\tlocalhost\n" + existing if existing.strip() else DEBIAN_ETC_HOSTS
    kept = [line for line in existing.splitlines() if not line.split() or line.split()[0] != "127.0.1.1"]
    out: list[str] = []
    inserted = False
    for line in kept:
        out.append(line)
        if not inserted and line.split()[:1] == ["127.0.0.1"]:
            out.append(f"127.0.1.1\t{hostname}")
            inserted = True
    if not inserted:
        out.insert(0, f"127.0.1.1\t{hostname}")
    return "\n".join(out) + "\n"


def render_sshd_dropin() -> str:
    """An sshd drop-in that offers only the host key pinned in known_hosts."""
    return (
        "# Written by vigil sandbox.up: offer only the key pinned in inventory/sandbox.known_hosts.\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
    )


# ---------------------------------------------------------------------------
# Fact parsers (pure): command output in, names out


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


# ---------------------------------------------------------------------------
# Facts about this machine


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
        raise SandboxError(f"{paths.state_file}: unreadable sandbox state ({error}); run `invoke sandbox.down`") from None
    return {host["name"]: host for host in data.get("hosts", [])}


def save_state(paths: SandboxPaths, hosts: dict[str, dict]) -> None:
    """Write state.json atomically (temp file then rename), hosts in index order."""
    ordered = sorted(hosts.values(), key=lambda host: host["index"])
    write_file_atomically(paths.state_file, json.dumps({"version": 1, "hosts": ordered}, indent=2) + "\n", 0o644)


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


# ---------------------------------------------------------------------------
# Cleanup plan (pure): what to remove so only `keep` remains


@dataclass
class CleanupPlan:
    """Everything to remove, in the order it must go.

    stop: nspawn pids to stop (SIGTERM, then SIGKILL), by VPS name.
    empty_netns: namespaces to empty (SIGKILL what still runs there, read at apply time) before deletion.
    orphans: processes seen in such a namespace with no nspawn of ours alive: a container whose nspawn was killed.
    commands: umounts, link and netns deletions, iptables changes, in order.
    remove_dirs: per-VPS directories to delete once nothing is mounted in them.
    forget: state entries to drop.
    hosts: the VPSes whose remains go, for the message (a first run's firewall rules name none).
    """

    stop: dict[str, int] = field(default_factory=dict)
    empty_netns: list[str] = field(default_factory=list)
    orphans: dict[str, list[int]] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    remove_dirs: list[str] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.stop or self.empty_netns or self.commands or self.remove_dirs or self.forget)

    def describe(self, paths: SandboxPaths) -> list[str]:
        lines = [f"stop {name} (kill -TERM {pid}, then -KILL)" for name, pid in sorted(self.stop.items())]
        lines += [f"kill -KILL {' '.join(map(str, pids))} (still running in {netns}, its nspawn gone)"
                  for netns, pids in sorted(self.orphans.items())]
        lines += [shlex.join(argv) for argv in self.commands]
        for name in self.remove_dirs:
            lines.append(f"keep {name}'s downloaded .debs in {paths.release_apt_archives(vps_release(paths, name))}")
            lines.append(f"rm -r {paths.vps_dir(name)}")
        lines += [f"forget {name} in {paths.state_file.name}" for name in self.forget]
        return lines


def plan_cleanup(facts: SandboxFacts, paths: SandboxPaths, keep: set[str],
                 desired_rules: list[IptablesRule]) -> CleanupPlan:
    """Plan removal of every sandbox object not belonging to a host in `keep`.

    keep: healthy hosts to leave running (empty for `down`).
    desired_rules: the iptables rules that should exist afterwards (empty for `down`).
    Example: plan_cleanup(facts, paths, keep={"vps1"}, desired_rules=desired_iptables_rules("eth0"))
    """
    plan = CleanupPlan()
    owners: set[str] = set()
    plan.stop = {name: pid for name, pid in facts.nspawn_pids.items() if name not in keep}
    owners.update(plan.stop)
    for netns in facts.netns:
        name = netns[len(NETNS_PREFIX):]
        if name not in keep:
            owners.add(name)
            plan.empty_netns.append(netns)
            if name not in facts.nspawn_pids and facts.netns_pids.get(netns):
                plan.orphans[netns] = facts.netns_pids[netns]
    # Children first, so an overlay root comes off before anything mounted above it.
    for point in sorted(facts.mounts, key=lambda point: point.count("/"), reverse=True):
        name = Path(point).relative_to(paths.vps_base).parts[0] if point != str(paths.vps_base) else ""
        if name not in keep:
            owners.add(name)
            plan.commands.append(["umount", point])
    # Deleting one end of a veth pair deletes both: name one end per pair (the host end when it is
    # here; the peer when a run died before moving it), and before the namespace it lives in.
    pairs: dict[str, str] = {}
    for link in facts.links:
        is_host_end = link.startswith(HOST_LINK_PREFIX)
        name = link[len(HOST_LINK_PREFIX if is_host_end else PEER_LINK_PREFIX):]
        if name not in keep and (is_host_end or name not in pairs):
            pairs[name] = link
    owners.update(pairs)
    plan.commands += [["ip", "link", "delete", link] for link in pairs.values()]
    plan.commands += [["ip", "netns", "delete", netns] for netns in facts.netns
                      if netns[len(NETNS_PREFIX):] not in keep]
    plan.commands += plan_iptables(facts.rules, desired_rules)
    plan.remove_dirs = [name for name in facts.vps_dirs if name not in keep]
    plan.forget = sorted(name for name in facts.state if name not in keep)
    owners.update(plan.remove_dirs, plan.forget)
    plan.hosts = sorted((name for name in owners if name), key=lambda name: (host_name_index(name) or 0, name))
    return plan


@dataclass
class UpPlan:
    """Which hosts `up` creates, keeps and leaves beyond the requested count.

    replace: healthy hosts on another Debian release than asked; they are removed and created again.
    releases: the Debian release of every host to create.
    """

    create: list[Vps]
    keep: list[str]
    extra: list[str]
    replace: list[str] = field(default_factory=list)
    releases: dict[str, str] = field(default_factory=dict)


def check_hosts_count(requested: int) -> None:
    if not 1 <= requested <= MAX_HOSTS:
        raise SandboxError(f"--hosts must be between 1 and {MAX_HOSTS}, not {requested}")


def parse_release_flags(flags: Iterable[str], requested: int) -> dict[str, str]:
    """The Debian release each of vps1..vps<requested> must run, from the `--debian` flags.

    A bare release ("12") applies to every host, "vps3:12" to one host (and wins
    over a bare one); hosts no flag names run DEFAULT_RELEASE.
    Example: parse_release_flags(["vps2:12"], 2) == {"vps1": "13", "vps2": "12"}
    """
    check_hosts_count(requested)
    default, per_host = DEFAULT_RELEASE, {}
    known = ", ".join(f"{version} ({name})" for version, name in DEBIAN_RELEASES.items())
    for flag in flags:
        name, _, release = flag.rpartition(":")
        if release not in DEBIAN_RELEASES:
            raise SandboxError(f"--debian={flag}: unknown Debian release {release!r}; choose {known}")
        if not name:
            default = release
            continue
        index = host_name_index(name)
        if index is None or index > requested:
            raise SandboxError(f"--debian={flag}: {name!r} is not one of vps1..vps{requested} (--hosts={requested})")
        if per_host.get(name, release) != release:
            raise SandboxError(f"--debian: {name} is given two releases, {per_host[name]} and {release}")
        per_host[name] = release
    return {f"vps{index}": per_host.get(f"vps{index}", default) for index in range(1, requested + 1)}


def plan_hosts(requested: int, healthy: set[str], releases: dict[str, str] | None = None,
               running: dict[str, str] | None = None) -> UpPlan:
    """Plan `up --hosts=requested` given the healthy hosts: create the missing vps1..vpsN, keep the rest.

    releases: the Debian release each wanted host must run (default DEFAULT_RELEASE);
    running: the release each healthy host runs. A host on the wrong release is replaced.
    """
    check_hosts_count(requested)
    releases = releases or {}
    running = running or {}
    wanted = [Vps(index) for index in range(1, requested + 1)]
    wanted_release = {vps.name: releases.get(vps.name, DEFAULT_RELEASE) for vps in wanted}
    replace = [vps.name for vps in wanted
               if vps.name in healthy and running.get(vps.name, DEFAULT_RELEASE) != wanted_release[vps.name]]
    usable = healthy - set(replace)
    by_index = sorted(usable, key=lambda name: host_name_index(name) or 0)
    create = [vps for vps in wanted if vps.name not in usable]
    return UpPlan(
        create=create,
        keep=[name for name in by_index if (host_name_index(name) or 0) <= requested],
        extra=[name for name in by_index if (host_name_index(name) or 0) > requested],
        replace=replace,
        releases={vps.name: wanted_release[vps.name] for vps in create},
    )


# ---------------------------------------------------------------------------
# Preconditions


def check_preconditions(task: str, tools: dict[str, str], need_overlay: bool = True) -> None:
    """Raise SandboxUnsupported with one line for the first thing this machine lacks to run `task`."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnsupported(f"{task} needs Linux (network namespaces and systemd-nspawn); this is {sys.platform}")
    if os.geteuid() != 0:
        raise SandboxUnsupported(f"{task} needs root (it creates network namespaces and runs systemd-nspawn); run it with sudo")
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


# ---------------------------------------------------------------------------
# Files


def write_file_atomically(path: Path, content: str, mode: int) -> None:
    """Write `content` to `path` through a temp file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as stream:
        stream.write(content)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def write_if_changed(path: Path, content: str, mode: int) -> bool:
    """Write `path` only when its content differs; True when it wrote."""
    try:
        if path.read_text() == content:
            return False
    except OSError:
        pass
    write_file_atomically(path, content, mode)
    return True


def hand_to_repo_owner(paths: SandboxPaths, *targets: Path) -> None:
    """Give files under the repo to the repo's owner, so `sudo invoke sandbox.up` leaves a key others can use."""
    owner = paths.repo.stat()
    if os.geteuid() != 0 or owner.st_uid == 0:
        return
    for target in targets:
        if target.exists():
            os.chown(target, owner.st_uid, owner.st_gid)


def rootfs_path(root: Path, relative: str) -> Path:
    """`relative` inside a VPS root; SandboxError if a directory on the way is a symlink out of it."""
    path = root
    for part in Path(relative.lstrip("/")).parts[:-1]:
        path = path / part
        # An image symlink would make us write on the host instead of inside the VPS.
        if path.is_symlink():
            raise SandboxError(f"{path} is a symlink; refusing to write through it")
    return root / relative.lstrip("/")


def write_into_rootfs(root: Path, relative: str, content: str, mode: int = 0o644) -> None:
    """Write a file inside a VPS root, replacing a file or symlink there without following it."""
    target = rootfs_path(root, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), "w") as stream:
        stream.write(content)
    os.chmod(target, mode)


# ---------------------------------------------------------------------------
# Steps with side effects


@dataclass
class Timings:
    """Seconds spent in each phase of a run, for the task to print."""

    phases: dict[str, float] = field(default_factory=dict)

    def record(self, phase: str, started: float) -> None:
        self.phases[phase] = round(time.monotonic() - started, 2)


class SandboxLock:
    """An exclusive, non-blocking lock so two `up`/`down` runs never interleave."""

    def __init__(self, paths: SandboxPaths):
        self.path = paths.lock_file
        self.stream = None

    def __enter__(self) -> "SandboxLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = open(self.path, "w")
        try:
            fcntl.flock(self.stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.stream.close()
            raise SandboxError(f"another sandbox.up or sandbox.down is running (it holds {self.path})") from None
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()


def ensure_client_key(paths: SandboxPaths, echo: Echo) -> str:
    """Create the sandbox key pair if absent; return the public key line."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.state_dir, 0o700)
    if not paths.private_key.exists():
        paths.public_key.unlink(missing_ok=True)
        run_command(client_key_command(paths.private_key))
        echo(f"generated the sandbox key {paths.private_key}")
    elif not paths.public_key.exists():
        write_file_atomically(paths.public_key, run_command(["ssh-keygen", "-y", "-f", str(paths.private_key)]), 0o644)
    os.chmod(paths.private_key, 0o600)
    hand_to_repo_owner(paths, paths.repo / ".vigil", paths.state_dir, paths.private_key, paths.public_key)
    return paths.public_key.read_text().strip()


def find_image_builder(paths: SandboxPaths, release: str) -> Optional[int]:
    """The pid of a running debootstrap that is building our image of `release`, if any."""
    for process in list_processes():
        if is_image_builder(process.argv, process.cwd, paths.image_partial(release)):
            return process.pid
    return None


def ensure_image(paths: SandboxPaths, release: str, echo: Echo) -> str:
    """Make sure the pristine image of Debian `release` exists: reuse it, wait for a build in progress, or build it.

    Returns what happened: "cached", "waited" or "built".
    """
    image, partial, build_log = paths.image(release), paths.image_partial(release), paths.image_build_log(release)
    if image.is_dir():
        return "cached"
    outcome = "built"
    if partial.exists():
        builder = find_image_builder(paths, release)
        if builder:
            echo(f"waiting for the image build already running (debootstrap pid {builder}) ...")
            deadline = time.monotonic() + IMAGE_BUILD_TIMEOUT
            while process_is_alive(builder):
                if time.monotonic() > deadline:
                    raise SandboxError(f"the image build (pid {builder}) did not finish within {IMAGE_BUILD_TIMEOUT} s")
                time.sleep(2)
            outcome = "waited"
            # Whoever started it may rename it into place; give them a moment before we do.
            for _ in range(10):
                if image.is_dir():
                    return outcome
                time.sleep(1)
        if image_is_complete(partial):
            os.rename(partial, image)
            return outcome
        echo(f"removing the incomplete image build {partial}")
        remove_tree(partial)
    paths.image_cache.mkdir(parents=True, exist_ok=True)
    echo(f"building the Debian {release} ({DEBIAN_RELEASES[release]}) image with debootstrap (about 75 s; log: {build_log}) ...")
    build_log.write_text("")
    run_command(image_build_command(partial, release), timeout=IMAGE_BUILD_TIMEOUT, log=build_log)
    if not image_is_complete(partial):
        raise SandboxError(f"debootstrap finished but {partial} is not a complete image; see {build_log}")
    os.rename(partial, image)
    return "built"


def remove_tree(path: Path) -> None:
    """Delete a directory tree after making sure nothing is mounted inside it."""
    for point in reversed(mounts_under(path)):
        run_command(["umount", point])
    if mounts_under(path):
        raise SandboxError(f"{path} still has mounts inside; not deleting it")
    shutil.rmtree(path, ignore_errors=False)


def stop_processes(pids: Iterable[int], timeout: float = STOP_TIMEOUT) -> list[int]:
    """SIGTERM each pid (nspawn turns it into a clean poweroff), wait, then SIGKILL; returns those killed."""
    pids = [pid for pid in pids if process_is_alive(pid)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(process_is_alive(pid) for pid in pids):
        _reap(pids)
        time.sleep(0.2)
    killed = [pid for pid in pids if process_is_alive(pid)]
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(process_is_alive(pid) for pid in killed):
        _reap(killed)
        time.sleep(0.1)
    _reap(pids)
    return killed


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _reap(pids: Iterable[int]) -> None:
    # nspawn started by this very process stays a zombie until we wait for it.
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


APT_ARCHIVES_IN_VPS = "var/cache/apt/archives"


def seed_apt_archives(shared: Path, upper: Path, lower: Path) -> int:
    """Hard-link the shared .deb cache into a VPS's upper layer (before mounting); returns how many.

    Not a bind mount: apt locks /var/cache/apt/archives/lock with fcntl, and one
    shared directory made a second VPS's apt-get fail at once ("Could not get
    lock ... held by process 0") whenever two hosts ran apt in parallel.
    """
    debs = sorted(shared.glob("*.deb")) if shared.is_dir() else []
    if not debs:
        return 0
    target = upper / APT_ARCHIVES_IN_VPS
    # Directories made in the upper layer hide the image's owner and mode, so copy them.
    for relative in ("var", "var/cache", "var/cache/apt", APT_ARCHIVES_IN_VPS):
        made, original = upper / relative, (lower / relative).stat()
        made.mkdir(exist_ok=True)
        os.chown(made, original.st_uid, original.st_gid)
        os.chmod(made, original.st_mode & 0o7777)
    linked = 0
    for deb in debs:
        try:
            os.link(deb, target / deb.name)
            linked += 1
        except FileExistsError:
            pass
        except OSError:
            return linked  # another filesystem: no cheap links, so the VPS downloads instead
    return linked


def harvest_apt_archives(upper: Path, shared: Path) -> int:
    """Hard-link the .debs a VPS downloaded back into the shared cache, before its layer is deleted."""
    source = upper / APT_ARCHIVES_IN_VPS
    if not source.is_dir():
        return 0
    shared.mkdir(parents=True, exist_ok=True)
    kept = 0
    for deb in source.glob("*.deb"):
        if not deb.is_file() or deb.is_symlink() or (shared / deb.name).exists():
            continue
        try:
            os.link(deb, shared / deb.name)
        except OSError:
            shutil.copy2(deb, shared / deb.name)
        kept += 1
    return kept


def kill_namespace_processes(netns: str, timeout: float = 10) -> list[int]:
    """SIGKILL whatever still runs in a namespace about to go; returns those pids.

    A SIGKILLed systemd-nspawn leaves its container running (seen here), so
    stopping nspawn is not enough: what is left is found by its namespace.
    """
    try:
        pids = parse_pid_list(run_command(["ip", "netns", "pids", netns]))
    except SandboxError:
        return []  # the namespace is already gone
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(process_is_alive(pid) for pid in pids):
        time.sleep(0.1)
    return pids


def apply_cleanup(plan: CleanupPlan, paths: SandboxPaths, echo: Echo) -> None:
    """Carry out a CleanupPlan, in its order."""
    if plan.stop:
        echo(f"stopping {', '.join(sorted(plan.stop))} ...")
        killed = stop_processes(plan.stop.values())
        if killed:
            echo(f"  did not power off within {STOP_TIMEOUT} s; killed nspawn pid(s) {killed}")
    for netns in plan.empty_netns:
        kill_namespace_processes(netns)
    for argv in plan.commands:
        run_command(argv)
    for name in plan.remove_dirs:
        harvest_apt_archives(paths.vps_dir(name) / "upper", paths.release_apt_archives(vps_release(paths, name)))
        remove_tree(paths.vps_dir(name))
    for name in {*plan.stop, *plan.remove_dirs, *plan.forget}:
        # nspawn removes this itself only when /run is a tmpfs; an empty one is all that is left.
        try:
            (NSPAWN_PROPAGATE_DIR / name).rmdir()
        except OSError:
            pass
    if plan.forget:
        hosts = load_state(paths)
        for name in plan.forget:
            hosts.pop(name, None)
        if hosts:
            save_state(paths, hosts)
        else:
            paths.state_file.unlink(missing_ok=True)


def vps_release(paths: SandboxPaths, name: str) -> str:
    """The Debian release a VPS directory was made from (one made before releases were recorded ran 13)."""
    try:
        release = paths.vps_release_file(name).read_text().strip()
    except OSError:
        return DEFAULT_RELEASE
    return release if release in DEBIAN_RELEASES else DEFAULT_RELEASE


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def ensure_ip_forward(paths: SandboxPaths) -> bool:
    """Turn on IPv4 forwarding if it is off, noting that `down` must turn it off again; True when it changed."""
    if IP_FORWARD.read_text().strip() == "1":
        return False
    paths.vps_base.mkdir(parents=True, exist_ok=True)
    paths.ip_forward_marker.write_text("0\n")
    IP_FORWARD.write_text("1\n")
    return True


def restore_ip_forward(paths: SandboxPaths) -> bool:
    """Put IPv4 forwarding back as `up` found it, if `up` was the one to turn it on."""
    if not paths.ip_forward_marker.exists():
        return False
    IP_FORWARD.write_text(paths.ip_forward_marker.read_text())
    paths.ip_forward_marker.unlink()
    return True


def prepare_rootfs(vps: Vps, paths: SandboxPaths, authorized_key: str, release: str) -> str:
    """Mount the VPS's overlay on the `release` image and write what makes it this VPS; returns its new host public key."""
    vps_dir = paths.vps_dir(vps.name)
    upper, work, root = vps_dir / "upper", vps_dir / "work", vps_dir / "root"
    for directory in (upper, work, root):
        directory.mkdir(parents=True, exist_ok=True)
    paths.vps_release_file(vps.name).write_text(release + "\n")
    seed_apt_archives(paths.release_apt_archives(release), upper, paths.image(release))
    run_command(overlay_mount_command(paths.image(release), upper, work, root))

    write_into_rootfs(root, "etc/hostname", f"{vps.name}\n")
    hosts_file = rootfs_path(root, "etc/hosts")
    write_into_rootfs(root, "etc/hosts", render_etc_hosts(hosts_file.read_text() if hosts_file.is_file() else "", vps.name))
    # A machine id per VPS, as a real server has; sharing the image's would confuse journald and DHCP.
    write_into_rootfs(root, "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    write_into_rootfs(root, "etc/resolv.conf", Path("/etc/resolv.conf").read_text())
    ssh_dir = rootfs_path(root, "root/.ssh/authorized_keys").parent
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    write_into_rootfs(root, "root/.ssh/authorized_keys", authorized_key + "\n", 0o600)

    # The image's keys are shared by every VPS built from it; each VPS gets its own instead.
    for old_key in rootfs_path(root, "etc/ssh/ssh_host_ed25519_key").parent.glob("ssh_host_*"):
        old_key.unlink()
    run_command(host_key_command(root, vps))
    write_into_rootfs(root, SSHD_DROPIN, render_sshd_dropin())
    return " ".join(rootfs_path(root, "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2])


def start_nspawn(vps: Vps, paths: SandboxPaths) -> int:
    """Boot the VPS in the background, in its own session, console to console.log; returns nspawn's pid."""
    vps_dir = paths.vps_dir(vps.name)
    with open(vps_dir / "console.log", "ab") as console:
        process = subprocess.Popen(nspawn_command(vps, vps_dir / "root", paths), stdin=subprocess.DEVNULL,
                                   stdout=console, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    return process.pid


def wait_until_booted(vps: Vps, pid: int, paths: SandboxPaths, deadline: float) -> str:
    """Wait for sshd, then for systemd to finish booting; returns "running" or "degraded"."""
    console_log = paths.vps_dir(vps.name) / "console.log"
    while not tcp_port_open(vps.address, timeout=0.5):
        if not process_is_alive(pid):
            raise SandboxError(f"{vps.name}: systemd-nspawn exited during boot: {tail(_read_tail(console_log), 3)}")
        if time.monotonic() > deadline:
            raise SandboxError(f"{vps.name}: sshd at {vps.address}:22 did not answer within {BOOT_TIMEOUT} s; see {console_log}")
        time.sleep(0.2)
    remaining = max(5.0, deadline - time.monotonic())
    try:
        # is-system-running exits 1 for "degraded", which is still a booted, usable system.
        system_state = run_command(boot_wait_command(paths, vps), timeout=remaining, ok_exit_codes=(0, 1)).strip()
    except SandboxError as error:
        raise SandboxError(f"{vps.name}: systemd did not finish booting: {error.message}; see {console_log}") from None
    if system_state not in ("running", "degraded"):
        raise SandboxError(f"{vps.name}: system state {system_state or 'unknown'!r} after boot; see {console_log}")
    return system_state


def create_vps(vps: Vps, paths: SandboxPaths, authorized_key: str, release: str = DEFAULT_RELEASE) -> dict:
    """Bring up one VPS's network, overlay and files on Debian `release`, and start its nspawn; returns its state entry."""
    for argv in network_up_commands(vps):
        run_command(argv)
    vps_dir = paths.vps_dir(vps.name)
    host_key = prepare_rootfs(vps, paths, authorized_key, release)
    pid = start_nspawn(vps, paths)
    return {
        "name": vps.name,
        "index": vps.index,
        "release": release,
        "address": vps.address,
        "gateway": vps.gateway,
        "netns": vps.netns,
        "veth": vps.host_link,
        "pid": pid,
        "rootfs": {
            "lower": str(paths.image(release)),
            "upper": str(vps_dir / "upper"),
            "work": str(vps_dir / "work"),
            "root": str(vps_dir / "root"),
        },
        "console_log": str(vps_dir / "console.log"),
        "host_key": host_key,
        "authorized_key": authorized_key,
        "started_at": time.time(),
    }


def describe_creation(vps: Vps, paths: SandboxPaths, release: str) -> list[str]:
    """What creating `vps` on Debian `release` would do, one line each, for `--check`."""
    root = paths.vps_dir(vps.name) / "root"
    vps_dir = paths.vps_dir(vps.name)
    lines = [shlex.join(argv) for argv in network_up_commands(vps)]
    lines.append(f"ln {paths.release_apt_archives(release)}/*.deb {vps_dir}/upper/{APT_ARCHIVES_IN_VPS}/")
    lines.append(shlex.join(overlay_mount_command(paths.image(release), vps_dir / "upper", vps_dir / "work", root)))
    lines.append(f"write {root}/etc/{{hostname,hosts,machine-id,resolv.conf}}, root's authorized_keys, {SSHD_DROPIN}")
    lines.append(f"rm {root}/etc/ssh/ssh_host_*")
    lines.append(shlex.join(host_key_command(root, vps)))
    lines.append(shlex.join(nspawn_command(vps, root, paths)) + f" >{vps_dir}/console.log 2>&1 &")
    return lines


def write_inventory(paths: SandboxPaths, hosts: dict[str, dict]) -> list[Path]:
    """Regenerate inventory/sandbox.yml and sandbox.known_hosts from the hosts; returns the files that changed."""
    ordered = sorted(hosts.values(), key=lambda host: host["index"])
    changed = []
    if write_if_changed(paths.known_hosts_file, render_known_hosts(ordered), 0o644):
        changed.append(paths.known_hosts_file)
    if write_if_changed(paths.inventory_file, render_inventory(ordered, paths), 0o644):
        changed.append(paths.inventory_file)
    hand_to_repo_owner(paths, *changed)
    return changed


# ---------------------------------------------------------------------------
# The three operations the tasks call


@dataclass
class UpResult:
    """What `up` did (or, with check, would do)."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    system_states: dict[str, str] = field(default_factory=dict)
    inventory_changed: list[str] = field(default_factory=list)
    image: str = ""
    planned: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    hosts: list[dict] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.cleaned or self.inventory_changed or self.image not in ("", "cached"))


def up(hosts: int = 2, check: bool = False, paths: SandboxPaths = SandboxPaths(), echo: Echo = lambda line: None,
       debian: Iterable[str] = ()) -> UpResult:
    """Make sure vps1..vpsN run on the asked Debian releases, removing stale leftovers first; change nothing when they already do.

    hosts: how many VPSes to have at least; healthy extra ones keep running.
    check: only plan: read facts and return the commands in `planned`, change nothing.
    echo: receives one line per step, for progress.
    debian: `--debian` flags (see parse_release_flags); a running host on another release is replaced.
    Example: up(hosts=2, debian=["vps2:12"], echo=print).created == ["vps1", "vps2"]
    """
    started = time.monotonic()
    releases = parse_release_flags(debian, hosts)
    tools = dict(REQUIRED_TOOLS)
    if not all(paths.image(release).is_dir() for release in set(releases.values())):
        tools.update(IMAGE_BUILD_TOOLS)
    check_preconditions("sandbox.up", tools)
    result = UpResult()
    with (_no_lock() if check else SandboxLock(paths)):
        # The key comes first: a VPS that authorizes a key we no longer have is not usable, so not healthy.
        if check:
            authorized_key = paths.public_key.read_text().strip() if paths.public_key.exists() else None
        else:
            authorized_key = ensure_client_key(paths, echo)
        facts = gather_facts(paths)
        healthy = healthy_hosts(facts, authorized_key)
        running = {name: host.get("release", DEFAULT_RELEASE) for name, host in facts.state.items()}
        host_plan = plan_hosts(hosts, healthy, releases, running)
        result.kept, result.extra, result.replaced = host_plan.keep, host_plan.extra, host_plan.replace
        healthy -= set(host_plan.replace)
        cleanup = plan_cleanup(facts, paths, keep=healthy, desired_rules=desired_iptables_rules(uplink_device()))
        result.cleaned = cleanup.describe(paths)
        result.timings.record("inspect", started)
        if check:
            result.planned = describe_up(paths, cleanup, host_plan)
            result.created = [vps.name for vps in host_plan.create]
            return result

        phase = time.monotonic()
        outcomes = [ensure_image(paths, release, echo) for release in sorted(set(host_plan.releases.values()))]
        result.image = next((outcome for outcome in outcomes if outcome != "cached"), "cached" if outcomes else "")
        result.timings.record("image", phase)

        phase = time.monotonic()
        if host_plan.replace:
            echo(f"replacing {', '.join(host_plan.replace)}: running another Debian release than asked")
        elif cleanup.hosts:
            echo(f"removing leftovers of an earlier run: {', '.join(cleanup.hosts)}")
        apply_cleanup(cleanup, paths, echo)
        result.timings.record("cleanup", phase)

        state = {name: host for name, host in load_state(paths).items() if name in healthy}
        if host_plan.create:
            start_hosts(host_plan, state, authorized_key, paths, echo, result)
        else:
            result.inventory_changed = [str(path) for path in write_inventory(paths, state)]
        for name in host_plan.keep:
            if not tcp_port_open(state[name]["address"], timeout=3):
                echo(f"warning: {name} runs but its sshd does not answer; `invoke sandbox.down` then `up` recreates it")
        result.hosts = sandbox_hosts(paths)
    result.timings.record("total", started)
    return result


def describe_up(paths: SandboxPaths, cleanup: CleanupPlan, host_plan: UpPlan) -> list[str]:
    """What `up` would do, one line per step, for `--check`."""
    planned = []
    if not paths.private_key.exists():
        planned.append(shlex.join(client_key_command(paths.private_key)))
    for release in sorted(set(host_plan.releases.values())):
        if not paths.image(release).is_dir():
            planned.append(shlex.join(image_build_command(paths.image_partial(release), release)))
    planned += cleanup.describe(paths)
    if host_plan.create and IP_FORWARD.read_text().strip() != "1":
        planned.append("echo 1 > /proc/sys/net/ipv4/ip_forward")
    for vps in host_plan.create:
        planned += describe_creation(vps, paths, host_plan.releases[vps.name])
    return planned


def start_hosts(host_plan: UpPlan, state: dict[str, dict], authorized_key: str, paths: SandboxPaths,
                echo: Echo, result: UpResult) -> None:
    """Create and boot the plan's new hosts, recording each in `state` (and state.json) as soon as it starts."""
    phase = time.monotonic()
    create = host_plan.create
    ensure_ip_forward(paths)
    for vps in create:
        release = host_plan.releases[vps.name]
        paths.release_apt_archives(release).mkdir(parents=True, exist_ok=True)
        echo(f"{vps.name}: starting Debian {release} at {vps.address}")
        state[vps.name] = create_vps(vps, paths, authorized_key, release)
        # Saved at once, so a run killed from here on leaves state that `down` can follow.
        save_state(paths, state)
    hand_to_repo_owner(paths, paths.state_file)
    # The boot wait logs in over ssh, which needs the new host keys pinned first.
    result.inventory_changed = [str(path) for path in write_inventory(paths, state)]
    result.timings.record("start", phase)

    phase = time.monotonic()
    deadline = time.monotonic() + BOOT_TIMEOUT
    for vps in create:
        result.system_states[vps.name] = wait_until_booted(vps, state[vps.name]["pid"], paths, deadline)
        echo(f"{vps.name}: {result.system_states[vps.name]}")
    result.timings.record("boot", phase)
    result.created = [vps.name for vps in create]


@dataclass
class DownResult:
    """What `down` removed (or, with check, would remove)."""

    removed: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.files)


def down(check: bool = False, paths: SandboxPaths = SandboxPaths(), echo: Echo = lambda line: None) -> DownResult:
    """Stop every sandbox VPS and remove all it made on this machine; keep the key pair and image cache.

    check: only plan: return the commands in `planned`, change nothing.
    Example: down(echo=print).stopped == ["vps1", "vps2"]
    """
    started = time.monotonic()
    check_preconditions("sandbox.down", TEARDOWN_TOOLS, need_overlay=False)
    result = DownResult()
    with (_no_lock() if check else SandboxLock(paths)):
        facts = gather_facts(paths)
        plan = plan_cleanup(facts, paths, keep=set(), desired_rules=[])
        result.removed = plan.describe(paths)
        result.hosts = plan.hosts
        result.stopped = sorted(plan.stop, key=lambda name: host_name_index(name) or 0)
        generated = [paths.inventory_file, paths.known_hosts_file, paths.state_file]
        result.files = [str(path) for path in generated if path.exists()]
        if check:
            result.planned = result.removed + [f"rm {path}" for path in result.files]
            return result
        apply_cleanup(plan, paths, echo)
        for path in generated:
            path.unlink(missing_ok=True)
        if restore_ip_forward(paths):
            echo("restored net.ipv4.ip_forward=0, as it was before sandbox.up")
    result.timings.record("total", started)
    return result


@dataclass
class HostStatus:
    """One row of `status`."""

    name: str
    address: str
    pid: Optional[int]
    running: bool
    sshd: bool
    release: str = DEFAULT_RELEASE


def status(paths: SandboxPaths = SandboxPaths()) -> list[HostStatus]:
    """Each recorded host with whether its nspawn runs and its sshd answers; needs no root.

    Example: all(host.sshd for host in status())
    """
    live = {}
    for process in list_processes():
        machine = nspawn_machine_of(process.argv, paths.netns_dir)
        if machine:
            live[machine] = process.pid
    rows = []
    for host in sorted(load_state(paths).values(), key=lambda host: host["index"]):
        pid = host.get("pid")
        running = live.get(host["name"]) == pid and pid is not None
        rows.append(HostStatus(host["name"], host["address"], pid, running, tcp_port_open(host["address"]),
                               host.get("release", DEFAULT_RELEASE)))
    return rows


def ssh_argv(name: str, command: Optional[str] = None, paths: SandboxPaths = SandboxPaths()) -> list[str]:
    """The interactive ssh command for sandbox host `name` (command: run that instead of a shell).

    Example: ssh_argv("vps1", "uptime")
    """
    Vps.from_name(name)
    hosts = {host["name"]: host for host in sandbox_hosts(paths)}
    if name not in hosts:
        known = ", ".join(hosts) or "none; run `invoke sandbox.up`"
        raise SandboxError(f"no sandbox host {name!r} (hosts: {known})")
    if not paths.private_key.exists() or not paths.known_hosts_file.exists():
        raise SandboxError(f"the sandbox key or {paths.known_hosts_file} is missing; run `invoke sandbox.up`")
    address = hosts[name]["address"]
    # Onboarded VPSes refuse root over SSH: log in as the deploy user once it exists.
    probe = subprocess.run(ssh_command(paths, address, ["true"], user="deploy"), capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=30)
    user = "deploy" if probe.returncode == 0 else "root"
    return ssh_command(paths, address, [command] if command else None, batch=False, user=user)


class _no_lock:
    """Stands in for SandboxLock in check mode, which changes nothing."""

    def __enter__(self) -> "_no_lock":
        return self

    def __exit__(self, *exc) -> None:
        return None
