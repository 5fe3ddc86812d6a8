"""The benchmark's comparisons are fair, shown on a sandbox VPS vigil onboarded (vps17, booted apart from
the session's and onboarded as the web and database host of a layout of its own: marked `apart`, scripts/test
runs it beside the session's modules):

- the Ansible playbook and the pyinfra deploy in bench/peers/, given the host's state as exported from
  vigil's plan, find nothing to change (check mode and a real run), so they check the same state;
- they are not vacuous: a file whose mode was changed on the host is reported by both in check mode;
- a no-op vigil run asks the host exactly two round trips (facts, audit line) over one login, as
  counted from sshd's journal on the host, the way bench/onboard_noop.py counts them.

The peer tools are installed from PyPI into bench/.venv-peers, as `invoke bench` installs them.
"""

from __future__ import annotations

import json
import shutil

import pytest

from bench.common import run
from bench.onboard_noop import SshdLog, install_peers, peer_host, vigil_changed
from bench.peers import ansible_peer, pyinfra_peer
from bench.peers.common import PEERS_BIN, PeerHost
from bench.peers.export import export
from tests.support.sandbox_hosts import apart_layout, invoke

PEERS = [ansible_peer, pyinfra_peer]
HOST = "vps17"
pytestmark = pytest.mark.apart


@pytest.fixture(scope="module")
def sandbox():
    """This module's VPS, fresh, apart from the session's (tests/support/sandbox_hosts.py)."""
    with apart_layout("bench-peers", HOST) as hosts:
        yield hosts


@pytest.fixture(scope="module")
def inventory(sandbox):
    """The directory of the inventory that lists the module's VPS alone (for VIGIL_INVENTORY)."""
    return sandbox.listing.parent


@pytest.fixture(scope="module")
def exported(sandbox, inventory, tmp_path_factory):
    """The host settled by a vigil run, its state exported, the peer tools installed: (work dir, [PeerHost])."""
    install_peers()
    settled = invoke("provision.server", f"--limit={HOST}", inventory=inventory)
    assert settled.code == 0, settled.stdout[-3000:] + settled.stderr
    work = tmp_path_factory.mktemp("peers")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIGIL_INVENTORY", str(inventory))
        export("sandbox", HOST, work)
    hosts = [peer_host(work, HOST, sandbox.listing)]
    for peer in PEERS:
        peer.prepare(work, hosts)
    yield work, hosts
    # The manifest's files hold the host's secrets (its TLS key): not left in pytest's temporary tree.
    shutil.rmtree(work)


@pytest.mark.parametrize("peer", PEERS, ids=lambda peer: peer.TOOL)
def test_a_peer_finds_nothing_to_change_where_vigil_left_the_host_as_wanted(exported, peer):
    work, hosts = exported
    for argv, env in (peer.check_command(work, hosts), peer.command(work, hosts)):
        done = run(argv, env=env)
        assert peer.changed(done.stdout, done.stderr) == 0, done.stdout[-4000:]
        assert peer.operations(done.stdout, done.stderr) >= 40


def test_the_peers_see_a_file_that_drifted_and_vigil_puts_it_back(exported, sandbox, inventory):
    work, hosts = exported
    sandbox.ssh(HOST, "chmod 0600 /etc/motd")
    try:
        for peer in PEERS:
            done = run(*peer.check_command(work, hosts))
            assert peer.changed(done.stdout, done.stderr) == 1, (peer.TOOL, done.stdout[-4000:])
    finally:
        restored = invoke("provision.server", f"--limit={HOST}", inventory=inventory)
    assert restored.code == 0 and sandbox.ssh(HOST, "stat -c %a /etc/motd").strip() == "644"


def test_ansible_reads_the_inventory_prepare_writes_as_written(exported, tmp_path):
    """The peer's inventory for two hosts, as ansible-inventory itself reads it (the tools are installed here)."""
    key, known = tmp_path / "keys dir" / "id_ed25519", tmp_path / "known_hosts"
    given = [PeerHost("vps1", "10.213.1.2", 22, "ops", key, known, tmp_path / "vps1" / "manifest.json"),
             PeerHost("vps2", "10.213.2.2", 2222, "ops", key, known, tmp_path / "vps2" / "manifest.json")]
    ansible_peer.prepare(tmp_path, given)
    done = run([str(PEERS_BIN / "ansible-inventory"), "-i", str(tmp_path / ansible_peer.INVENTORY), "--list"],
               env={"ANSIBLE_CONFIG": str(ansible_peer.CONFIG), "HOME": str(tmp_path)})
    hostvars = json.loads(done.stdout)["_meta"]["hostvars"]
    assert hostvars["vps2"]["ansible_port"] == 2222
    assert hostvars["vps1"]["vigil_manifest"] == str(given[0].manifest)


def test_a_no_op_vigil_run_asks_the_host_two_round_trips_over_one_login(exported, inventory):
    log = SshdLog(HOST)
    for _ in range(2):
        again = invoke("provision.server", f"--limit={HOST}", "--json", inventory=inventory)
        assert again.code == 0, again.stderr
        assert vigil_changed(again.stdout)[0] == 0
        assert log.since_mark() == (2, 1)
