"""Faults and bad input against real sandbox VPSes: each fails clearly and changes nothing it should not."""

import socket
import subprocess
import threading
import time

import pytest

from tests.support.sandbox_hosts import INVENTORY, invoke
from vigil.core.commands import cmd
from vigil.core.connectors.ssh import SSHTransport
from vigil.core.errors import ExitCode, UnreachableError
from vigil.core.inventory import load_inventory


def fingerprint_of(known_hosts_line: str, tmp_path) -> str:
    path = tmp_path / "one.pub"
    path.write_text(known_hosts_line.split(" ", 1)[1] + "\n")
    return subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True).stdout.split()[
        1
    ]


def pinned_lines():
    return dict(
        line.split(" ", 1) for line in (INVENTORY / "sandbox.known_hosts").read_text().splitlines() if line.strip()
    )


def netns_iptables(host: str, *rule: str):
    subprocess.run(["ip", "netns", "exec", f"vigil-{host}", "iptables", *rule], check=True)


def test_changed_host_key_is_refused_while_the_other_host_proceeds(provisioned, sandbox, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    impostor = (tmp_path / "impostor.pub").read_text().split()[:2]
    pins = pinned_lines()
    pins[sandbox.addresses["vps1"]] = " ".join(impostor)
    scratch = tmp_path / "inventory"
    scratch.mkdir()
    inventory = sandbox.scratch_inventory(scratch, known_hosts="".join(f"{a} {k}\n" for a, k in pins.items()))
    before = sandbox.audit_lines("vps1")

    run = invoke("provision.server", "--json", "--limit=vps1,vps2", inventory=inventory)

    assert run.code == ExitCode.UNREACHABLE
    refused = run.host("vps1")
    assert refused["status"] == "unreachable"
    assert "host key CHANGED" in refused["unreachable"]
    assert fingerprint_of(f"x {' '.join(impostor)}", tmp_path) in refused["unreachable"]
    assert fingerprint_of(f"x {pinned_lines()[sandbox.addresses['vps1']]}", tmp_path) in refused["unreachable"]
    assert "invoke provision.trust --env=sandbox --host=vps1" in refused["unreachable"]
    assert all(op["status"] == "skipped" for op in refused["operations"])
    assert run.host("vps2")["status"] == "ok"
    assert sandbox.audit_lines("vps1") == before  # no command ran on the refused host


def test_unpinned_host_is_refused_then_trusted_by_provision_trust(provisioned, sandbox, tmp_path):
    pins = pinned_lines()
    real_vps1 = pins.pop(sandbox.addresses["vps1"])
    inventory = sandbox.scratch_inventory(tmp_path, known_hosts="".join(f"{a} {k}\n" for a, k in pins.items()))
    expected = fingerprint_of(f"x {real_vps1}", tmp_path)

    refused = invoke("provision.server", "--json", "--limit=vps1", inventory=inventory)
    assert refused.code == ExitCode.UNREACHABLE
    assert "is not pinned" in refused.host("vps1")["unreachable"] and expected in refused.host("vps1")["unreachable"]

    # Without a terminal and without --yes, trust shows the fingerprint and pins nothing.
    asked = invoke("provision.trust", "--host=vps1", inventory=inventory)
    assert asked.code == ExitCode.BAD_INPUT and expected in asked.stdout and "--yes" in asked.stderr
    assert sandbox.addresses["vps1"] not in (tmp_path / "sandbox.known_hosts").read_text()

    trusted = invoke("provision.trust", "--host=vps1", "--yes", inventory=inventory)
    assert trusted.code == 0 and expected in trusted.stdout
    assert f"{sandbox.addresses['vps1']} {real_vps1}" in (tmp_path / "sandbox.known_hosts").read_text()
    assert invoke("provision.server", "--json", "--limit=vps1", inventory=inventory).code == 0
    again = invoke("provision.trust", "--host=vps1", inventory=inventory)
    assert again.code == 0 and "already pinned" in again.stdout


def test_unreachable_host_fails_within_the_connect_timeout(provisioned, sandbox, tmp_path):
    def edit(data):
        data["defaults"]["connect_timeout"] = 3
        data["hosts"]["vps2"]["port"] = 2299
        # The roles refuse a port that differs from the one vigil logs in on: keep them consistent.
        data["hosts"]["vps2"]["vars"].update(ssh_port=2299, firewall_ssh_port=2299)

    inventory = sandbox.scratch_inventory(tmp_path, edit)
    netns_iptables("vps2", "-I", "INPUT", "-p", "tcp", "--dport", "2299", "-j", "DROP")
    try:
        began = time.monotonic()
        run = invoke("provision.server", "--json", "--limit=vps1,vps2", inventory=inventory, timeout=120)
        elapsed = time.monotonic() - began
    finally:
        netns_iptables("vps2", "-D", "INPUT", "-p", "tcp", "--dport", "2299", "-j", "DROP")
    assert run.code == ExitCode.UNREACHABLE
    assert f"no answer from {sandbox.addresses['vps2']}:2299 within 3s" in run.host("vps2")["unreachable"]
    assert run.host("vps1")["status"] == "ok"
    assert elapsed < 60


def test_dropped_connection_fails_the_command_instead_of_hanging(provisioned, sandbox):
    host = load_inventory("sandbox").hosts["vps2"].as_admin()
    transport = SSHTransport(host, INVENTORY / "sandbox.known_hosts", "sandbox").connect()
    assert transport.run(cmd("true")).ok
    # A real login runs over the connector's own socket, Nagle's algorithm off (no_delay_socket).
    assert transport._connection.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    cut = threading.Timer(1.0, netns_iptables, ("vps2", "-I", "OUTPUT", "-p", "tcp", "--sport", "22", "-j", "DROP"))
    cut.start()
    try:
        began = time.monotonic()
        with pytest.raises(UnreachableError, match="did not finish within 6s|connection"):
            transport.run(cmd("sleep", "60"), timeout=6)
        assert time.monotonic() - began < 30
    finally:
        cut.join()
        netns_iptables("vps2", "-D", "OUTPUT", "-p", "tcp", "--sport", "22", "-j", "DROP")
        transport.close()


def test_sudo_that_wants_a_password_fails_fast_and_clearly(provisioned, sandbox, tmp_path):
    pub = (INVENTORY.parent / ".vigil" / "sandbox" / "id_ed25519.pub").read_text().strip()
    sandbox.ssh(
        "vps2",
        "id carol >/dev/null 2>&1 || useradd -m -G sudo -s /bin/bash carol; "
        "echo 'carol:correct-horse-9' | chpasswd; install -d -o carol -m 0700 /home/carol/.ssh; "
        f"echo '{pub}' > /home/carol/.ssh/authorized_keys; chown carol /home/carol/.ssh/authorized_keys",
    )

    def edit(data):
        data["hosts"]["vps2"]["admin_user"] = "carol"
        data["hosts"]["vps2"]["vars"]["users_admin_user"] = "carol"

    inventory = sandbox.scratch_inventory(tmp_path, edit)
    began = time.monotonic()
    run = invoke("provision.server", "--json", "--limit=vps1,vps2", inventory=inventory, timeout=120)
    assert run.code == ExitCode.HOST_FAILED
    assert "sudo asks carol for a password" in run.host("vps2")["error"]
    assert run.host("vps1")["status"] == "ok"
    assert time.monotonic() - began < 60


BAD_INPUT = [
    # (what to break, extra args, the one-line error must contain)
    ("unknown env", None, ["--env=nope"], "--env: unknown environment 'nope'"),
    ("unknown limit", None, ["--limit=vps1,vps9"], "--limit: unknown host or group 'vps9'"),
    ("yaml syntax", lambda p: p.write_text(p.read_text() + "hosts: [unclosed\n"), [], "sandbox.yml:"),
    (
        "injected address",
        lambda p: p.write_text(p.read_text().replace("address: 10.213.1.2", "address: $(touch /tmp/vigil-pwned)")),
        [],
        "hosts.vps1.address: an address must be",
    ),
    (
        "injected user",
        lambda p: p.write_text(p.read_text().replace("user: deploy", "user: deploy;touch /tmp/vigil-pwned", 1)),
        [],
        "defaults.user: a user must match",
    ),
    (
        "injected path",
        None,
        ["--var", "base_swap_path=/tmp/x;touch /tmp/vigil-pwned"],
        "--var base_swap_path: a path must be absolute",
    ),
    ("parent path", None, ["--var", "base_swap_path=/var/../etc/shadow"], "no '..'"),
    (
        "missing key",
        lambda p: p.write_text(p.read_text().replace("/id_ed25519", "/no-such-key")),
        [],
        "no-such-key does not exist",
    ),
    (
        "firewall without the login port",
        None,
        ["--var", "firewall_ssh_port=2222"],
        "firewall_ssh_port: 2222 is not the port vigil logs in on (22)",
    ),
    (
        "admin keys without ours",
        None,
        [
            "--var",
            'users_admin_authorized_keys=["ssh-ed25519 '
            'AAAAC3NzaC1lZDI1NTE5AAAAIHJ6mJdzBZ4cQ6Yh0XpB2a3Vn9y1x7S3dF0eKqL8t5Wm someone"]',
        ],
        "does not hold the public half of id_ed25519",
    ),
]


@pytest.mark.parametrize("label, breakage, args, message", BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_one_clear_line_and_changes_nothing(
    provisioned, sandbox, tmp_path, label, breakage, args, message
):
    inventory = sandbox.scratch_inventory(tmp_path)
    if breakage:
        breakage(inventory / "sandbox.yml")
    before = {name: sandbox.audit_lines(name) for name in ("vps1", "vps2")}
    run = (
        invoke("provision.server", "--limit=vps1,vps2", *args, inventory=inventory)
        if "--limit" not in " ".join(args)
        else invoke("provision.server", *args, inventory=inventory)
    )
    assert run.code == ExitCode.BAD_INPUT, run.stdout + run.stderr
    errors = run.stderr.strip().splitlines()
    assert len(errors) == 1 and message in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    assert {name: sandbox.audit_lines(name) for name in ("vps1", "vps2")} == before
    assert sandbox.ssh("vps1", "test -e /tmp/vigil-pwned && echo yes || echo no").strip() == "no"


def test_a_key_nobody_authorized_names_both_users_it_tried(provisioned, sandbox, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)

    stranger = " ".join((tmp_path / "stranger.pub").read_text().split()[:2])

    def edit(data):
        data["hosts"]["vps2"]["ssh_key"] = str(tmp_path / "stranger")
        # Listed, so the users role accepts it; never installed, so the host refuses it.
        data["hosts"]["vps2"]["vars"]["users_admin_authorized_keys"] = [stranger]

    run = invoke("provision.server", "--json", "--limit=vps1,vps2", inventory=sandbox.scratch_inventory(tmp_path, edit))
    assert run.code == ExitCode.UNREACHABLE
    reason = run.host("vps2")["unreachable"]
    assert "authentication as ops" in reason and "the bootstrap user root was refused too" in reason
    assert run.host("vps1")["status"] == "ok"
