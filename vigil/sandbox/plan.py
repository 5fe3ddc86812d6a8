"""Pure planners: argv lists and rendered files, and what `up` and `down` must change. No I/O."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from vigil.sandbox.facts import SandboxFacts
from vigil.sandbox.paths import (
    DEBIAN_RELEASES,
    DEFAULT_RELEASE,
    HOST_LINK_PREFIX,
    IMAGE_PACKAGES,
    IPTABLES_COMMENT,
    NETNS_PREFIX,
    PEER_LINK_PREFIX,
    SANDBOX_NETWORK,
    SANDBOX_VARS,
    VPS_INTERFACE,
    IptablesRule,
    SandboxError,
    SandboxPaths,
    Vps,
    host_name_index,
    vps_release,
)
from vigil.sandbox.scope import SANDBOX_GROUPS, HostSelection, parse_hosts


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
    return [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(IMAGE_PACKAGES)}",
        DEBIAN_RELEASES[release],
        str(target),
    ]


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


# The admin user onboarding makes on sandbox VPSes (inventory/sandbox.yml's admin_user), which takes
# over from root, whose logins onboarding turns off.
ADMIN_USER = "ops"


def boot_wait_command(paths: SandboxPaths, vps: Vps, onboarded: bool = False) -> list[str]:
    """Ask the VPS's systemd to report once boot has finished (running or degraded); as the admin
    user through sudo on a VPS already onboarded."""
    # ssh hands the remote shell one string: the script travels quoted inside it.
    if onboarded:
        return ssh_command(paths, vps.address, [shlex.join(["sudo", "-n", "sh", "-c", BOOT_WAIT])], user=ADMIN_USER)
    return ssh_command(paths, vps.address, [shlex.join(["sh", "-c", BOOT_WAIT])])


def inventory_groups(hosts: list[dict]) -> dict[str, list[str]]:
    """Group -> its hosts, in order. Hosts given groups (`--group`) are in those alone; the others run the
    app (web), and the first of them the database too unless a host was put in db."""
    named = {host["name"]: host.get("groups") or [] for host in hosts}
    plain = [name for name, groups in named.items() if not groups]
    layout = {group: [name for name, groups in named.items() if group in groups] for group in SANDBOX_GROUPS}
    layout["web"] = plain + [name for name in layout["web"] if name not in plain]
    if not layout["db"]:
        layout["db"] = plain[:1]
    return {group: members for group, members in layout.items() if members}


def render_inventory(hosts: list[dict], paths: SandboxPaths, inventory_file: Optional[Path] = None) -> str:
    """inventory/sandbox.yml (or `inventory_file`, for hosts booted apart) for `hosts` (dicts with name,
    address and any `groups`, in order); by default web = all, db = the first (see inventory_groups)."""
    inventory_file = inventory_file or paths.inventory_file
    ssh_key = _path_from(paths, inventory_file, paths.private_key)
    # Each inventory's known_hosts sits beside it (write_inventory), as inventories name theirs.
    known_hosts = paths.known_hosts_file.name
    lines = [
        "# Generated by `invoke sandbox.up`; edits are overwritten.",
        f"known_hosts: {known_hosts}      # {_whence(known_hosts)}",
        "defaults:",
        "  user: deploy            # deploys log in as deploy; its sudo covers deploys only (roles/users)",
        f"  admin_user: {ADMIN_USER}         # provisioning logs in as {ADMIN_USER}, root through sudo (roles/users)",
        "  bootstrap_user: root    # until then: a fresh VPS knows only root",
        "  port: 22",
        f"  ssh_key: {ssh_key}   # {_whence(ssh_key)}",
        "vars:",
        *SANDBOX_VARS,
        f"  users_admin_authorized_keys: [{_public_key_line(paths)!r}]",
        f"  users_deploy_authorized_keys: [{_public_key_line(paths)!r}]",
        "groups:   # web: every host given no --group; db: the first of them, unless one was given db",
        *(f"  {group}: {{hosts: [{', '.join(members)}]}}" for group, members in inventory_groups(hosts).items()),
        "hosts:",
    ]
    # The control machine reaches each VPS from its gateway address: exempt it from the
    # firewall's SSH rate limit, as a real setup exempts its bastion or CI runner.
    lines += [f"  {host['name']}: {{address: {host['address']}, "
              f"vars: {{firewall_ssh_trusted_sources: [{Vps.from_name(host['name']).gateway}]}}}}" for host in hosts]
    return "\n".join(lines) + "\n"


def _path_from(paths: SandboxPaths, inventory_file: Path, path: Path) -> str:
    """`path` as the inventory file names it: relative inside the repository (the repository may move),
    absolute from an inventory elsewhere (a scratch directory)."""
    if inventory_file.resolve().is_relative_to(paths.repo.resolve()):
        return os.path.relpath(path, inventory_file.parent)
    return str(path.resolve())


def _whence(path: str) -> str:
    return "absolute: this inventory is outside the repository" if path.startswith("/") else "relative to this file"


def _public_key_line(paths: SandboxPaths) -> str:
    return paths.public_key.read_text().strip() if paths.public_key.exists() else ""


def render_known_hosts(hosts: list[dict], existing: str = "", fresh: Iterable[str] = ()) -> str:
    """known_hosts lines pinning each host's key (`host_key` is "ssh-ed25519 AAAA...") at its address.

    existing: the file as it is. What it pins for a host is kept (someone may have re-pinned it
    with `provision.trust` after rotating its keys), as are its comments; lines for addresses no
    host has any more go.
    fresh: names of hosts just created: their new key replaces whatever was pinned at their address.
    """
    fresh = set(fresh)
    addresses = {host["address"] for host in hosts}
    pinned: dict[str, list[str]] = {}
    comments = []
    for line in existing.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            comments.append(line)
            continue
        names = line.split(maxsplit=1)[0].split(",")
        for address in (name for name in names if name in addresses):
            pinned.setdefault(address, []).append(line)
            break
    lines = list(comments)
    for host in hosts:
        kept = pinned.get(host["address"])
        if kept and host["name"] not in fresh:
            lines += kept
            continue
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

    replace: hosts removed and created again: running another Debian release than asked, or named
    by `--replace`.
    releases: the Debian release of every host to create.
    reasons: why each host in `replace` is replaced, for the progress line.
    """

    create: list[Vps]
    keep: list[str]
    extra: list[str]
    replace: list[str] = field(default_factory=list)
    releases: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def plan_hosts(requested: int | str | HostSelection, healthy: set[str], releases: dict[str, str] | None = None,
               running: dict[str, str] | None = None, stopped: Iterable[str] = (),
               replace: Iterable[str] = ()) -> UpPlan:
    """Plan `up --hosts=requested` given the healthy hosts: create the missing selected ones, keep the rest.

    requested: a count N (vps1..vpsN) or a selection (see parse_hosts).
    healthy, running, stopped: of the hosts in the call's scope (scope.hosts_in_scope); hosts listed in
    another inventory are not passed, so nothing here touches them.
    releases: the Debian release each wanted host must run (default DEFAULT_RELEASE);
    running: the release each healthy host runs. A host on the wrong release is replaced.
    stopped: recorded hosts whose VPS is not running but whose disk is still there.
    replace: hosts the operator asked to replace (`--replace`), running or stopped.
    A stopped host is never replaced unless named in `replace`: its disk holds what was onboarded.
    """
    selection = parse_hosts(requested)
    releases = releases or {}
    running = running or {}
    asked = set(replace)
    for name in sorted(asked):
        # A stopped host beyond --hosts may be named too: it is removed, as extras that stopped are.
        if name not in selection and name not in set(stopped):
            raise SandboxError(f"--replace={name}: not one of {selection.describe()}")
    kept_stopped = sorted(set(stopped) - asked, key=lambda name: host_name_index(name) or 0)
    if kept_stopped:
        one = len(kept_stopped) == 1
        flags = " ".join(f"--replace={name}" for name in kept_stopped)
        # The command suggested keeps the stopped hosts in its selection, so they are replaced, not removed.
        beyond = [name for name in kept_stopped if name not in selection]
        if beyond and selection.counted:
            flags = f"--hosts={max(host_name_index(name) or 0 for name in beyond)} {flags}"
        elif beyond:
            flags = f"--hosts={selection.flag},{','.join(beyond)} {flags}"
        raise SandboxError(
            f"{', '.join(kept_stopped)} {'is' if one else 'are'} stopped, and "
            f"{'its disk keeps' if one else 'their disks keep'} what was onboarded and deployed: "
            f"`sudo invoke sandbox.up {flags}` replaces {'it' if one else 'them'} "
            "with a fresh VPS (a new host key, nothing onboarded); `sudo invoke sandbox.down` removes the whole sandbox"
        )
    wanted = [Vps.from_name(name) for name in selection.names]
    wanted_release = {vps.name: releases.get(vps.name, DEFAULT_RELEASE) for vps in wanted}
    replace_reasons = {
        vps.name: "running another Debian release than asked"
        for vps in wanted
        if vps.name in healthy and running.get(vps.name, DEFAULT_RELEASE) != wanted_release[vps.name]
    }
    for name in asked & (healthy | set(stopped)):
        replace_reasons.setdefault(name, "asked by --replace" if name in healthy else "stopped, and --replace asks to")
    usable = healthy - set(replace_reasons)
    by_index = sorted(usable, key=lambda name: host_name_index(name) or 0)
    create = [vps for vps in wanted if vps.name not in usable]
    return UpPlan(
        create=create,
        keep=[name for name in by_index if name in selection],
        extra=[name for name in by_index if name not in selection],
        replace=sorted(replace_reasons, key=lambda name: host_name_index(name) or 0),
        releases={vps.name: wanted_release[vps.name] for vps in create},
        reasons=replace_reasons,
    )
