"""roles/patroni, roles/haproxy and the cluster's side of roles/postgresql, roles/firewall and secrets.push:
Patroni on each member with the first member's data kept, the others joining as copies; the web hosts
reaching the leader through HAProxy on their loopback, checked against the cluster's CA; and nothing of it
with fewer than three database hosts."""

from __future__ import annotations

import urllib.parse

import pytest
import yaml
from cryptography import x509

from tests.support.inventories import layout
from vigil.core.errors import ConfigError
from vigil.core.playbook import build_host_plans
from vigil.core.topology import Topology
from vigil.operations.files import File
from vigil.operations.guarded import Guarded, HandlerCommands
from vigil.operations.postgresql import PostgresClients, PostgresDatabase, PostgresRole, PostgresSettings
from vigil.vault.derive import cluster_root_certificate, postgresql_url

CLUSTER = {"web": ["web1", "web2"], "db": ["db1", "db2", "db3"]}
PRIVATE = {"web1": "10.0.1.1", "web2": "10.0.1.2", "db1": "10.0.0.1", "db2": "10.0.0.2", "db3": "10.0.0.3"}
SECRETS = {"DB_CLUSTER_SEED": "database-cluster-seed-for-unit-tests-0123", "DB_PASSWORD": "app-password-0123456789ab"}
SINGLE = {"web": ["web1", "web2"], "db": ["db1"]}


def plans(groups=None, host="db1", roles=("patroni",), **cli_vars):
    inventory = layout(groups or CLUSTER, private=PRIVATE)
    return build_host_plans(inventory, "onboard", host, cli_vars, lambda: dict(SECRETS), only_roles=list(roles))


def operations(groups=None, host="db1", roles=("patroni",), **cli_vars):
    found = plans(groups, host, roles, **cli_vars)
    return found[0].operations if found else []


def files(found) -> dict[str, File]:
    return {op.path: op for op in found if isinstance(op, File)}


@pytest.mark.parametrize("role, groups, host", [
    ("patroni", SINGLE, "db1"),      # one database host: PostgreSQL as roles/postgresql sets it up
    ("patroni", CLUSTER, "web1"),    # not a member
    ("haproxy", SINGLE, "web1"),     # no cluster: the app dials the database host itself
    ("haproxy", CLUSTER, "db1"),     # a member that runs no app
])
def test_nothing_is_installed_without_a_cluster_or_off_its_hosts(role, groups, host):
    assert operations(groups, host, (role,)) == []


def test_each_member_runs_patroni_on_its_own_address_with_etcd_and_its_rest_api_over_tls():
    written = files(operations(host="db2"))
    config = yaml.safe_load(written["/etc/patroni/17-main.yml"].content)
    assert written["/etc/patroni/17-main.yml"].secret and written["/etc/patroni/17-main.yml"].mode == "0640"
    assert (config["name"], config["scope"], config["namespace"]) == ("db2", "together-pray", "/vigil/")
    assert config["restapi"]["listen"] == config["restapi"]["connect_address"] == "10.0.0.2:8008"
    assert config["restapi"]["certfile"] == "/etc/patroni/tls/member.crt"
    assert config["etcd3"]["hosts"] == "10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379"
    assert config["etcd3"]["protocol"] == "https"
    assert config["postgresql"]["connect_address"] == "10.0.0.2:5432"
    # Replication and pg_rewind check the leader's certificate against the cluster's CA.
    for purpose in ("replication", "rewind"):
        assert config["postgresql"]["authentication"][purpose]["sslmode"] == "verify-full"
    # The same derived passwords on every member; the REST API's differs from both roles'.
    other = yaml.safe_load(files(operations(host="db3"))["/etc/patroni/17-main.yml"].content)
    passwords = {purpose: config["postgresql"]["authentication"][purpose]["password"]
                 for purpose in ("replication", "rewind")}
    assert passwords == {purpose: other["postgresql"]["authentication"][purpose]["password"] for purpose in passwords}
    assert len({*passwords.values(), config["restapi"]["authentication"]["password"]}) == 3


