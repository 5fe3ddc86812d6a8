"""Sandbox planning: names and addresses, planned commands, rendered files, and the host and cleanup plans.

No network and no root: only the pure parts of vigil.sandbox.
"""

import re
import shlex
from pathlib import Path

import pytest

from vigil.core.yaml_loader import parse_yaml
from vigil.sandbox.facts import SandboxFacts, nspawn_machine_of
from vigil.sandbox.layouts import layout_flags
from vigil.sandbox.paths import MAX_HOSTS, IptablesRule, SandboxError, SandboxPaths, Vps, host_name_index
from vigil.sandbox.plan import (
    BOOT_WAIT,
    boot_wait_command,
    client_key_command,
    desired_iptables_rules,
    host_key_command,
    image_build_command,
    inventory_groups,
    network_up_commands,
    nspawn_command,
    overlay_mount_command,
    plan_cleanup,
    plan_hosts,
    plan_iptables,
    render_etc_hosts,
    render_inventory,
    render_known_hosts,
    render_sshd_dropin,
    ssh_command,
)
from vigil.sandbox.scope import parse_group_flags, parse_release_flags

PATHS = SandboxPaths(repo=Path("/repo"))
TAG = ("-m", "comment", "--comment", "vigil-sandbox")
MASQUERADE_ETH0 = IptablesRule("nat", "POSTROUTING", ("-s", "10.213.0.0/16", "-o", "eth0", *TAG, "-j", "MASQUERADE"))
FORWARD_OUT = IptablesRule("filter", "FORWARD", ("-s", "10.213.0.0/16", *TAG, "-j", "ACCEPT"), insert=True)
FORWARD_IN = IptablesRule("filter", "FORWARD", ("-d", "10.213.0.0/16", *TAG, "-j", "ACCEPT"), insert=True)


# --- names and addresses ----------------------------------------------------


@pytest.mark.parametrize(
    "index, name, address, gateway, netns, host_link",
    [
        (1, "vps1", "10.213.1.2", "10.213.1.1", "vigil-vps1", "vgl-vps1"),
        (2, "vps2", "10.213.2.2", "10.213.2.1", "vigil-vps2", "vgl-vps2"),
        (254, "vps254", "10.213.254.2", "10.213.254.1", "vigil-vps254", "vgl-vps254"),
    ],
)
def test_vps_names_and_addresses(index, name, address, gateway, netns, host_link):
    vps = Vps(index)
    assert (vps.name, vps.address, vps.gateway, vps.netns, vps.host_link) == (name, address, gateway, netns, host_link)
    assert str(vps.subnet) == f"10.213.{index}.0/30"
    # Linux interface names stop at 15 characters.
    assert len(vps.host_link) <= 15 and len(vps.peer_link) <= 15


@pytest.mark.parametrize("index", [0, 255, -1])
def test_vps_index_outside_the_network_is_refused(index):
    with pytest.raises(SandboxError, match="outside 1..254"):
        Vps(index)


@pytest.mark.parametrize(
    "name, index",
    [("vps1", 1), ("vps12", 12), ("vps0", None), ("vps01", None), ("web1", None), ("vps1 ", None), ("vps", None)],
)
def test_host_name_index(name, index):
    assert host_name_index(name) == index
    if index is None:
        with pytest.raises(SandboxError, match="not a sandbox host name"):
            Vps.from_name(name)
    else:
        assert Vps.from_name(name) == Vps(index)


# --- planned commands -------------------------------------------------------


def test_network_up_commands():
    assert network_up_commands(Vps(1)) == [
        ["ip", "netns", "add", "vigil-vps1"],
        ["ip", "link", "add", "vgl-vps1", "type", "veth", "peer", "name", "vgv-vps1"],
        ["ip", "link", "set", "vgv-vps1", "netns", "vigil-vps1"],
        ["ip", "-n", "vigil-vps1", "link", "set", "vgv-vps1", "name", "eth0"],
        ["ip", "addr", "add", "10.213.1.1/30", "dev", "vgl-vps1"],
        ["ip", "link", "set", "vgl-vps1", "up"],
        ["ip", "-n", "vigil-vps1", "addr", "add", "10.213.1.2/30", "dev", "eth0"],
        ["ip", "-n", "vigil-vps1", "link", "set", "lo", "up"],
        ["ip", "-n", "vigil-vps1", "link", "set", "eth0", "up"],
        ["ip", "-n", "vigil-vps1", "route", "add", "default", "via", "10.213.1.1"],
    ]


