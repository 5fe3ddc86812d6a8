"""roles/etcd: a member on each host of a database group of three or more, TLS only with certificates from
the cluster's own CA, a store emptied once for its cluster, and nothing at all with one database host."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.inventories import layout
from vigil.core.errors import ConfigError
from vigil.core.playbook import build_host_plans
from vigil.operations.files import File
from vigil.operations.guarded import Guarded

CLUSTER = {"web": ["web1"], "db": ["db1", "db2", "db3"]}
PRIVATE = {"db1": "10.0.0.1", "db2": "10.0.0.2", "db3": "10.0.0.3"}
SECRETS = {"DB_CLUSTER_SEED": "database-cluster-seed-for-unit-tests-0123"}


def etcd_plans(groups=None, host="db1", secrets=None, **cli_vars):
    inventory = layout(groups or CLUSTER, private=PRIVATE)
    values = dict(SECRETS if secrets is None else secrets)
    return build_host_plans(inventory, "onboard", host, cli_vars, lambda: values, only_roles=["etcd"])


def etcd_operations(groups=None, host="db1", **cli_vars):
    plans = etcd_plans(groups, host, **cli_vars)
    return plans[0].operations if plans else []


def files(operations) -> dict[str, File]:
    return {op.path: op for op in operations if isinstance(op, File)}


@pytest.mark.parametrize("groups, host", [
    ({"web": ["web1"], "db": ["db1"]}, "db1"),          # one database host: no consensus needed
    ({"web": ["web1"], "db": ["db1", "db2"]}, "db1"),   # two are no cluster either
    (CLUSTER, "web1"),                                  # not a member
])
def test_nothing_is_installed_off_the_cluster(groups, host):
    assert etcd_operations(groups, host) == []


@pytest.mark.parametrize("members", [["db1", "db2", "db3", "db4"], [f"db{n}" for n in range(1, 10)]])
def test_a_cluster_of_an_even_or_too_large_size_is_refused_naming_the_group(members):
    with pytest.raises(ConfigError, match="inventory.*group 'db' has .* hosts; the database cluster needs an odd"):
        etcd_operations({"web": ["web1"], "db": members}, host="db1")


def test_each_member_knows_the_others_at_their_private_addresses_over_tls():
    settings = dict(line.split("=", 1) for line in files(etcd_operations(host="db2"))["/etc/default/etcd"]
                    .content.decode().splitlines() if "=" in line and not line.startswith("#"))
    assert settings["ETCD_NAME"] == "db2"
    assert settings["ETCD_INITIAL_CLUSTER"] == ("db1=https://10.0.0.1:2380,db2=https://10.0.0.2:2380,"
                                                "db3=https://10.0.0.3:2380")
    assert settings["ETCD_LISTEN_CLIENT_URLS"] == "https://10.0.0.2:2379,https://127.0.0.1:2379"
    assert settings["ETCD_CLIENT_CERT_AUTH"] == settings["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert all(not value.startswith("http://") for value in settings.values())
    # One token for the whole cluster, the same on every member.
    tokens = {dict(line.split("=", 1) for line in files(etcd_operations(host=name))["/etc/default/etcd"].content
                   .decode().splitlines() if "=" in line and not line.startswith("#"))["ETCD_INITIAL_CLUSTER_TOKEN"]
              for name in ("db1", "db3")}
    assert tokens == {settings["ETCD_INITIAL_CLUSTER_TOKEN"]}


def test_a_members_certificate_names_its_addresses_and_serves_both_ends():
    written = files(etcd_operations(host="db3"))
    certificate = x509.load_pem_x509_certificate(written["/etc/etcd/tls/member.crt"].content)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("10.0.0.3"),
                                                              ipaddress.ip_address("127.0.0.1")}
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
    ca = x509.load_pem_x509_certificate(written["/etc/etcd/tls/ca.crt"].content)
    certificate.verify_directly_issued_by(ca)
    key = written["/etc/etcd/tls/member.key"]
    assert (key.owner, key.group, key.mode, key.secret) == ("root", "etcd", "0640", True)


def test_the_store_is_emptied_only_for_a_new_cluster_and_the_run_waits_for_every_member():
    operations = etcd_operations()
    bootstrap = next(op for op in operations if isinstance(op, Guarded) and "emptied once" in op.name)
    token = bootstrap.commands[0].argv[-1]
    assert bootstrap.commands[0].argv[-3:] == ("/var/lib/etcd/default", "/var/lib/etcd/vigil-cluster", token)
    assert bootstrap.unless.argv[-2:] == ("/var/lib/etcd/vigil-cluster", token)
    assert "--no-block" in bootstrap.commands[0].argv[2]  # a start waits for a quorum the others bring
    wait = operations[-1]
    assert isinstance(wait, Guarded) and wait.commands[0].argv[-5] == (
        "https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379")
    # Another member list is another cluster: another token, so the store starts anew.
    grown = {**CLUSTER, "db": ["db1", "db2", "db3", "db4", "db5"]}
    inventory = layout(grown, private={**PRIVATE, "db4": "10.0.0.4", "db5": "10.0.0.5"})
    plan = build_host_plans(inventory, "onboard", "db1", {}, lambda: SECRETS, only_roles=["etcd"])[0]
    other = next(op for op in plan.operations if isinstance(op, Guarded) and "emptied once" in op.name)
    assert other.commands[0].argv[-1] != token


def test_a_missing_seed_refuses_the_member_naming_the_secret():
    plan = etcd_plans(secrets={})[0]
    assert plan.operations == [] and "secret DB_CLUSTER_SEED is missing" in plan.refused.reason


def test_an_election_timeout_under_five_heartbeats_is_refused():
    with pytest.raises(ConfigError, match="etcd_election_ms"):
        etcd_operations(etcd_heartbeat_ms=300, etcd_election_ms=1000)
