"""The steps that change this machine: keys, the image, namespaces, overlays, VPS roots, nspawn, and
their removal. Each runs local commands through `run_command`."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from vigil.core.local_files import write_private
from vigil.sandbox.cgroups import SANDBOX_CGROUP, in_own_cgroups, remove_vps_cgroups
from vigil.sandbox.facts import (
    image_is_complete,
    is_image_builder,
    list_processes,
    load_state,
    mounts_under,
    parse_pid_list,
    process_is_alive,
    tcp_port_open,
)
from vigil.sandbox.local_commands import read_tail, run_command, tail
from vigil.sandbox.paths import (
    BOOT_TIMEOUT,
    DEBIAN_RELEASES,
    DEFAULT_RELEASE,
    IMAGE_BUILD_TIMEOUT,
    NSPAWN_PROPAGATE_DIR,
    SSHD_DROPIN,
    STOP_TIMEOUT,
    SandboxError,
    SandboxPaths,
    Vps,
    vps_release,
)
from vigil.sandbox.plan import (
    CleanupPlan,
    boot_wait_command,
    client_key_command,
    host_key_command,
    image_build_command,
    network_up_commands,
    nspawn_command,
    overlay_mount_command,
    render_etc_hosts,
    render_inventory,
    render_known_hosts,
    render_sshd_dropin,
)
from vigil.sandbox.rootfs import mark_first_boot_done, rootfs_path, trust_local_cas, write_into_rootfs
from vigil.sandbox.scope import inventory_file_of

Echo = Callable[[str], None]


def save_state(paths: SandboxPaths, hosts: dict[str, dict]) -> None:
    """Write state.json atomically (temp file then rename), hosts in index order."""
    ordered = sorted(hosts.values(), key=lambda host: host["index"])
    write_private(paths.state_file, json.dumps({"version": 1, "hosts": ordered}, indent=2) + "\n", 0o644)


def write_if_changed(path: Path, content: str, mode: int) -> bool:
    """Write `path` only when its content differs; True when it wrote."""
    try:
        if path.read_text() == content:
            return False
    except OSError:
        pass
    write_private(path, content, mode)
    return True


def hand_to_repo_owner(paths: SandboxPaths, *targets: Path) -> None:
    """Give files under the repo to the repo's owner, so `sudo invoke sandbox.up` leaves a key others can use."""
    owner = paths.repo.stat()
    if os.geteuid() != 0 or owner.st_uid == 0:
        return
    for target in targets:
        if target.exists():
            os.chown(target, owner.st_uid, owner.st_gid)


@dataclass
class Timings:
    """Seconds spent in each phase of a run, for the task to print."""

    phases: dict[str, float] = field(default_factory=dict)

    def record(self, phase: str, started: float) -> None:
        self.phases[phase] = round(time.monotonic() - started, 2)