def test_nspawn_command():
    root = Path("/var/lib/vigil/sandbox/vps2/root")
    assert nspawn_command(Vps(2), root, PATHS) == [
        "systemd-nspawn", "--directory", str(root), "--boot", "--register=no", "--keep-unit",
        "--capability=CAP_NET_ADMIN", "--network-namespace-path=/run/netns/vigil-vps2", "--machine=vps2",
        "--timezone=off", "--resolv-conf=off", "--link-journal=no", "--console=read-only",
    ]


def test_our_nspawn_command_is_recognised_as_ours():
    argv = nspawn_command(Vps(3), Path("/x/root"), PATHS)
    assert nspawn_machine_of(argv) == "vps3"


@pytest.mark.parametrize(
    "argv, machine",
    [
        (
            ["/usr/bin/systemd-nspawn", "-D", "/r", "--machine=vps1", "--network-namespace-path=/run/netns/vigil-vps1"],
            "vps1",
        ),
        (["systemd-nspawn", "--machine=vps1", "--network-namespace-path=/run/netns/other"], None),
        (["systemd-nspawn", "--machine=web", "-D", "/r"], None),
        (["sleep", "--machine=vps1", "--network-namespace-path=/run/netns/vigil-vps1"], None),
        ([], None),
    ],
)
def test_nspawn_machine_of(argv, machine):
    assert nspawn_machine_of(argv) == machine


def test_overlay_mount_command():
    assert overlay_mount_command(Path("/img"), Path("/v/upper"), Path("/v/work"), Path("/v/root")) == [
        "mount", "-t", "overlay", "overlay", "-o", "lowerdir=/img,upperdir=/v/upper,workdir=/v/work", "/v/root",
    ]


@pytest.mark.parametrize("lower", [Path("/img,x"), Path("/img:x")])
def test_overlay_paths_that_the_option_string_would_misread_are_refused(lower):
    with pytest.raises(SandboxError, match="contains"):
        overlay_mount_command(lower, Path("/u"), Path("/w"), Path("/r"))


@pytest.mark.parametrize("release, suite", [("13", "trixie"), ("12", "bookworm")])
def test_image_build_command_matches_sandbox_md(release, suite):
    paths = SandboxPaths()
    assert paths.image_partial(release) == Path(f"/var/cache/vigil/images/debian-{suite}.partial")
    assert image_build_command(paths.image_partial(release), release) == [
        "debootstrap", "--variant=minbase",
        "--include=systemd,systemd-sysv,dbus,openssh-server,sudo,python3,ca-certificates,iproute2",
        suite, f"/var/cache/vigil/images/debian-{suite}.partial",
    ]
    assert paths.release_apt_archives(release) == Path(f"/var/cache/vigil/apt-archives/{suite}")


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda: client_key_command(Path("/repo/.vigil/sandbox/id_ed25519")),
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vigil-sandbox",
             "-f", "/repo/.vigil/sandbox/id_ed25519"],
        ),
        (
            lambda: host_key_command(Path("/v/root"), Vps(1)),
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@vps1",
             "-f", "/v/root/etc/ssh/ssh_host_ed25519_key"],
        ),
    ],
)
def test_key_commands(make, expected):
    assert make() == expected


PINNED = [
    "-i", "/repo/.vigil/sandbox/id_ed25519", "-o", "IdentitiesOnly=yes",
    "-o", "UserKnownHostsFile=/repo/inventory/sandbox.known_hosts", "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5",
]


@pytest.mark.parametrize(
    "remote, batch, expected",
    [
        (None, False, ["ssh", *PINNED, "root@10.213.1.2"]),
        (["uptime"], False, ["ssh", *PINNED, "root@10.213.1.2", "--", "uptime"]),
        (["systemctl", "is-system-running", "--wait"], True,
         ["ssh", *PINNED, "-o", "BatchMode=yes", "root@10.213.1.2", "--", "systemctl", "is-system-running", "--wait"]),
    ],
)
def test_ssh_command_pins_the_host_key(remote, batch, expected):
    assert ssh_command(PATHS, "10.213.1.2", remote, batch=batch) == expected