@pytest.mark.parametrize("members, synchronous_mode, expected", [
    (["db1", "db2", "db3"], "auto", True),
    (["db1", "db2", "db3"], "false", False),
    (["db1", "db2", "db3", "db4", "db5"], "auto", True),
])
def test_synchronous_mode_is_on_by_default_and_kept_in_etcd(members, synchronous_mode, expected):
    groups = {"web": ["web1"], "db": members}
    private = {name: f"10.0.0.{index}" for index, name in enumerate(members, 1)}
    inventory = layout(groups, private={**private, "web1": "10.0.1.1"})
    found = build_host_plans(inventory, "onboard", "db1", {"patroni_synchronous_mode": synchronous_mode},
                             lambda: dict(SECRETS), only_roles=["patroni"])[0].operations
    import json  # noqa: PLC0415 (this test alone)
    dynamic = json.loads(files(found)["/etc/patroni/vigil-dynamic.json"].content)
    assert dynamic["synchronous_mode"] is expected
    assert dynamic["postgresql"]["parameters"]["wal_log_hints"] == "on"  # pg_rewind needs it


def test_the_first_member_brings_its_data_and_the_others_join_as_copies_once():
    hand_overs = {}
    for name in CLUSTER["db"]:
        hand_over = next(op for op in operations(host=name) if isinstance(op, Guarded) and "Patroni runs" in op.name)
        hand_overs[name] = hand_over
    roles = {name: op.commands[0].argv[4 + 5] for name, op in hand_overs.items()}  # sh -c BODY vigil $1..$9
    assert roles == {"db1": "first", "db2": "other", "db3": "other"}
    # The marker names this cluster: a changed member list is another cluster.
    marker, token = hand_overs["db2"].unless.argv[4:6]
    assert marker == "/var/lib/postgresql/17/vigil-cluster-main" and "db1,db2,db3" in token
    body = hand_overs["db2"].commands[0].argv[2]
    # A member empties its data directory only for another system's data, and never one with the app's tables.
    assert '"$own_id" != "$cluster_id"' in body and "refusing to replace it" in body


@pytest.mark.parametrize("join_wait", [1800, 60])
def test_the_hand_over_may_wait_out_its_own_deadline_and_then_some(join_wait):
    """HAND_OVER waits up to patroni_join_wait_seconds by itself, then prints Patroni's journal: the command is
    given that long and a margin, or the SSH timeout (900 s by default) cut it first with no word of why."""
    found = operations(patroni_join_wait_seconds=join_wait)
    hand_over = next(op for op in found if isinstance(op, Guarded) and "Patroni runs" in op.name)
    assert hand_over.commands[0].argv[4 + 7] == str(join_wait)
    assert hand_over.commands[0].timeout == join_wait + 300


def test_the_roles_patroni_logs_in_with_are_checked_without_a_password_on_any_command_line():
    found = operations(host="db1")
    verifiers = files(found)["/etc/patroni/vigil-verifiers"]
    assert (verifiers.mode, verifiers.secret) == ("0600", True)
    assert verifiers.content.decode().count("SCRAM-SHA-256$4096:") == 2
    users = next(op for op in found if isinstance(op, Guarded) and "replicates and rewinds" in op.name)
    shown = users.commands[0].display("root") + users.unless.display("root")
    config = yaml.safe_load(files(found)["/etc/patroni/17-main.yml"].content)
    for secret in (config["postgresql"]["authentication"]["replication"]["password"],
                   *verifiers.content.decode().split()):
        assert secret not in shown


def test_a_ttl_too_short_for_patronis_loop_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="patroni_ttl.*loop_wait \\+ 2 x retry_timeout <= ttl"):
        operations(patroni_ttl=10, patroni_loop_wait=5, patroni_retry_timeout=7)


