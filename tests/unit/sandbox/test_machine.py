"""Sandbox facts and steps on this machine: command output parsed, state and files on tmp_path, local
commands run, the preconditions named, and the tasks' exit codes.

No network and no root.
"""

import os
import re
from pathlib import Path

import invoke
import pytest

from tests.unit.sandbox.test_plan import FORWARD_IN, MASQUERADE_ETH0, TWO_HOSTS, _state
from vigil.cli import sandbox as tasks
from vigil.core.errors import ExitCode
from vigil.sandbox import facts as sandbox_facts
from vigil.sandbox import lifecycle
from vigil.sandbox.apply import (
    ensure_ip_forward,
    harvest_apt_archives,
    restore_ip_forward,
    save_state,
    seed_apt_archives,
    write_inventory,
)
from vigil.sandbox.facts import (
    SandboxFacts,
    check_preconditions,
    healthy_hosts,
    image_is_complete,
    is_image_builder,
    load_state,
    parse_default_route_device,
    parse_iptables_rules,
    parse_link_names,
    parse_mount_points,
    parse_netns_list,
    parse_pid_list,
    sandbox_hosts,
    stopped_hosts,
)
from vigil.sandbox.local_commands import run_command
from vigil.sandbox.paths import IMAGE_COMPLETE_MARKERS, REQUIRED_TOOLS, SandboxError, SandboxPaths, SandboxUnsupported
from vigil.sandbox.rootfs import UPDATE_STAMPS, mark_first_boot_done, write_into_rootfs

# --- fact parsers -----------------------------------------------------------


@pytest.mark.parametrize(
    "table, output, expected",
    [
        ("nat",
         ("-P PREROUTING ACCEPT\n-P POSTROUTING ACCEPT\n"
          "-A POSTROUTING -s 10.213.0.0/16 -o eth0 -m comment --comment vigil-sandbox -j MASQUERADE\n"
          "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n"),
         [MASQUERADE_ETH0]),
        # iptables-legacy quotes comments.
        ("filter",
         ('-P FORWARD DROP\n-A FORWARD -d 10.213.0.0/16 -m comment --comment "vigil-sandbox" -j ACCEPT\n'
          '-A FORWARD -m comment --comment "vigil-sandbox-other" -j ACCEPT\n'),
         [FORWARD_IN]),
        ("filter", "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n", []),
        ("filter", "", []),
    ],
)
def test_parse_iptables_rules(table, output, expected):
    assert parse_iptables_rules(table, output) == expected


@pytest.mark.parametrize(
    "output, expected",
    [
        ("vigil-vps2 (id: 1)\nvigil-vps1 (id: 0)\nother\n", ["vigil-vps2", "vigil-vps1", "other"]),
        ("vigil-vps9\n", ["vigil-vps9"]),
        ("", []),
    ],
)
def test_parse_netns_list(output, expected):
    assert parse_netns_list(output) == expected


IP_O_LINK = (
    "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default "
    "qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
    "4: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400 qdisc pfifo_fast state UP mode DEFAULT group default "
    "qlen 1000\\    link/ether 02:fc:00:00:00:01 brd ff:ff:ff:ff:ff:ff\n"
    "11: vgl-vps1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default "
    "qlen 1000\\    link/ether 3a:0e:2c:6b:75:51 brd ff:ff:ff:ff:ff:ff link-netns vigil-vps1\n"
    "20: vgv-vps9@vgl-vps9: <BROADCAST,MULTICAST,M-DOWN> mtu 1500 qdisc noop state DOWN mode DEFAULT group default "
    "qlen 1000\\    link/ether 86:5e:e0:40:38:56 brd ff:ff:ff:ff:ff:ff\n"
    "21: vgl-vps9@vgv-vps9: <BROADCAST,MULTICAST,M-DOWN> mtu 1500 qdisc noop state DOWN mode DEFAULT group default "
    "qlen 1000\\    link/ether 5e:b0:93:5c:57:0e brd ff:ff:ff:ff:ff:ff\n"
)


def test_parse_link_names():
    assert parse_link_names(IP_O_LINK) == ["lo", "eth0", "vgl-vps1", "vgv-vps9", "vgl-vps9"]


def test_parse_mount_points_decodes_escapes():
    mounts = (
        "/dev/vda / ext4 rw,relatime 0 0\n"
        "overlay /var/lib/vigil/sandbox/vps1/root overlay rw,lowerdir=/img,upperdir=/u,workdir=/w 0 0\n"
        "tmpfs /mnt/with\\040space tmpfs rw 0 0\n"
    )
    assert parse_mount_points(mounts) == ["/", "/var/lib/vigil/sandbox/vps1/root", "/mnt/with space"]