def test_boot_wait_command():
    argv = boot_wait_command(PATHS, Vps(1))
    assert argv[-2] == "--" and shlex.split(argv[-1]) == ["sh", "-c", BOOT_WAIT]
    assert "is-system-running --wait" in BOOT_WAIT and "= resources ]" in BOOT_WAIT


# --- iptables ---------------------------------------------------------------


def test_desired_rules_are_tagged_and_forward_rules_go_first():
    rules = desired_iptables_rules("eth0")
    assert rules == [MASQUERADE_ETH0, FORWARD_OUT, FORWARD_IN]
    assert [rule.add_argv()[4:7] for rule in rules] == [
        ["-A", "POSTROUTING", "-s"], ["-I", "FORWARD", "1"], ["-I", "FORWARD", "1"],
    ]


@pytest.mark.parametrize(
    "existing, uplink, expected",
    [
        ([], "eth0", [rule.add_argv() for rule in (MASQUERADE_ETH0, FORWARD_OUT, FORWARD_IN)]),
        ([MASQUERADE_ETH0, FORWARD_OUT, FORWARD_IN], "eth0", []),
        # The uplink changed since the rule was made: swap the MASQUERADE rule.
        (
            [MASQUERADE_ETH0, FORWARD_OUT, FORWARD_IN],
            "wlan0",
            [
                MASQUERADE_ETH0.delete_argv(),
                ["iptables", "-w", "-t", "nat", "-A", "POSTROUTING",
                 "-s", "10.213.0.0/16", "-o", "wlan0", *TAG, "-j", "MASQUERADE"],
            ],
        ),
        # A killed run that added a rule twice.
        ([MASQUERADE_ETH0, FORWARD_OUT, FORWARD_OUT, FORWARD_IN], "eth0", [FORWARD_OUT.delete_argv()]),
    ],
)
def test_plan_iptables(existing, uplink, expected):
    assert plan_iptables(existing, desired_iptables_rules(uplink)) == expected


def test_plan_iptables_for_down_deletes_all_of_ours():
    assert plan_iptables([MASQUERADE_ETH0, FORWARD_IN], []) == [
        ["iptables", "-w", "-t", "nat", "-D", "POSTROUTING",
         "-s", "10.213.0.0/16", "-o", "eth0", *TAG, "-j", "MASQUERADE"],
        ["iptables", "-w", "-t", "filter", "-D", "FORWARD", "-d", "10.213.0.0/16", *TAG, "-j", "ACCEPT"],
    ]


# --- rendered files ---------------------------------------------------------

TWO_HOSTS = [
    {"name": "vps1", "address": "10.213.1.2", "host_key": "ssh-ed25519 AAAAone"},
    {"name": "vps2", "address": "10.213.2.2", "host_key": "ssh-ed25519 AAAAtwo"},
]


def test_render_inventory_is_the_contract_text():
    assert render_inventory(TWO_HOSTS, PATHS) == """\
# Generated by `invoke sandbox.up`; edits are overwritten.
known_hosts: sandbox.known_hosts      # relative to this file
defaults:
  user: deploy            # deploys log in as deploy; its sudo covers deploys only (roles/users)
  admin_user: ops         # provisioning logs in as ops, root through sudo (roles/users)
  bootstrap_user: root    # until then: a fresh VPS knows only root
  port: 22
  ssh_key: ../.vigil/sandbox/id_ed25519   # relative to this file
vars:
  nginx_tls: local-ca   # HTTPS from the sandbox's own CA (.vigil/sandbox/ca/ca.crt)
  app_watch_seconds: 5   # a shorter watch after each switch keeps sandbox iterations quick (default 30)
  app_min_healthy_seconds: 5   # and a shorter stability gate (default 10)
  app_health_timeout: 25   # the sample app is healthy in seconds here: a failing gate ends sooner (default 60)
  pgbackrest_archive_timeout: 15   # WAL archived at least every 15 s with a backup host (default 60)
  pgbackrest_archive_wait_seconds: 20   # WAL arrives in seconds here: report a stall sooner (default 60)
  patroni_join_wait_seconds: 300   # members of this small database are up in seconds (default 1800)
  # With a monitor host: alerts within about 40 s, resolved within a minute, a heartbeat every 20 s
  # (defaults 15, 10, 15, 45, 180, 10, 120 and 60) so that the tests wait less.
  monitoring_scrape_interval: 5
  monitoring_scrape_timeout: 4
  monitoring_evaluation_interval: 5
  monitoring_down_for_seconds: 20
  monitoring_boot_grace_seconds: 45
  monitoring_group_wait_seconds: 5
  monitoring_group_interval_seconds: 15
  monitoring_heartbeat_seconds: 20
  users_admin_authorized_keys: ['']
  users_deploy_authorized_keys: ['']
groups:   # web: every host given no --group; db: the first of them, unless one was given db
  web: {hosts: [vps1, vps2]}
  db: {hosts: [vps1]}
hosts:
  vps1: {address: 10.213.1.2, vars: {firewall_ssh_trusted_sources: [10.213.1.1]}}
  vps2: {address: 10.213.2.2, vars: {firewall_ssh_trusted_sources: [10.213.2.1]}}
"""


