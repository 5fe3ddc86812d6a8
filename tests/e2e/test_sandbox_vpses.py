"""The sandbox itself: idempotent up, leftovers of a killed run cleaned, ssh, status, down."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.support.sandbox_hosts import REPO, invoke, ssh
from vigil.core.yaml_loader import load_yaml
from vigil.sandbox.cgroups import vps_cgroups
from vigil.sandbox.facts import process_is_alive
from vigil.sandbox.paths import SandboxPaths

STATE = REPO / ".vigil" / "sandbox" / "state.json"
VPS_BASE = SandboxPaths().vps_base
KNOWN_HOSTS = REPO / "inventory" / "sandbox.known_hosts"
# Its last test takes every VPS down: it waits for the modules that run beside the session (scripts/test).
pytestmark = pytest.mark.usefixtures("apart_stream_done")


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def sandbox_objects() -> dict:
    """Everything vigil's sandbox can leave on this machine, as the machine reports it."""
    return {
        "netns": sorted(
            line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.startswith("vigil-")
        ),
        "links": sorted(name for name in sh("ip", "-o", "link").split() if name.startswith(("vgl-", "vgv-"))),
        "rules": sorted(
            line
            for table in ("filter", "nat")
            for line in sh("iptables", "-w", "-t", table, "-S").splitlines()
            if "vigil-sandbox" in line
        ),
        "mounts": sorted(line.split()[1] for line in open("/proc/mounts") if "/var/lib/vigil/sandbox" in line),
        "cgroups": sorted(str(cgroup) for name in ("vps1", "vps2") for cgroup in vps_cgroups(name) if cgroup.exists()),
    }


def booted_pids() -> dict:
    return {host["name"]: host["pid"] for host in json.loads(STATE.read_text())["hosts"]}


def test_up_when_up_changes_nothing_and_keeps_what_known_hosts_pins(sandbox):
    before, sshd_before = booted_pids(), sandbox.ssh("vps1", "systemctl show -p MainPID --value ssh")
    # What an operator adds by hand (`provision.trust` after a key rotation) is theirs, not up's.
    pinned = KNOWN_HOSTS.read_text()
    KNOWN_HOSTS.write_text("# vps2 re-pinned by hand on 12-01\n" + pinned)
    try:
        run = invoke("sandbox.up", "--hosts=2")
        assert run.code == 0 and "nothing changed" in run.stdout, run.stdout + run.stderr
        assert KNOWN_HOSTS.read_text() == "# vps2 re-pinned by hand on 12-01\n" + pinned
    finally:
        KNOWN_HOSTS.write_text(pinned)
    assert booted_pids() == before
    assert sandbox.ssh("vps1", "systemctl show -p MainPID --value ssh") == sshd_before


def test_each_vps_is_a_real_systemd_debian_13_with_its_own_address(sandbox):
    for name, address in sandbox.addresses.items():
        assert sandbox.ssh(name, "systemctl is-system-running --wait || true").strip() in ("running", "degraded")
        assert sandbox.ssh(name, ". /etc/os-release; echo $VERSION_CODENAME").strip() == "trixie"
        assert sandbox.ssh(name, "hostname").strip() == name
        assert address in sandbox.ssh(name, "ip -o -4 addr show")
        # The image is stamped up to date, as a provider's is: no first-boot ldconfig racing the other VPSes' boots.
        assert sandbox.ssh(name, "systemctl show -p ConditionResult --value ldconfig.service").strip() == "no"


def test_the_same_unit_on_two_vpses_is_two_cgroups_and_each_stops_on_its_own(sandbox):
    """As on two real servers: a unit's cgroup on vps1 holds vps1's processes alone, so stopping it waits for
    nothing of vps2's (when every VPS shared one cgroup tree, a stop on one waited on the other's processes,
    listed to it as pid 0: vigil-sandbox/NAME, vigil/sandbox/cgroups.py)."""
    unit = "vigil-test-twin.service"
    procs = (f'cat "$(findmnt -n -t cgroup2 -o TARGET | head -n 1)'
             f'$(systemctl show -p ControlGroup --value {unit})/cgroup.procs"')
    try:
        for name in ("vps2", "vps1"):
            sandbox.ssh(name, f"systemd-run --quiet --unit={unit} --property=RuntimeMaxSec=300 sleep 600")
        main = sandbox.ssh("vps1", f"systemctl show -p MainPID --value {unit}").strip()
        assert sandbox.ssh("vps1", procs).split() == [main]
        sandbox.ssh("vps1", f"timeout 60 systemctl stop {unit}")
        assert sandbox.ssh("vps2", f"systemctl is-active {unit}").strip() == "active"
    finally:
        for name in ("vps1", "vps2"):
            sandbox.ssh(name, f"systemctl stop {unit}", check=False)


def test_leftovers_of_a_killed_run_are_removed_and_running_vpses_kept(sandbox):
    # What a run killed half-way leaves: a namespace, a veth pair and a NAT rule nobody owns.
    sh("ip", "netns", "add", "vigil-vps9")
    sh("ip", "link", "add", "vgl-vps9", "type", "veth", "peer", "name", "vgv-vps9")
    sh("iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", "10.213.9.0/30", "-o", "lo",
       "-m", "comment", "--comment", "vigil-sandbox", "-j", "MASQUERADE")
    before = booted_pids()

    run = invoke("sandbox.up", "--hosts=2")

    assert run.code == 0, run.stderr
    objects = sandbox_objects()
    assert "vigil-vps9" not in objects["netns"] and {"vigil-vps1", "vigil-vps2"} <= set(objects["netns"])
    assert "vgl-vps9" not in " ".join(objects["links"]) and "vgv-vps9" not in " ".join(objects["links"])
    assert not any("10.213.9.0/30" in rule for rule in objects["rules"])
    assert booted_pids() == before


