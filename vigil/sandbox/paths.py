"""Where the sandbox lives: every name, address and path a VPS has, all derived from its index."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from vigil.core.errors import ExitCode, VigilError
from vigil.core.paths import REPO_ROOT

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
# The sandbox's certificate authority (vigil/sandbox/ca.py): named here, where naming it costs no import of
# the cryptography it is made with.
CA_DIR = REPO_ROOT / ".vigil" / "sandbox" / "ca"

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

# The sandbox inventory's vars: what makes a throwaway VPS quicker to test than a production host.
SANDBOX_VARS = (
    "  nginx_tls: local-ca   # HTTPS from the sandbox's own CA (.vigil/sandbox/ca/ca.crt)",
    "  app_watch_seconds: 5   # a shorter watch after each switch keeps sandbox iterations quick (default 30)",
    "  app_min_healthy_seconds: 5   # and a shorter stability gate (default 10)",
    "  app_health_timeout: 25   # the sample app is healthy in seconds here: a failing gate ends sooner (default 60)",
    "  pgbackrest_archive_timeout: 15   # WAL archived at least every 15 s with a backup host (default 60)",
    "  pgbackrest_archive_wait_seconds: 20   # WAL arrives in seconds here: report a stall sooner (default 60)",
    "  patroni_join_wait_seconds: 300   # members of this small database are up in seconds (default 1800)",
    "  # With a monitor host: alerts within about 40 s, resolved within a minute, a heartbeat every 20 s",
    "  # (defaults 15, 10, 15, 45, 180, 10, 120 and 60) so that the tests wait less.",
    "  monitoring_scrape_interval: 5",
    "  monitoring_scrape_timeout: 4",
    "  monitoring_evaluation_interval: 5",
    "  monitoring_down_for_seconds: 20",
    "  monitoring_boot_grace_seconds: 45",
    "  monitoring_group_wait_seconds: 5",
    "  monitoring_group_interval_seconds: 15",
    "  monitoring_heartbeat_seconds: 20",
)

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


class SandboxError(VigilError):
    """The sandbox cannot be brought up, down or inspected; the message says why in one line."""

    exit_code = ExitCode.HOST_FAILED


class SandboxUnsupported(SandboxError):
    """This machine cannot run sandbox VPSes: not Linux, not root, a tool or overlayfs missing."""

    exit_code = ExitCode.UNSUPPORTED


@dataclass(frozen=True)
class SandboxPaths:
    """Every path the sandbox reads or writes; tests swap in a temporary tree.

    repo: the repository root (parent of the vigil package).
    image_cache: holds the pristine image and its `.partial` while it is built.
    vps_base: per-VPS overlay directories, console logs and the lock.
    apt_archives: .debs shared by every VPS (hard-linked in at boot, collected back at teardown).
    netns_dir: where `ip netns` keeps its named namespaces.
    ip_forward: the kernel's IPv4 forwarding switch.
    Example: SandboxPaths(repo=tmp_path, vps_base=tmp_path / "vps")
    """

    repo: Path = REPO_ROOT
    image_cache: Path = Path("/var/cache/vigil/images")
    vps_base: Path = Path("/var/lib/vigil/sandbox")
    apt_archives: Path = Path("/var/cache/vigil/apt-archives")
    netns_dir: Path = Path("/run/netns")
    # The kernel's IPv4 forwarding switch: the VPSes reach the mirror through this machine.
    ip_forward: Path = Path("/proc/sys/net/ipv4/ip_forward")

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


def vps_release(paths: SandboxPaths, name: str) -> str:
    """The Debian release a VPS directory was made from (one made before releases were recorded ran 13)."""
    try:
        release = paths.vps_release_file(name).read_text().strip()
    except OSError:
        return DEFAULT_RELEASE
    return release if release in DEBIAN_RELEASES else DEFAULT_RELEASE


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