@pytest.mark.parametrize("count", [1, 2, 3])
def test_render_inventory_parses_to_the_schema(count):
    hosts = [{"name": f"vps{i}", "address": f"10.213.{i}.2"} for i in range(1, count + 1)]
    names = [host["name"] for host in hosts]
    assert parse_yaml(render_inventory(hosts, PATHS), "inventory/sandbox.yml").data == {
        "known_hosts": "sandbox.known_hosts",
        "defaults": {"user": "deploy", "admin_user": "ops", "bootstrap_user": "root", "port": 22,
                     "ssh_key": "../.vigil/sandbox/id_ed25519"},
        "vars": {"nginx_tls": "local-ca", "app_watch_seconds": 5, "app_min_healthy_seconds": 5,
                 "app_health_timeout": 25,
                 "pgbackrest_archive_timeout": 15, "pgbackrest_archive_wait_seconds": 20,
                 "patroni_join_wait_seconds": 300,
                 "monitoring_scrape_interval": 5, "monitoring_scrape_timeout": 4, "monitoring_evaluation_interval": 5,
                 "monitoring_down_for_seconds": 20, "monitoring_boot_grace_seconds": 45,
                 "monitoring_group_wait_seconds": 5,
                 "monitoring_group_interval_seconds": 15, "monitoring_heartbeat_seconds": 20,
                 "users_admin_authorized_keys": [""],
                 "users_deploy_authorized_keys": [""]},
        "groups": {"web": {"hosts": names}, "db": {"hosts": names[:1]}},
        "hosts": {host["name"]: {"address": host["address"],
                                 "vars": {"firewall_ssh_trusted_sources": [host["address"][:-1] + "1"]}}
                  for host in hosts},
    }


@pytest.mark.parametrize("given, layout", [
    ({}, {"web": ["vps1", "vps2", "vps3"], "db": ["vps1"]}),
    # A backup host holds the repository only: no app, no database.
    ({"vps3": ["backup"]}, {"web": ["vps1", "vps2"], "db": ["vps1"], "backup": ["vps3"]}),
    # A database host of its own: the others run the app.
    ({"vps1": ["db"], "vps3": ["backup", "monitor"]},
     {"web": ["vps2"], "db": ["vps1"], "backup": ["vps3"], "monitor": ["vps3"]}),
    ({"vps2": ["web", "lb"]}, {"web": ["vps1", "vps3", "vps2"], "db": ["vps1"], "lb": ["vps2"]}),
])
def test_hosts_given_groups_are_in_those_alone_and_the_rest_run_the_app(given, layout):
    hosts = [{"name": f"vps{i}", "address": f"10.213.{i}.2", "groups": given.get(f"vps{i}", [])} for i in (1, 2, 3)]
    assert inventory_groups(hosts) == layout
    rendered = parse_yaml(render_inventory(hosts, PATHS), "inventory/sandbox.yml").data["groups"]
    assert rendered == {group: {"hosts": members} for group, members in layout.items()}


@pytest.mark.parametrize("flags, message", [
    (["vps4:backup"], "'vps4' is not one of vps1..vps3 (--hosts=3)"),
    (["vps3:backups"], "unknown group 'backups'; choose web, db, backup, monitor, lb"),
    (["vps3"], "unknown group ''"),
])
def test_a_group_flag_names_a_wanted_host_and_a_known_group(flags, message):
    with pytest.raises(SandboxError, match=re.escape(message)):
        parse_group_flags(flags, 3)