def test_sandbox_ssh_runs_a_command_on_the_vps(sandbox):
    run = invoke("sandbox.ssh", "vps2", "--command=hostname")
    assert run.code == 0 and run.stdout.strip() == "vps2"
    unknown = invoke("sandbox.ssh", "vps7", "--command=true")
    assert unknown.code != 0 and "no sandbox host 'vps7'" in unknown.stderr


def test_status_lists_every_vps_with_its_address(sandbox):
    run = invoke("sandbox.status")
    assert run.code == 0
    for name, address in sandbox.addresses.items():
        assert name in run.stdout and address in run.stdout


def test_vpses_booted_apart_are_listed_alone_and_outlive_the_other_inventorys_up_and_down(sandbox, tmp_path):
    apart = tmp_path / "trial"
    started = invoke("sandbox.up", "--hosts=vps20-vps21", f"--inventory={apart}")
    assert started.code == 0, started.stderr
    try:
        listed = load_yaml(apart / "sandbox.yml")
        assert list(listed["hosts"]) == ["vps20", "vps21"] and listed["groups"]["db"] == {"hosts": ["vps20"]}
        assert not {"vps20", "vps21"} & set(load_yaml(REPO / "inventory" / "sandbox.yml")["hosts"])
        assert ssh(listed["hosts"]["vps20"]["address"], "hostname").strip() == "vps20"
        # Powered off, vps21 is still out of the session inventory's reach: its up neither refuses nor wipes it.
        assert invoke("sandbox.poweroff", "vps21").code == 0
        before = booted_pids()
        again = invoke("sandbox.up", "--hosts=2")
        assert again.code == 0 and "nothing changed" in again.stdout, again.stdout + again.stderr
        assert booted_pids() == before and (VPS_BASE / "vps21" / "upper" / "etc" / "hostname").is_file()
        # A VPS is listed in one inventory only.
        refused = invoke("sandbox.up", "--hosts=vps20")
        assert refused.code != 0 and f"vps20 is listed in {apart}/sandbox.yml" in refused.stderr
        # Its own down removes it alone, powered off or not; the session's VPSes and network stay.
        assert invoke("sandbox.down", f"--inventory={apart}").code == 0
        objects = sandbox_objects()
        assert not {"vigil-vps20", "vigil-vps21"} & set(objects["netns"]) and objects["rules"]
        assert not (VPS_BASE / "vps21").exists() and not (apart / "sandbox.yml").exists()
        assert set(booted_pids()) == set(before) - {"vps20", "vps21"}
        assert sandbox.ssh("vps1", "hostname").strip() == "vps1"
    finally:
        invoke("sandbox.down", f"--inventory={apart}")


def power_off(pid: int, timeout: float = 60) -> None:
    """What `machinectl poweroff` does to an nspawn VPS: SIGTERM, and systemd inside shuts down."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_is_alive(pid):
        assert time.monotonic() < deadline, f"nspawn {pid} still runs {timeout} s after SIGTERM"
        time.sleep(0.5)


def test_down_removes_everything_then_up_restores(sandbox):
    # First, vps2 powered off, as a reboot of this machine leaves it: up refuses to wipe its disk.
    pids = booted_pids()
    power_off(pids["vps2"])
    refused = invoke("sandbox.up", "--hosts=2")
    assert refused.code != 0 and "vps2 is stopped" in refused.stderr and "--replace=vps2" in refused.stderr
    assert booted_pids() == pids and (VPS_BASE / "vps2" / "upper" / "etc" / "hostname").is_file()
    assert sandbox.ssh("vps1", "hostname").strip() == "vps1"

    assert invoke("sandbox.down").code == 0
    assert sandbox_objects() == {"netns": [], "links": [], "rules": [], "mounts": [], "cgroups": []}
    assert not (REPO / "inventory" / "sandbox.yml").exists() and not STATE.exists()
    assert "nothing" in invoke("sandbox.down").stdout.lower()

    # Leave the session's sandbox as the other tests expect it: up and onboarded. On the way,
    # --check on these fresh VPSes lists the whole plan and leaves them exactly as they are.
    assert invoke("sandbox.up", "--hosts=2").code == 0
    untouched = "getent passwd deploy || echo no-deploy; test -e /etc/nginx && echo nginx || echo no-nginx; " \
                "sha256sum /etc/ssh/sshd_config /etc/motd"
    before = {name: sandbox.ssh(name, untouched) for name in ("vps1", "vps2")}
    planned = invoke("provision.server", "--json", "--check", "--limit=vps1,vps2")
    assert planned.code == 0, planned.stderr
    assert all(planned.host(name)["changed"] >= 15 for name in ("vps1", "vps2"))
    assert {name: sandbox.ssh(name, untouched) for name in ("vps1", "vps2")} == before
    assert "no-deploy" in before["vps1"] and "no-nginx" in before["vps1"]
    assert invoke("provision.server", "--limit=vps1,vps2").code == 0
