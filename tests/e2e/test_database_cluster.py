"""The database cluster's consensus store on real VPSes (roles/etcd): three more sandbox VPSes, vps7 to vps9,
onboarded from a scratch inventory that makes them the database group, form a three-member etcd cluster over
TLS. A second run changes nothing; a client without the cluster's certificate and anyone off the group are
turned away; one member powered off leaves a quorum that still takes writes, two leave none (and nothing
answers as if it had one). Runs last: it adds hosts to the sandbox's inventory.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.sandbox_hosts import INVENTORY, invoke
from vigil.core.yaml_loader import load_yaml
from vigil.sandbox.facts import load_state
from vigil.sandbox.paths import SandboxPaths

MEMBERS = ("vps7", "vps8", "vps9")
TLS = "--cacert=/etc/etcd/tls/ca.crt --cert=/etc/etcd/tls/member.crt --key=/etc/etcd/tls/member.key"


def etcdctl(sandbox, address: str, arguments: str, check: bool = True, endpoints: str = "https://127.0.0.1:2379"
            ) -> str:
    """etcdctl on the member at `address`, against `endpoints` (its own by default), with its certificate."""
    return sandbox.ssh_at(address, f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} {TLS} "
                                   f"--command-timeout=5s {arguments} 2>&1", check=check)


@pytest.fixture(scope="module")
def cluster(sandbox, tmp_path_factory):
    """vps7..vps9 booted and onboarded twice as the database group of a scratch inventory: (addresses, runs)."""
    # The running hosts keep the Debian release each runs (a module before this one boots Debian 12 ones).
    running = load_state(SandboxPaths())
    releases = [f"--debian={name}:{host['release']}" for name, host in running.items() if host.get("release")]
    started = invoke("sandbox.up", "--hosts=9", *releases, timeout=1200)
    assert started.code == 0, started.stdout + started.stderr
    addresses = {name: load_yaml(INVENTORY / "sandbox.yml")["hosts"][name]["address"] for name in MEMBERS}

    def only_the_members(data):
        data["hosts"] = {name: data["hosts"][name] for name in MEMBERS}
        # No web host of its own: the database hosts' firewall then opens PostgreSQL to nobody else.
        data["groups"] = {"db": {"hosts": list(MEMBERS)}, "web": {"hosts": []}}

    inventory = sandbox.scratch_inventory(tmp_path_factory.mktemp("cluster"), only_the_members)
    first = invoke("provision.server", "--json", inventory=inventory, timeout=1800)
    assert first.code == 0, first.stdout[-4000:] + first.stderr
    second = invoke("provision.server", "--json", inventory=inventory, timeout=1800)
    return addresses, first, second


def test_three_members_form_one_cluster_over_tls_and_a_second_run_changes_nothing(cluster, sandbox):
    addresses, first, second = cluster
    for name in MEMBERS:
        assert first.host(name)["status"] == "changed"
        assert (second.host(name)["changed"], second.host(name)["failed"]) == (0, 0), second.host(name)
    listed = json.loads(etcdctl(sandbox, addresses["vps7"], "member list -w json"))
    assert sorted(member["name"] for member in listed["members"]) == list(MEMBERS)
    assert sorted(url for member in listed["members"] for url in member["peerURLs"]) == sorted(
        f"https://{addresses[name]}:2380" for name in MEMBERS)
    every = ",".join(f"https://{addresses[name]}:2379" for name in MEMBERS)
    health = etcdctl(sandbox, addresses["vps8"], "endpoint health", endpoints=every)
    assert health.count("is healthy") == 3 and "unhealthy" not in health, health
    # One store, seen from every member: a key written on one is read on another.
    etcdctl(sandbox, addresses["vps7"], "put vigil/e2e written-on-vps7")
    assert etcdctl(sandbox, addresses["vps9"], "get vigil/e2e --print-value-only").strip() == "written-on-vps7"


def test_a_client_without_the_clusters_certificate_and_hosts_off_the_group_are_turned_away(cluster, sandbox):
    addresses, *_ = cluster
    member, other = addresses["vps7"], addresses["vps8"]
    # Plain HTTP, and TLS without a client certificate: refused by the member itself.
    plain = sandbox.ssh_at(member, f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{other}:2379/health; "
                                   "echo \" $?\"", check=False)
    assert not plain.startswith("200"), plain
    anonymous = sandbox.ssh_at(member, f"curl -s --max-time 5 --cacert /etc/etcd/tls/ca.crt https://{other}:2379/health;"
                                       " echo \" exit=$?\"", check=False)
    assert '"health":"true"' not in anonymous and "exit=0" not in anonymous, anonymous
    certified = sandbox.ssh_at(member, f"curl -s --max-time 5 --cacert /etc/etcd/tls/ca.crt --cert "
                                       f"/etc/etcd/tls/member.crt --key /etc/etcd/tls/member.key "
                                       f"https://{other}:2379/health")
    assert '"health":"true"' in certified
    # The firewall: a web host of the session cannot even reach the port.
    probe = sandbox.ssh("vps2", f"timeout 5 bash -c 'echo > /dev/tcp/{other}/2379' && echo open || echo closed",
                        check=False)
    assert probe.strip().endswith("closed"), probe


def test_one_member_down_keeps_a_quorum_two_down_leave_none(cluster, sandbox):
    addresses, *_ = cluster
    assert invoke("sandbox.poweroff", "vps9").code == 0
    try:
        etcdctl(sandbox, addresses["vps7"], "put vigil/e2e one-member-down")
        assert etcdctl(sandbox, addresses["vps8"], "get vigil/e2e --print-value-only").strip() == "one-member-down"
        assert invoke("sandbox.poweroff", "vps8").code == 0
        # One member of three is no majority: the write is refused, and a linearizable read too.
        refused = etcdctl(sandbox, addresses["vps7"], "put vigil/e2e alone", check=False)
        assert "OK" not in refused.split(), refused
        stale = etcdctl(sandbox, addresses["vps7"], "get vigil/e2e --print-value-only", check=False)
        assert "one-member-down" not in stale, stale
    finally:
        for name in ("vps8", "vps9"):
            invoke("sandbox.poweron", name, timeout=600)
    # Back together: every member healthy again. The refused write was never acknowledged, and its fate is
    # etcd's to decide (a proposal the lone member had logged may commit once the others are back, as Raft
    # allows for a write that timed out); what was acknowledged is never lost, and writes are taken again.
    health = etcdctl(sandbox, addresses["vps7"], "endpoint health --cluster", check=False)
    for _ in range(30):
        if health.count("is healthy") == 3:
            break
        time.sleep(2)
        health = etcdctl(sandbox, addresses["vps7"], "endpoint health --cluster", check=False)
    assert health.count("is healthy") == 3 and "unhealthy" not in health, health
    assert etcdctl(sandbox, addresses["vps9"], "get vigil/e2e --print-value-only").strip() in ("one-member-down",
                                                                                              "alone")
    etcdctl(sandbox, addresses["vps8"], "put vigil/e2e together-again")
    assert etcdctl(sandbox, addresses["vps9"], "get vigil/e2e --print-value-only").strip() == "together-again"