def test_group_flags_may_give_a_host_several_groups_once_each():
    assert parse_group_flags(["vps3:backup", "vps3:monitor", "vps3:backup"], 3) == {"vps3": ["backup", "monitor"]}


def test_render_known_hosts():
    assert render_known_hosts(TWO_HOSTS) == (
        "10.213.1.2 ssh-ed25519 AAAAone\n"
        "10.213.2.2 ssh-ed25519 AAAAtwo\n"
    )


def test_render_known_hosts_drops_the_key_comment():
    host = {"name": "vps1", "address": "10.213.1.2", "host_key": "ssh-ed25519 AAAAone root@vps1"}
    assert render_known_hosts([host]) == "10.213.1.2 ssh-ed25519 AAAAone\n"


@pytest.mark.parametrize(
    "existing, fresh, expected",
    [
        # Nothing pinned yet: each host's recorded key.
        ("", [], "10.213.1.2 ssh-ed25519 AAAAone\n10.213.2.2 ssh-ed25519 AAAAtwo\n"),
        # A key pinned by `provision.trust` after a rotation stays, with the comment above it.
        ("# rotated vps2 on 12-01\n10.213.2.2 ssh-ed25519 AAAArotated\n", [],
         "# rotated vps2 on 12-01\n10.213.1.2 ssh-ed25519 AAAAone\n10.213.2.2 ssh-ed25519 AAAArotated\n"),
        # A host created just now: its new key replaces the old VPS's pin at that address.
        ("10.213.2.2 ssh-ed25519 AAAAold\n", ["vps2"],
         "10.213.1.2 ssh-ed25519 AAAAone\n10.213.2.2 ssh-ed25519 AAAAtwo\n"),
        # Lines for an address no host has any more (vps9 is gone) are dropped; a second key type is kept.
        ("10.213.9.2 ssh-ed25519 AAAAgone\n10.213.1.2 ssh-ed25519 AAAAone\n10.213.1.2 ecdsa-sha2-nistp256 AAAAe\n", [],
         "10.213.1.2 ssh-ed25519 AAAAone\n10.213.1.2 ecdsa-sha2-nistp256 AAAAe\n10.213.2.2 ssh-ed25519 AAAAtwo\n"),
    ],
)
def test_known_hosts_keep_what_is_pinned_for_hosts_that_were_not_recreated(existing, fresh, expected):
    assert render_known_hosts(TWO_HOSTS, existing, fresh) == expected


@pytest.mark.parametrize(
    "existing, expected",
    [
        ("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n",
         "127.0.0.1\tlocalhost\n127.0.1.1\tvps1\n::1\t\tlocalhost ip6-localhost\n"),
        ("127.0.0.1 localhost\n127.0.1.1 debian\n", "127.0.0.1 localhost\n127.0.1.1\tvps1\n"),
        # No file (a bookworm minbase image): Debian's default, localhost included.
        ("", "127.0.0.1\tlocalhost\n127.0.1.1\tvps1\n\n# The following lines are desirable for IPv6 capable hosts\n"
             "::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n"),
        ("::1 localhost\n", "127.0.0.1\tlocalhost\n127.0.1.1\tvps1\n::1 localhost\n"),
    ],
)
def test_render_etc_hosts(existing, expected):
    assert render_etc_hosts(existing, "vps1") == expected


def test_sshd_dropin_offers_only_the_pinned_key():
    lines = [line for line in render_sshd_dropin().splitlines() if not line.startswith("#")]
    assert lines == ["HostKey /etc/ssh/ssh_host_ed25519_key"]


# --- plans ------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, healthy, create, keep, extra",
    [
        (2, set(), ["vps1", "vps2"], [], []),
        (2, {"vps1", "vps2"}, [], ["vps1", "vps2"], []),
        (3, {"vps1", "vps2"}, ["vps3"], ["vps1", "vps2"], []),
        (1, {"vps1", "vps2"}, [], ["vps1"], ["vps2"]),
        (2, {"vps2"}, ["vps1"], ["vps2"], []),
        (1, {"vps1", "vps2", "vps10"}, [], ["vps1"], ["vps2", "vps10"]),
    ],
)
def test_plan_hosts(requested, healthy, create, keep, extra):
    plan = plan_hosts(requested, healthy)
    assert ([vps.name for vps in plan.create], plan.keep, plan.extra) == (create, keep, extra)