@pytest.mark.parametrize(
    "output, device",
    [
        ("default via 192.0.2.1 dev eth0 \n", "eth0"),
        ("default via 10.0.0.1 dev wlp2s0 proto dhcp src 10.0.0.5 metric 600\n", "wlp2s0"),
        ("default dev wg0 scope link\n", "wg0"),
        ("", None),
    ],
)
def test_parse_default_route_device(output, device):
    assert parse_default_route_device(output) == device


def test_parse_pid_list():
    assert parse_pid_list("15796\n15829\n\n") == [15796, 15829]


@pytest.mark.parametrize(
    "argv, cwd, builds",
    [
        (["/bin/sh", "/usr/sbin/debootstrap", "--variant=minbase", "trixie", "debian-trixie.partial"],
         "/var/cache/vigil/images", True),
        (["/bin/sh", "/usr/sbin/debootstrap", "trixie", "/var/cache/vigil/images/debian-trixie.partial"], "/", True),
        (["/bin/sh", "/usr/sbin/debootstrap", "trixie", "debian-trixie.partial"], "/tmp", False),
        (["/bin/sh", "/usr/sbin/debootstrap", "trixie", "/srv/other"], "/", False),
        (["rsync", "-a", "/var/cache/vigil/images/debian-trixie.partial"], "/", False),
    ],
)
def test_is_image_builder(argv, cwd, builds):
    partial = Path("/var/cache/vigil/images/debian-trixie.partial")
    assert is_image_builder(argv, cwd, partial) is builds


@pytest.mark.parametrize(
    "files, complete",
    [
        (IMAGE_COMPLETE_MARKERS, True),
        (IMAGE_COMPLETE_MARKERS + ("debootstrap/debootstrap.log",), False),
        (IMAGE_COMPLETE_MARKERS[:1], False),
        ((), False),
    ],
)
def test_image_is_complete(tmp_path, files, complete):
    for relative in files:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("")
    assert image_is_complete(tmp_path) is complete


# --- state and files --------------------------------------------------------


def test_state_round_trip_and_sandbox_hosts(tmp_path):
    paths = SandboxPaths(repo=tmp_path)
    assert sandbox_hosts(paths) == []
    save_state(paths, _state("vps2", "vps1", "vps10"))
    assert sandbox_hosts(paths) == [
        {"name": "vps1", "address": "10.213.1.2"},
        {"name": "vps2", "address": "10.213.2.2"},
        {"name": "vps10", "address": "10.213.10.2"},
    ]
    assert set(load_state(paths)) == {"vps1", "vps2", "vps10"}


def test_unreadable_state_names_the_file(tmp_path):
    paths = SandboxPaths(repo=tmp_path)
    paths.state_file.parent.mkdir(parents=True)
    paths.state_file.write_text("{not json")
    with pytest.raises(SandboxError, match="state.json: unreadable sandbox state"):
        sandbox_hosts(paths)


def test_write_inventory_writes_only_what_changed(tmp_path):
    paths = SandboxPaths(repo=tmp_path)
    hosts = {host["name"]: {**host, "index": int(host["name"][3:])} for host in TWO_HOSTS}
    assert write_inventory(paths, hosts) == [paths.known_hosts_file, paths.inventory_file]
    assert write_inventory(paths, hosts) == []
    assert paths.known_hosts_file.read_text().startswith("10.213.1.2 ssh-ed25519 AAAAone\n")
    # vps1 re-pinned by hand is kept; vps2 created again gets its new key pinned.
    paths.known_hosts_file.write_text("10.213.1.2 ssh-ed25519 AAAArepinned\n10.213.2.2 ssh-ed25519 AAAAold\n")
    assert write_inventory(paths, hosts, fresh=["vps2"]) == [paths.known_hosts_file]
    assert paths.known_hosts_file.read_text() == (
        "10.213.1.2 ssh-ed25519 AAAArepinned\n10.213.2.2 ssh-ed25519 AAAAtwo\n"
    )