def ensure_client_key(paths: SandboxPaths, echo: Echo) -> str:
    """Create the sandbox key pair if absent; return the public key line."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.state_dir, 0o700)
    if not paths.private_key.exists():
        paths.public_key.unlink(missing_ok=True)
        run_command(client_key_command(paths.private_key))
        echo(f"generated the sandbox key {paths.private_key}")
    elif not paths.public_key.exists():
        write_private(paths.public_key, run_command(["ssh-keygen", "-y", "-f", str(paths.private_key)]), 0o644)
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
    echo(
        f"building the Debian {release} ({DEBIAN_RELEASES[release]}) image with debootstrap "
        f"(about 75 s; log: {build_log}) ..."
    )
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
        remove_vps_cgroups(name)
    if plan.forget:
        hosts = load_state(paths)
        for name in plan.forget:
            hosts.pop(name, None)
        if hosts:
            save_state(paths, hosts)
        else:
            paths.state_file.unlink(missing_ok=True)


def ensure_ip_forward(paths: SandboxPaths) -> bool:
    """Turn on IPv4 forwarding if it is off, noting that `down` must turn it off again; True when it changed."""
    if paths.ip_forward.read_text().strip() == "1":
        return False
    paths.vps_base.mkdir(parents=True, exist_ok=True)
    paths.ip_forward_marker.write_text("0\n")
    paths.ip_forward.write_text("1\n")
    return True


def restore_ip_forward(paths: SandboxPaths) -> bool:
    """Put IPv4 forwarding back as `up` found it, if `up` was the one to turn it on."""
    if not paths.ip_forward_marker.exists():
        return False
    paths.ip_forward.write_text(paths.ip_forward_marker.read_text())
    paths.ip_forward_marker.unlink()
    return True


def prepare_rootfs(vps: Vps, paths: SandboxPaths, authorized_key: str, release: str) -> str:
    """Mount the VPS's overlay on the `release` image and write what makes it this VPS.

    Returns the VPS's new host public key.
    """
    vps_dir = paths.vps_dir(vps.name)
    upper, work, root = vps_dir / "upper", vps_dir / "work", vps_dir / "root"
    for directory in (upper, work, root):
        directory.mkdir(parents=True, exist_ok=True)
    paths.vps_release_file(vps.name).write_text(release + "\n")
    seed_apt_archives(paths.release_apt_archives(release), upper, paths.image(release))
    run_command(overlay_mount_command(paths.image(release), upper, work, root))

    write_into_rootfs(root, "etc/hostname", f"{vps.name}\n")
    mark_first_boot_done(root)
    hosts_file = rootfs_path(root, "etc/hosts")
    write_into_rootfs(
        root, "etc/hosts", render_etc_hosts(hosts_file.read_text() if hosts_file.is_file() else "", vps.name)
    )
    # A machine id per VPS, as a real server has; sharing the image's would confuse journald and DHCP.
    write_into_rootfs(root, "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    write_into_rootfs(root, "etc/resolv.conf", Path("/etc/resolv.conf").read_text())
    trust_local_cas(root)
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
        process = subprocess.Popen(in_own_cgroups(vps.name, nspawn_command(vps, vps_dir / "root", paths)),
                                   stdin=subprocess.DEVNULL,
                                   stdout=console, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    return process.pid


def wait_until_booted(vps: Vps, pid: int, paths: SandboxPaths, deadline: float, onboarded: bool = False) -> str:
    """Wait for sshd, then for systemd to finish booting; returns "running" or "degraded".

    onboarded: root cannot log in any more; ask as the admin user, through sudo.
    """
    console_log = paths.vps_dir(vps.name) / "console.log"
    while not tcp_port_open(vps.address, timeout=0.5):
        if not process_is_alive(pid):
            raise SandboxError(f"{vps.name}: systemd-nspawn exited during boot: {tail(read_tail(console_log), 3)}")
        if time.monotonic() > deadline:
            raise SandboxError(
                f"{vps.name}: sshd at {vps.address}:22 did not answer within {BOOT_TIMEOUT} s; see {console_log}"
            )
        time.sleep(0.2)
    remaining = max(5.0, deadline - time.monotonic())
    try:
        # is-system-running exits 1 for "degraded", which is still a booted, usable system.
        system_state = run_command(boot_wait_command(paths, vps, onboarded), timeout=remaining,
                                   ok_exit_codes=(0, 1)).strip()
    except SandboxError as error:
        raise SandboxError(f"{vps.name}: systemd did not finish booting: {error.message}; see {console_log}") from None
    if system_state not in ("running", "degraded"):
        raise SandboxError(f"{vps.name}: system state {system_state or 'unknown'!r} after boot; see {console_log}")
    return system_state


def create_vps(vps: Vps, paths: SandboxPaths, authorized_key: str, release: str = DEFAULT_RELEASE) -> dict:
    """Bring up one VPS's network, overlay and files on Debian `release`, and start its nspawn.

    Returns the VPS's state entry.
    """
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
    lines.append(f"write {root}/etc/{{hostname,hosts,machine-id,resolv.conf}}, root's authorized_keys, {SSHD_DROPIN}, "
                 "this machine's local CAs")
    lines.append(f"rm {root}/etc/ssh/ssh_host_*")
    lines.append(shlex.join(host_key_command(root, vps)))
    lines.append(f"in cgroup {SANDBOX_CGROUP}/{vps.name}: " + shlex.join(nspawn_command(vps, root, paths))
                 + f" >{vps_dir}/console.log 2>&1 &")
    return lines


def write_inventory(paths: SandboxPaths, hosts: dict[str, dict], fresh: Iterable[str] = ()) -> list[Path]:
    """Regenerate sandbox.known_hosts (every host) and each inventory file from the hosts it lists:
    inventory/sandbox.yml, and DIR/sandbox.yml for hosts booted with `up --inventory=DIR`. Returns the
    files that changed.

    fresh: hosts just created, whose new key is pinned; the others keep what known_hosts pins for them.
    """
    ordered = sorted(hosts.values(), key=lambda host: host["index"])
    existing = paths.known_hosts_file.read_text() if paths.known_hosts_file.exists() else ""
    changed = []
    if write_if_changed(paths.known_hosts_file, render_known_hosts(ordered, existing, fresh), 0o644):
        changed.append(paths.known_hosts_file)
    homes = {None, *(host.get("inventory") for host in ordered)}
    for home in sorted(homes, key=lambda home: home or ""):
        listed = [host for host in ordered if host.get("inventory") == home]
        path = inventory_file_of(paths, home)
        if listed:
            path.parent.mkdir(parents=True, exist_ok=True)
            if home is not None:  # an inventory apart pins its own hosts beside it, as every inventory does
                known = path.with_name(paths.known_hosts_file.name)
                pinned = known.read_text() if known.exists() else ""
                if write_if_changed(known, render_known_hosts(listed, pinned, fresh), 0o644):
                    changed.append(known)
            if write_if_changed(path, render_inventory(listed, paths, path), 0o644):
                changed.append(path)
        elif path.exists():  # the repository's inventory, once every VPS left is listed elsewhere
            path.unlink()
            changed.append(path)
    hand_to_repo_owner(paths, *changed)
    return changed