@pytest.mark.parametrize(
    "requested, healthy, releases, running, create, replace, keep",
    [
        # A host on the asked release stays; a host on another one is replaced, on the asked one.
        (2, {"vps1", "vps2"}, {"vps2": "12"}, {"vps1": "13", "vps2": "12"}, {}, [], ["vps1", "vps2"]),
        (2, {"vps1", "vps2"}, {"vps2": "12"}, {"vps1": "13", "vps2": "13"}, {"vps2": "12"}, ["vps2"], ["vps1"]),
        # A host recorded before releases were: it runs 13.
        (1, {"vps1"}, {"vps1": "13"}, {}, {}, [], ["vps1"]),
        (3, {"vps1"}, {"vps1": "12", "vps2": "12", "vps3": "13"}, {"vps1": "13"},
         {"vps1": "12", "vps2": "12", "vps3": "13"}, ["vps1"], []),
    ],
)
def test_plan_hosts_replaces_a_host_on_another_release(requested, healthy, releases, running, create, replace, keep):
    plan = plan_hosts(requested, healthy, releases, running)
    assert ({vps.name: plan.releases[vps.name] for vps in plan.create}, plan.replace, plan.keep) == (
        create,
        replace,
        keep,
    )


@pytest.mark.parametrize(
    "flags, requested, releases",
    [
        ([], 2, {"vps1": "13", "vps2": "13"}),
        (["12"], 2, {"vps1": "12", "vps2": "12"}),
        (["vps3:12"], 3, {"vps1": "13", "vps2": "13", "vps3": "12"}),
        (["vps1:13", "12"], 2, {"vps1": "13", "vps2": "12"}),
        (["vps2:12", "vps2:12"], 2, {"vps1": "13", "vps2": "12"}),
    ],
)
def test_release_flags(flags, requested, releases):
    assert parse_release_flags(flags, requested) == releases


@pytest.mark.parametrize(
    "flags, requested, message",
    [
        (["11"], 2, "--debian=11: unknown Debian release '11'; choose 12 (bookworm), 13 (trixie)"),
        (["vps3:12"], 2, "--debian=vps3:12: 'vps3' is not one of vps1..vps2 (--hosts=2)"),
        (["web1:12"], 2, "--debian=web1:12: 'web1' is not one of vps1..vps2"),
        (["vps1:bookworm"], 2, "unknown Debian release 'bookworm'"),
        (["vps1:12", "vps1:13"], 2, "--debian: vps1 is given two releases, 12 and 13"),
    ],
)
def test_bad_release_flags_are_one_clear_line(flags, requested, message):
    with pytest.raises(SandboxError, match=re.escape(message)):
        parse_release_flags(flags, requested)


@pytest.mark.parametrize(
    "requested, healthy, stopped, replace, create, replaced, keep",
    [
        # Asked for: a stopped host is replaced, a running one too.
        (2, {"vps1"}, {"vps2"}, ["vps2"], ["vps2"], ["vps2"], ["vps1"]),
        (2, {"vps1", "vps2"}, set(), ["vps1"], ["vps1"], ["vps1"], ["vps2"]),
        # A host that is neither running nor stopped (never created) is just created.
        (2, {"vps1"}, set(), ["vps2"], ["vps2"], [], ["vps1"]),
        # A stopped host beyond --hosts named by --replace goes (it is not wanted back).
        (1, {"vps1"}, {"vps3"}, ["vps3"], [], ["vps3"], ["vps1"]),
    ],
)
def test_plan_hosts_replaces_what_replace_names(requested, healthy, stopped, replace, create, replaced, keep):
    plan = plan_hosts(requested, healthy, stopped=stopped, replace=replace)
    assert ([vps.name for vps in plan.create], plan.replace, plan.keep) == (create, replaced, keep)
    assert all(plan.reasons[name] for name in plan.replace)