def test_write_into_rootfs_replaces_a_symlink_without_following_it(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "host-resolv.conf"
    (root / "etc").mkdir(parents=True)
    outside.write_text("host file\n")
    (root / "etc/resolv.conf").symlink_to(outside)
    write_into_rootfs(root, "etc/resolv.conf", "nameserver 192.0.2.53\n")
    assert outside.read_text() == "host file\n"
    assert not (root / "etc/resolv.conf").is_symlink()
    assert (root / "etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"


def test_write_into_rootfs_refuses_a_symlinked_directory(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to(tmp_path)
    with pytest.raises(SandboxError, match="is a symlink"):
        write_into_rootfs(root, "etc/hostname", "vps1\n")
    assert not (tmp_path / "hostname").exists()


def test_write_into_rootfs_sets_the_mode(tmp_path):
    write_into_rootfs(tmp_path, "root/.ssh/authorized_keys", "ssh-ed25519 AAAA vigil-sandbox\n", 0o600)
    assert ((tmp_path / "root/.ssh/authorized_keys").stat().st_mode & 0o777) == 0o600


def test_the_first_boot_stamps_carry_the_images_usr_time_so_the_update_units_are_skipped(tmp_path):
    (tmp_path / "usr").mkdir()
    (tmp_path / "etc").mkdir()
    os.utime(tmp_path / "usr", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    mark_first_boot_done(tmp_path)
    for relative in UPDATE_STAMPS:
        stamp = tmp_path / relative
        assert stamp.read_text() == "TIMESTAMP_NSEC=1700000000123456789\n"
        assert stamp.stat().st_mtime_ns == 1_700_000_000_123_456_789


def test_apt_archives_are_seeded_and_harvested_by_hard_links(tmp_path):
    shared, lower, upper = tmp_path / "shared", tmp_path / "lower", tmp_path / "upper"
    (lower / "var/cache/apt/archives").mkdir(parents=True)
    shared.mkdir()
    upper.mkdir()
    (shared / "hello_1_amd64.deb").write_text("deb")
    assert seed_apt_archives(shared, upper, lower) == 1
    archives = upper / "var/cache/apt/archives"
    assert (archives / "hello_1_amd64.deb").samefile(shared / "hello_1_amd64.deb")
    (archives / "nginx_1_amd64.deb").write_text("downloaded in the VPS")
    (archives / "lock").write_text("")
    assert harvest_apt_archives(upper, shared) == 1
    assert sorted(path.name for path in shared.iterdir()) == ["hello_1_amd64.deb", "nginx_1_amd64.deb"]


def test_seeding_an_empty_cache_touches_nothing(tmp_path):
    assert seed_apt_archives(tmp_path / "missing", tmp_path / "upper", tmp_path / "lower") == 0
    assert not (tmp_path / "upper").exists()


# --- preconditions and tasks ------------------------------------------------


@pytest.mark.parametrize(
    "platform, euid, missing, message",
    [
        ("darwin", 0, set(), "sandbox.up needs Linux"),
        (
            "linux",
            1000,
            set(),
            "sandbox.up needs root (it creates network namespaces and runs systemd-nspawn); run it with sudo",
        ),
        ("linux", 0, {"systemd-nspawn"}, "systemd-nspawn (apt-get install systemd-container)"),
        (
            "linux",
            0,
            {"ip", "ssh-keygen"},
            "ip (apt-get install iproute2), ssh-keygen (apt-get install openssh-client)",
        ),
    ],
)
def test_preconditions(monkeypatch, platform, euid, missing, message):
    monkeypatch.setattr(sandbox_facts.sys, "platform", platform)
    monkeypatch.setattr(sandbox_facts.os, "geteuid", lambda: euid)
    monkeypatch.setattr(sandbox_facts.shutil, "which", lambda tool: None if tool in missing else f"/usr/bin/{tool}")
    with pytest.raises(SandboxError) as raised:
        check_preconditions("sandbox.up", REQUIRED_TOOLS)
    assert message in raised.value.message
    assert "\n" not in raised.value.message


def test_missing_overlayfs_is_named(monkeypatch):
    monkeypatch.setattr(sandbox_facts.sys, "platform", "linux")
    monkeypatch.setattr(sandbox_facts.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox_facts.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(sandbox_facts, "overlayfs_available", lambda: False)
    with pytest.raises(SandboxError, match="needs overlayfs"):
        check_preconditions("sandbox.up", REQUIRED_TOOLS)


def test_run_command_names_the_failing_command():
    with pytest.raises(SandboxError, match=r"`sh -c 'echo oops >&2; exit 4'` failed \(exit 4\): oops"):
        run_command(["sh", "-c", "echo oops >&2; exit 4"])


@pytest.mark.parametrize(
    "argv, ok_exit_codes, stdout",
    [
        (["sh", "-c", "echo degraded; exit 1"], (0, 1), "degraded\n"),
        (["echo", "running"], (0,), "running\n"),
    ],
)
def test_run_command_accepts_listed_exit_codes(argv, ok_exit_codes, stdout):
    assert run_command(argv, ok_exit_codes=ok_exit_codes) == stdout


def test_run_command_reports_a_timeout():
    with pytest.raises(SandboxError, match=r"`sleep 5` did not finish within 0.2 s"):
        run_command(["sleep", "5"], timeout=0.2)


def test_run_command_reports_a_missing_program():
    with pytest.raises(SandboxError, match="no-such-tool-vigil is not installed"):
        run_command(["no-such-tool-vigil"])


def test_the_collection_has_its_tasks():
    assert tasks.ns.name == "sandbox"
    assert sorted(tasks.ns.task_names) == ["down", "poweroff", "poweron", "ssh", "status", "up"]
    for name in tasks.ns.task_names:
        assert tasks.ns[name].__doc__.strip()


def test_a_machine_that_cannot_run_the_sandbox_exits_unsupported(monkeypatch):
    def refuse(**kwargs):
        raise SandboxUnsupported(
            "sandbox.up needs root (it creates network namespaces and runs systemd-nspawn); run it with sudo"
        )

    monkeypatch.setattr(lifecycle, "up", refuse)
    with pytest.raises(invoke.exceptions.Exit) as raised:
        tasks.up(invoke.Context())
    assert raised.value.code == ExitCode.UNSUPPORTED == 5
    assert "needs root" in raised.value.message


def test_a_running_vps_is_kept_even_when_its_sshd_does_not_answer(monkeypatch):
    monkeypatch.setattr(sandbox_facts, "tcp_port_open", lambda *args, **kwargs: False)
    facts = SandboxFacts(state=_state("vps1"), netns=["vigil-vps1"], nspawn_pids={"vps1": 101})
    assert healthy_hosts(facts, None) == {"vps1"}
    dead = SandboxFacts(state=_state("vps1"), netns=["vigil-vps1"], nspawn_pids={})
    assert healthy_hosts(dead, None) == set()


@pytest.mark.parametrize(
    "nspawn_pids, vps_dirs, stopped",
    [
        ({}, ["vps1", "vps2"], {"vps2"}),  # vps2's nspawn is gone, its disk is not: stopped
        ({}, ["vps1"], set()),  # vps2's disk is gone too: nothing to lose
        ({"vps2": 999}, ["vps1", "vps2"], set()),  # an nspawn runs, not the recorded one: broken, not stopped
    ],
)
def test_a_recorded_vps_with_its_disk_but_no_nspawn_is_stopped(nspawn_pids, vps_dirs, stopped):
    facts = SandboxFacts(state=_state("vps1", "vps2"), netns=["vigil-vps1"],
                         nspawn_pids={"vps1": 101, **nspawn_pids}, vps_dirs=vps_dirs)
    assert stopped_hosts(facts, healthy_hosts(facts, None)) == stopped


def test_ip_forward_is_restored_only_when_up_turned_it_on(tmp_path):
    switch = tmp_path / "ip_forward"
    paths = SandboxPaths(repo=tmp_path, vps_base=tmp_path / "vps", ip_forward=switch)
    switch.write_text("1\n")
    assert not ensure_ip_forward(paths) and not restore_ip_forward(paths)
    assert switch.read_text() == "1\n"
    switch.write_text("0\n")
    assert ensure_ip_forward(paths) and switch.read_text() == "1\n"
    assert restore_ip_forward(paths) and switch.read_text() == "0\n"
    assert not paths.ip_forward_marker.exists()


@pytest.mark.parametrize("user, expected", [
    ("admin", "admin@10.213.1.2"),
    ("root", "root@10.213.1.2"),
    ("x; reboot", SandboxError("--user: 'x; reboot' is not a user name")),
])
def test_sandbox_ssh_logs_in_as_the_user_asked_without_probing(tmp_path, monkeypatch, user, expected):
    paths = SandboxPaths(repo=tmp_path)
    save_state(paths, _state("vps1"))
    paths.private_key.parent.mkdir(parents=True, exist_ok=True)
    paths.private_key.write_text("key")
    paths.known_hosts_file.parent.mkdir(parents=True, exist_ok=True)
    paths.known_hosts_file.write_text("10.213.1.2 ssh-ed25519 AAAAone\n")
    # Given a user, nothing is probed: a probe here would try to reach the VPS.
    monkeypatch.setattr(lifecycle.subprocess, "run", lambda *args, **kwargs: pytest.fail("probed"))
    if isinstance(expected, Exception):
        with pytest.raises(SandboxError, match=re.escape(str(expected))):
            lifecycle.ssh_argv("vps1", "uptime", paths, user=user)
        return
    argv = lifecycle.ssh_argv("vps1", "uptime", paths, user=user)
    assert argv[-3:] == [expected, "--", "uptime"]