def test_postgresql_on_a_member_leaves_listening_to_patroni_uses_the_members_certificate_and_writes_on_the_leader():
    found = operations(host="db2", roles=("postgresql",))
    settings = next(op for op in found if isinstance(op, PostgresSettings)).settings
    assert "listen_addresses" not in settings and "max_connections" not in settings and settings["ssl"] == "on"
    assert all(op.leader_only for op in found if isinstance(op, (PostgresRole, PostgresDatabase)))
    clients = next(op for op in found if isinstance(op, PostgresClients))
    assert clients.cluster == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] and clients.addresses == ["10.0.1.1", "10.0.1.2"]
    certificate = x509.load_pem_x509_certificate(files(found)["/etc/postgresql/vigil/server.crt"].content)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(address) for address in names.get_values_for_type(x509.IPAddress)} == {"10.0.0.2", "127.0.0.1"}
    assert "database cluster CA" in certificate.issuer.rfc4514_string()
    # Reloads and restarts go through Patroni's PostgreSQL, not postgresql@.service.
    handlers = plans(host="db2", roles=("postgresql",))[0].handlers
    assert isinstance(handlers["reload postgresql"], HandlerCommands)
    assert isinstance(handlers["restart postgresql"], HandlerCommands)
    # One database host: as before.
    single = operations(SINGLE, host="db1", roles=("postgresql",))
    assert "listen_addresses" in next(op for op in single if isinstance(op, PostgresSettings)).settings


def test_haproxy_on_each_web_host_forwards_loopback_to_the_member_patroni_calls_the_leader():
    written = files(operations(host="web2", roles=("haproxy",)))
    config = written["/etc/haproxy/haproxy.cfg"].content.decode()
    # OPTIONS: Patroni answers with the status alone, so HAProxy never cuts a JSON body off mid-write.
    assert "bind 127.0.0.1:5000" in config and "http-check send meth OPTIONS uri /primary" in config
    assert "http-check send meth OPTIONS uri /replica" in config
    for index in (1, 2, 3):
        assert f"server db{index} 10.0.0.{index}:5432 check verifyhost db{index}" in config
    assert "check-ssl verify required ca-file /etc/haproxy/tls/database-cluster-ca.crt port 8008" in config
    # A refused connection (the old leader's PostgreSQL stopped in a switchover) takes it out at once,
    # and the app's connection fails back to it rather than being held for a retry at the dead member.
    leader = config.split("listen database-leader", 1)[1].split("listen database-replicas", 1)[0]
    assert "on-marked-down shutdown-sessions observe layer4 error-limit 1 on-error mark-down" in leader
    assert "retries 0" in leader
    assert "database cluster CA" in x509.load_pem_x509_certificate(
        written["/etc/haproxy/tls/database-cluster-ca.crt"].content).subject.rfc4514_string()


@pytest.mark.parametrize("groups, host, port, opened", [
    (CLUSTER, "db1", 2379, ["10.0.0.2", "10.0.0.3"]),
    (CLUSTER, "db1", 8008, ["10.0.0.2", "10.0.0.3", "10.0.1.1", "10.0.1.2"]),
    (CLUSTER, "db1", 5432, ["10.0.1.1", "10.0.1.2", "10.0.0.2", "10.0.0.3"]),
    (SINGLE, "db1", 8008, []),
    (SINGLE, "db1", 2379, []),
    (CLUSTER, "web1", 8008, []),
])
def test_the_firewall_opens_the_clusters_ports_between_its_hosts_only(groups, host, port, opened):
    firewall = operations(groups, host, ("firewall",))[0 + 1]
    sources = [rule.split()[2] for rule in firewall.rules if rule.endswith(f"port {port} proto tcp")]
    assert sorted(sources) == sorted(opened)


def test_the_apps_database_url_goes_through_haproxy_on_loopback_checked_against_the_clusters_ca():
    inventory = layout(CLUSTER, private=PRIVATE)
    topology = Topology.read(inventory, {"backend": "web", "frontend": "web"}, "secrets/schema.yml")
    url = urllib.parse.urlsplit(postgresql_url(topology, inventory.hosts["web1"], "p@ss", "/etc/app/db.crt"))
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", 5000, "/together_pray")
    assert dict(urllib.parse.parse_qsl(url.query)) == {"sslmode": "verify-full", "sslrootcert": "/etc/app/db.crt"}
    authority = x509.load_pem_x509_certificate(cluster_root_certificate(SECRETS, "sandbox").encode())
    assert "database cluster CA" in authority.subject.rfc4514_string()
    with pytest.raises(Exception, match="DB_CLUSTER_SEED, which the secrets lack"):
        cluster_root_certificate({}, "sandbox")