@pytest.mark.parametrize(
    "requested, stopped, replace, message",
    [
        (2, {"vps2"}, [], "vps2 is stopped, and its disk keeps what was onboarded and deployed: "
                          "`sudo invoke sandbox.up --replace=vps2` replaces it with a fresh VPS"),
        (2, {"vps1", "vps2"}, ["vps1"], "vps2 is stopped"),
        (2, {"vps1", "vps2"}, [], "vps1, vps2 are stopped, and their disks keep what was onboarded and deployed: "
                                  "`sudo invoke sandbox.up --replace=vps1 --replace=vps2` replaces them"),
        # A stopped host beyond --hosts would be removed as a leftover: refused just the same, and the
        # command it suggests keeps it in the plan.
        (1, {"vps2"}, [], "`sudo invoke sandbox.up --hosts=2 --replace=vps2` replaces it"),
        (2, set(), ["vps3"], "--replace=vps3: not one of vps1..vps2 (--hosts=2)"),
        (2, set(), ["web1"], "--replace=web1: not one of vps1..vps2"),
    ],
)
def test_plan_hosts_refuses_to_replace_a_stopped_host_unasked(requested, stopped, replace, message):
    with pytest.raises(SandboxError, match=re.escape(message)):
        plan_hosts(requested, set(), stopped=stopped, replace=replace)


@pytest.mark.parametrize("requested", [0, -1, MAX_HOSTS + 1])
def test_plan_hosts_refuses_odd_counts(requested):
    with pytest.raises(SandboxError, match="--hosts must be between"):
        plan_hosts(requested, set())


def _state(*names, dead=()):
    return {name: {"name": name, "index": int(name[3:]), "address": Vps.from_name(name).address,
                   "netns": f"vigil-{name}", "pid": 100 + int(name[3:])} for name in names}


def _facts(running=(), dead=(), **extra):
    """Facts for hosts created by `up`; `dead` ones lost their nspawn but kept everything else."""
    names = [*running, *dead]
    facts = SandboxFacts(
        state=_state(*names),
        nspawn_pids={name: 100 + int(name[3:]) for name in running},
        netns=[f"vigil-{name}" for name in names],
        links=[f"vgl-{name}" for name in names],
        mounts=[f"/var/lib/vigil/sandbox/{name}/root" for name in names],
        vps_dirs=list(names),
        rules=[MASQUERADE_ETH0, FORWARD_OUT, FORWARD_IN] if names else [],
    )
    for key, value in extra.items():
        setattr(facts, key, value)
    return facts


