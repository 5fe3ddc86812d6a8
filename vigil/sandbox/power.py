"""A sandbox VPS's power button: `poweroff` shuts it down as a provider's console does (systemd inside
stops every service, then the machine is gone from the network), `poweron` boots it again on the disk it
had. The faults the monitoring tests inject: a host that dies, and comes back."""

from __future__ import annotations

import os
import signal
import time

from vigil.sandbox.apply import save_state, start_nspawn, wait_until_booted
from vigil.sandbox.facts import check_preconditions, load_state, process_is_alive
from vigil.sandbox.local_commands import run_command
from vigil.sandbox.lock import SandboxLock
from vigil.sandbox.paths import BOOT_TIMEOUT, REQUIRED_TOOLS, SandboxError, SandboxPaths, Vps, vps_release
from vigil.sandbox.plan import overlay_mount_command

# systemd inside stops every unit before the machine ends; a VPS that takes longer is killed.
POWEROFF_TIMEOUT = 60


def _recorded(name: str, paths: SandboxPaths) -> tuple[Vps, dict, dict]:
    vps = Vps.from_name(name)
    state = load_state(paths)
    if name not in state:
        known = ", ".join(state) or "none; run `invoke sandbox.up`"
        raise SandboxError(f"{name} is not a sandbox VPS here (recorded: {known})")
    return vps, state, state[name]


def poweroff(name: str, paths: SandboxPaths = SandboxPaths(), hard: bool = False) -> bool:
    """Shut VPS `name` down cleanly (SIGTERM to its systemd-nspawn: systemd inside powers off); with `hard`,
    cut its power: the container's init is killed, and with it every process of the VPS at once, none
    shutting down (a leader keeps its lock until it expires). False when it was already off.

    Example: poweroff("vps2", hard=True)
    """
    check_preconditions("sandbox.poweroff", REQUIRED_TOOLS, need_overlay=False)
    with SandboxLock(paths):
        _, _, host = _recorded(name, paths)
        pid = host.get("pid")
        if not pid or not process_is_alive(pid):
            return False
        if hard:
            # The container's init is nspawn's child; a PID namespace's processes all die with its init.
            for child in children_of(pid):
                os.kill(child, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + POWEROFF_TIMEOUT
        while process_is_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise SandboxError(f"{name} did not power off within {POWEROFF_TIMEOUT} s; it was killed")
            time.sleep(0.2)
        return True


def children_of(pid: int) -> list[int]:
    """The process ids whose parent is `pid` (from /proc)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children += [int(child) for child in listed.read().split()]
        except OSError:
            continue  # the task ended meanwhile
    return children


def poweron(name: str, paths: SandboxPaths = SandboxPaths()) -> str:
    """Boot VPS `name` again on its own disk, network and host key; returns systemd's state after boot
    ("running" or "degraded"), or "already running".

    Example: poweron("vps2") == "running"
    """
    check_preconditions("sandbox.poweron", REQUIRED_TOOLS)
    with SandboxLock(paths):
        vps, state, host = _recorded(name, paths)
        if host.get("pid") and process_is_alive(host["pid"]):
            return "already running"
        vps_dir = paths.vps_dir(name)
        root = vps_dir / "root"
        if not (vps_dir / "upper").is_dir():
            raise SandboxError(f"{name}'s disk is gone ({vps_dir / 'upper'}); `invoke sandbox.up --replace={name}` "
                               "makes a fresh one")
        if not os.path.ismount(root):
            # A reboot of this machine unmounts it; the disk (the upper layer) is still there.
            run_command(overlay_mount_command(paths.image(vps_release(paths, name)), vps_dir / "upper",
                                              vps_dir / "work", root))
        host["pid"] = start_nspawn(vps, paths)
        host["started_at"] = time.time()
        save_state(paths, state)
        deadline = time.monotonic() + BOOT_TIMEOUT
        try:
            return wait_until_booted(vps, host["pid"], paths, deadline)
        except SandboxError as error:
            if "Permission denied" not in error.message:
                raise
        # Onboarded: root logins are off, the admin user asks instead.
        return wait_until_booted(vps, host["pid"], paths, deadline, onboarded=True)