CLEANUP_CASES = {
    "nothing there": (SandboxFacts(), set(), [], {
        "stop": {}, "empty_netns": [], "orphans": {}, "commands": [], "remove_dirs": [], "forget": [], "hosts": []}),
    "a first up only adds the firewall rules": (SandboxFacts(), set(), desired_iptables_rules("eth0"), {
        "stop": {}, "empty_netns": [], "remove_dirs": [], "forget": [], "hosts": [],
        "commands": [rule.add_argv() for rule in (MASQUERADE_ETH0, FORWARD_OUT, FORWARD_IN)]}),
    "down with two running": (_facts(running=["vps1", "vps2"], netns_pids={"vigil-vps1": [201], "vigil-vps2": [202]}),
                              set(), [], {
        "stop": {"vps1": 101, "vps2": 102},
        # Their containers power off with nspawn: nothing is an orphan yet.
        "orphans": {},
        "empty_netns": ["vigil-vps1", "vigil-vps2"],
        "commands": [
            ["umount", "/var/lib/vigil/sandbox/vps1/root"],
            ["umount", "/var/lib/vigil/sandbox/vps2/root"],
            ["ip", "link", "delete", "vgl-vps1"],
            ["ip", "link", "delete", "vgl-vps2"],
            ["ip", "netns", "delete", "vigil-vps1"],
            ["ip", "netns", "delete", "vigil-vps2"],
            MASQUERADE_ETH0.delete_argv(), FORWARD_OUT.delete_argv(), FORWARD_IN.delete_argv(),
        ],
        "remove_dirs": ["vps1", "vps2"],
        "forget": ["vps1", "vps2"],
        "hosts": ["vps1", "vps2"],
    }),
    "up keeps the healthy one and clears the dead one": (
        _facts(running=["vps1"], dead=["vps2"], netns_pids={"vigil-vps2": [500, 501]}),
        {"vps1"}, desired_iptables_rules("eth0"), {
            "stop": {},
            # nspawn was SIGKILLed, so its container still runs in the namespace.
            "orphans": {"vigil-vps2": [500, 501]},
            "empty_netns": ["vigil-vps2"],
            "commands": [
                ["umount", "/var/lib/vigil/sandbox/vps2/root"],
                ["ip", "link", "delete", "vgl-vps2"],
                ["ip", "netns", "delete", "vigil-vps2"],
            ],
            "remove_dirs": ["vps2"],
            "forget": ["vps2"],
            "hosts": ["vps2"],
        }),
    "a run killed before the peer moved": (
        SandboxFacts(netns=["vigil-vps3"], links=["vgv-vps3", "vgl-vps3"]), set(), [], {
            "stop": {}, "orphans": {}, "empty_netns": ["vigil-vps3"], "remove_dirs": [], "forget": [],
            "commands": [["ip", "link", "delete", "vgl-vps3"], ["ip", "netns", "delete", "vigil-vps3"]],
        }),
    "only the peer end left": (SandboxFacts(links=["vgv-vps4"]), set(), [], {
        "stop": {}, "empty_netns": [], "remove_dirs": [], "forget": [], "hosts": ["vps4"],
        "commands": [["ip", "link", "delete", "vgv-vps4"]],
    }),
    "nested mounts come off children first": (
        SandboxFacts(mounts=["/var/lib/vigil/sandbox/vps5/root", "/var/lib/vigil/sandbox/vps5/root/proc"],
                     vps_dirs=["vps5"]), set(), [], {
            "stop": {}, "empty_netns": [], "forget": [], "remove_dirs": ["vps5"],
            "commands": [["umount", "/var/lib/vigil/sandbox/vps5/root/proc"],
                         ["umount", "/var/lib/vigil/sandbox/vps5/root"]],
        }),
    "up with everything healthy changes nothing": (
        _facts(running=["vps1", "vps2"]), {"vps1", "vps2"}, desired_iptables_rules("eth0"), {
            "stop": {}, "empty_netns": [], "commands": [], "remove_dirs": [], "forget": [], "hosts": []}),
    "an nspawn of ours that state lost is stopped": (
        SandboxFacts(nspawn_pids={"vps1": 4242}, netns=["vigil-vps1"], netns_pids={"vigil-vps1": [4242, 4243]}),
        set(), [], {
            "stop": {"vps1": 4242}, "orphans": {}, "empty_netns": ["vigil-vps1"], "remove_dirs": [], "forget": [],
            "commands": [["ip", "netns", "delete", "vigil-vps1"]],
        }),
}


@pytest.mark.parametrize("facts, keep, desired, expected", CLEANUP_CASES.values(), ids=CLEANUP_CASES.keys())
def test_plan_cleanup(facts, keep, desired, expected):
    plan = plan_cleanup(facts, PATHS, keep=keep, desired_rules=desired)
    assert {key: getattr(plan, key) for key in expected} == expected
    assert plan.is_empty() == (not any(expected.values()))


def test_cleanup_plan_names_orphaned_container_processes():
    plan = plan_cleanup(_facts(dead=["vps2"], netns_pids={"vigil-vps2": [500, 501]}), PATHS,
                                keep=set(), desired_rules=[])
    assert "kill -KILL 500 501 (still running in vigil-vps2, its nspawn gone)" in plan.describe(PATHS)


def test_cleanup_plan_describes_every_step():
    plan = plan_cleanup(_facts(running=["vps1"]), PATHS, keep=set(), desired_rules=[])
    text = "\n".join(plan.describe(PATHS))
    for expected in ("stop vps1 (kill -TERM 101", "umount /var/lib/vigil/sandbox/vps1/root", "ip link delete vgl-vps1",
                     "ip netns delete vigil-vps1", "rm -r /var/lib/vigil/sandbox/vps1", "forget vps1"):
        assert expected in text


def test_the_ha_layout_is_a_balancer_two_web_hosts_a_cluster_of_three_a_backup_and_a_monitor_host():
    count, flags = layout_flags("ha")
    hosts = [{"name": name, "address": f"10.213.{i}.2", "groups": groups}
             for i, (name, groups) in enumerate(parse_group_flags(flags, count).items(), 1)]
    assert inventory_groups(hosts) == {"web": ["vps2", "vps3"], "db": ["vps4", "vps5", "vps6"],
                                       "backup": ["vps7"], "monitor": ["vps8"], "lb": ["vps1"]}
    with pytest.raises(SandboxError, match="--layout=huge: unknown layout; choose ha"):
        layout_flags("huge")
