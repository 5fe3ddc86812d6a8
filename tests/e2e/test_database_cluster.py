"""The layout a team outgrowing one server runs (roles/balancer, roles/etcd, roles/patroni, roles/haproxy,
roles/pgbackrest), on seven more sandbox VPSes from a scratch inventory: vps7 to vps9 the database cluster,
vps10 and vps11 the web hosts, vps12 the balancer, vps13 the backup host. The database hosts form a
three-member etcd over TLS and a Patroni cluster that keeps vps7's data as the first leader's, the others
streaming from it, one synchronously; each web host reaches the leader through HAProxy on its loopback,
with the DATABASE_URL secrets.push derives; visitors reach the app through HAProxy on the balancer;
pgBackRest archives from whichever member leads and backs up from a replica. A second run changes nothing.
Faults, for real, under load: the leader's power cut under a writer that records every acknowledged insert
(a replica leads, the writes resume with no vigil task run, no acknowledged row is lost, the old leader
comes back as a replica); a switchover; a member forced apart and rebuilt; a web host's power cut; a
rolling deploy through the balancer; etcd's quorum lost (the leader demotes itself); etcd members powered
off. Its VPSes are booted apart from the session's (marked `apart`: scripts/test runs it beside them).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest
import requests

from tests.support.acme import local_acme
from tests.support.app_database import (
    APP_LOGIN,
    READER_UNIT,
    STOP_WRITER,
    logged_writes,
    longest_pause,
    reader,
    writer,
)
from tests.support.load import LoadLoop
from tests.support.named_https import session_for
from tests.support.sandbox_hosts import apart_layout, app_database_login, database_url_endpoint, invoke, tcp_probe

MEMBERS = ("vps7", "vps8", "vps9")
WEBS = ("vps10", "vps11")
WEB, BALANCER, BACKUP = WEBS[0], "vps12", "vps13"
LAYOUT = (*MEMBERS, *WEBS, BALANCER, BACKUP)
pytestmark = pytest.mark.apart
CA = Path(__file__).resolve().parents[2] / ".vigil" / "sandbox" / "ca" / "ca.crt"
HOME_PAGE = "Welcome. May this be a place of peace"
DOMAIN = "app.together-pray.test"
# Rows written while vps7 was the only database host, which the cluster must keep.
SEEDED = 1000
PATRONICTL = "patronictl -c /etc/patroni/17-main.yml"
TLS = "--cacert=/etc/etcd/tls/ca.crt --cert=/etc/etcd/tls/member.crt --key=/etc/etcd/tls/member.key"


def etcdctl(sandbox, address: str, arguments: str, check: bool = True, endpoints: str = "https://127.0.0.1:2379"
            ) -> str:
    """etcdctl on the member at `address`, against `endpoints` (its own by default), with its certificate."""
    return sandbox.ssh_at(address, f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} {TLS} "
                                   f"--command-timeout=5s {arguments} 2>&1", check=check)


@pytest.fixture(scope="module")
def sandbox():
    """This module's VPSes, fresh, apart from the session's (tests/support/sandbox_hosts.py)."""
    with apart_layout("database-cluster", f"{LAYOUT[0]}-{LAYOUT[-1]}") as hosts:
        yield hosts


@pytest.fixture(scope="module")
def cluster(sandbox, tmp_path_factory):
    """The layout grown as a team grows it: first one database host (vps7) with the app deployed and rows
    written, then vps8 and vps9 added to group db and provision.server run twice (the cluster forms around
    vps7's data) and the secrets pushed again: (addresses, first run, second run, inventory)."""
    generated = invoke("secrets.generate", "--env=sandbox")  # DB_CLUSTER_SEED, if the secrets lack it
    assert generated.code == 0, generated.stdout + generated.stderr
    addresses = sandbox.addresses
    # One database host, as a small team starts: the app deployed on it, and rows it must keep.
    single = sandbox.scratch_inventory(tmp_path_factory.mktemp("single"), layout_with(MEMBERS[:1]))
    for step in (("provision.server",), ("secrets.push", f"--limit={','.join(WEBS)}"), ("deploy.all",)):
        done = invoke(*step, inventory=single, timeout=2400)
        assert done.code == 0, step + (done.stdout[-4000:], done.stderr)
    sandbox.ssh_at(addresses[WEB], APP_LOGIN)
    app_sql(sandbox, addresses[WEB], f"create table grown_from_one as select generate_series(1, {SEEDED}) as id")
    # Grown: two more database hosts; the cluster forms around vps7's data.
    inventory = sandbox.scratch_inventory(tmp_path_factory.mktemp("cluster"), layout_with(MEMBERS))
    first = invoke("provision.server", "--json", inventory=inventory, timeout=2400)
    assert first.code == 0, not_ok(first)
    second = invoke("provision.server", "--json", inventory=inventory, timeout=1800)
    pushed = invoke("secrets.push", f"--limit={','.join(WEBS)}", inventory=inventory)
    assert pushed.code == 0, pushed.stdout + pushed.stderr
    return addresses, first, second, inventory


def not_ok(run) -> str:
    """What a `--json` provision.server run did not get done: first one line naming each failed host, its
    failed operation and why (a CI log's summary shows a message's first line only), then
    each such host's error and its operations that did not end ok or changed in full (the whole JSON is too
    long to read, and its tail rarely holds the failure)."""
    try:
        hosts = run.json["hosts"]
    except (ValueError, KeyError, TypeError):
        return run.stdout[-4000:] + run.stderr
    failed = [host for host in hosts if host["status"] not in ("ok", "changed")]
    details = [{"host": host["host"], "status": host["status"], "unreachable": host.get("unreachable"),
                "error": host.get("error"),
                "operations": [op for op in host.get("operations", []) if op["status"] == "failed"]}
               for host in failed]
    headline = "; ".join(f"{detail['host']}: {next((op['name'] for op in detail['operations']), detail['status'])} "
                         f"{why(detail)}" for detail in details)
    return f"{headline}\n{json.dumps(details, indent=1)}{run.stderr}"


def why(detail: dict) -> str:
    """A failed host's reason in one line: a lost connection's first (what ran out, and during what), a failed
    command's last (its own message, after the command and its output)."""
    if detail["unreachable"]:
        return detail["unreachable"].splitlines()[0]
    error = (detail["error"] or "").strip()
    return error.splitlines()[-1] if error else ""


def layout_with(databases, balancer_vars=None):
    """An edit of the sandbox's inventory into this module's layout, with `databases` as group db."""
    def edit(data):
        data["hosts"] = {name: data["hosts"][name] for name in LAYOUT}
        data["groups"] = {"db": {"hosts": list(databases)}, "web": {"hosts": list(WEBS)},
                          "lb": {"hosts": [BALANCER]}, "backup": {"hosts": [BACKUP]}}
        data["hosts"][BALANCER].setdefault("vars", {}).update(balancer_vars or {})
    return edit


def members_now(sandbox, address: str) -> dict[str, dict]:
    """patronictl list on the member at `address`: member name -> its row (Role, State, TL, Lag in MB...)."""
    return {row["Member"]: row for row in json.loads(sandbox.ssh_at(address, f"{PATRONICTL} list -f json"))}


def wait_for(condition, seconds: float, every: float = 1.0):
    """condition() until it returns something true, for up to `seconds`; its last answer either way."""
    deadline = time.monotonic() + seconds
    answer = condition()
    while not answer and time.monotonic() < deadline:
        time.sleep(every)
        answer = condition()
    return answer


def test_three_members_form_one_cluster_over_tls_and_a_second_run_changes_nothing(cluster, sandbox):
    addresses, first, second, _ = cluster
    for name in LAYOUT:
        # Growing changes the database hosts (the cluster) and the web hosts (HAProxy to its leader).
        if name in (*MEMBERS, *WEBS):
            assert first.host(name)["status"] == "changed", first.host(name)
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
    # The firewall: a web host, off the database group, cannot even reach the port.
    probe = sandbox.ssh(WEB, f"timeout 5 bash -c 'echo > /dev/tcp/{other}/2379' && echo open || echo closed",
                        check=False)
    assert probe.strip().endswith("closed"), probe


def app_sql(sandbox, address: str, sql: str, check: bool = True) -> str:
    """`sql` as the app's role, from the web host at `address`, through HAProxy to the leader."""
    return sandbox.ssh_at(address, f'psql -w -X -t -A -v ON_ERROR_STOP=1 "$(cat /root/app.conninfo)" '
                                   f"-c {shlex.quote(sql)} 2>&1", check=check).strip()


def leader_of(rows: dict[str, dict]) -> str | None:
    return next((name for name, row in rows.items() if row["Role"] == "Leader" and row["State"] == "running"), None)


def test_patroni_keeps_the_first_members_data_and_the_others_stream_from_it_one_synchronously(cluster, sandbox):
    addresses, *_ = cluster
    rows = members_now(sandbox, addresses["vps8"])
    assert sorted(rows) == list(MEMBERS)
    # vps7 brought its data: it leads, on the first timeline of its own system.
    assert leader_of(rows) == "vps7", rows
    replicas = {name: row for name, row in rows.items() if name != "vps7"}
    assert all(row["State"] == "streaming" for row in replicas.values()), rows
    assert sorted(row["Role"] for row in replicas.values()) == ["Replica", "Sync Standby"], rows
    # The app's database, which roles/postgresql made on vps7 before the cluster, is on every member.
    for name in MEMBERS:
        assert sandbox.ssh_at(addresses[name], "runuser -u postgres -- psql -X -t -A -c " + shlex.quote(
            "select count(*) from pg_database where datname = 'together_pray'")).strip() == "1"
    # The rows written while vps7 was alone are on every member: growing lost nothing.
    for name in MEMBERS:
        assert sandbox.ssh_at(addresses[name], "runuser -u postgres -- psql -X -t -A -d together_pray -c "
                                               "'select count(*) from grown_from_one'").strip() == str(SEEDED)
    # PostgreSQL is Patroni's alone: the distribution's unit for it is masked on every member.
    for name in MEMBERS:
        assert sandbox.ssh_at(addresses[name], "systemctl is-enabled postgresql@17-main.service",
                              check=False).strip() == "masked"


def test_the_web_host_reaches_the_leader_through_haproxy_checking_the_clusters_certificate(cluster, sandbox):
    addresses, *_ = cluster
    web = addresses[WEB]
    assert database_url_endpoint(web).startswith("127.0.0.1:5000/together_pray?sslmode=verify-full&sslrootcert=")
    assert app_database_login(web) == "together_pray|t"
    # The root certificate is the cluster's CA, not a member's own: any member may lead.
    issuer = sandbox.ssh_at(web, "openssl x509 -noout -subject -in /etc/together-pray/database-server.crt")
    assert "database cluster CA" in issuer, issuer
    # A write through it lands on the leader and reaches both replicas.
    sandbox.ssh_at(web, APP_LOGIN)
    app_sql(sandbox, web, "create table if not exists probe_writes (id integer primary key, at timestamptz "
                          "not null default now())")
    app_sql(sandbox, web, "insert into probe_writes (id) values (0) on conflict do nothing")
    for name in MEMBERS:
        count = lambda name=name: sandbox.ssh_at(  # noqa: E731
            addresses[name], "runuser -u postgres -- psql -X -t -A -d together_pray -c "
                             "'select count(*) from probe_writes where id = 0'", check=False).strip() == "1"
        assert wait_for(count, 30), name


def test_the_leader_powered_off_under_writes_a_replica_leads_and_no_acknowledged_row_is_lost(cluster, sandbox):
    addresses, *_ = cluster
    web = addresses[WEB]
    leader = leader_of(members_now(sandbox, addresses["vps8"]))
    assert leader is not None
    survivor = next(name for name in MEMBERS if name != leader)
    sandbox.ssh_at(web, writer(seconds=120))
    try:
        assert wait_for(lambda: sandbox.ssh_at(web, "grep -c ' ok$' /root/writer.log || true").strip() not in
                        ("", "0"), 30)
        time.sleep(3)
        # A power cut: nothing on it shuts down, so its Patroni never gives up the leader lock.
        assert invoke("sandbox.poweroff", leader, "--hard").code == 0
        powered_off = time.time()
        # No vigil task from here on: Patroni promotes a replica, HAProxy finds it, the writer goes on.
        new_leader = wait_for(lambda: leader_of(members_now(sandbox, addresses[survivor])) not in (None, leader)
                              and leader_of(members_now(sandbox, addresses[survivor])), 120, every=2)
        assert new_leader, members_now(sandbox, addresses[survivor])

        def resumed():
            return [write for write in logged_writes(sandbox.ssh_at(web, "cat /root/writer.log"))
                    if write.acknowledged and write.at > powered_off]
        assert wait_for(resumed, 60, every=2), "writes never resumed through HAProxy"
    finally:
        writes = logged_writes(sandbox.ssh_at(web, STOP_WRITER, check=False))
    acknowledged = {write.number for write in writes if write.acknowledged}
    stored = {int(number) for number in app_sql(sandbox, web, "select id from probe_writes where id > 0").split()}
    # Synchronous replication: every insert the leader acknowledged was on a replica before it died.
    assert acknowledged <= stored, sorted(acknowledged - stored)[:20]
    print(f"leader {leader} lost: {new_leader} leads; longest pause between acknowledged writes "
          f"{longest_pause(writes):.1f} s; {len(acknowledged)} acknowledged, {len(writes) - len(acknowledged)} failed")
    # The old leader boots, and Patroni brings it back as a replica of the new one (pg_rewind if it must).
    assert invoke("sandbox.poweron", leader, timeout=600).code == 0
    rejoined = wait_for(lambda: members_now(sandbox, addresses[new_leader]).get(leader, {}).get("State")
                        == "streaming", 240, every=3)
    assert rejoined, members_now(sandbox, addresses[new_leader])
    assert leader_of(members_now(sandbox, addresses[new_leader])) == new_leader


def test_db_status_names_the_leader_the_synchronous_standby_and_each_members_lag(cluster):
    *_, inventory = cluster
    shown = invoke("db.status", "--json", inventory=inventory)
    assert shown.code == 0, shown.stdout + shown.stderr
    status = shown.json
    assert status["problems"] == [] and status["leader"] in MEMBERS
    roles = sorted(member["role"] for member in status["members"])
    assert roles == ["Leader", "Replica", "Sync Standby"]
    assert all(member["lag_mb"] in (0, 0.0) for member in status["members"] if member["role"] != "Leader")
    table = invoke("db.status", inventory=inventory)
    assert table.code == 0 and f"healthy: {status['leader']} leads" in table.stdout


def test_a_planned_switchover_under_load_pauses_writes_briefly_and_fails_no_read_of_the_replicas(cluster, sandbox):
    addresses, *_, inventory = cluster
    web = addresses[WEB]
    before = invoke("db.status", "--json", inventory=inventory).json
    target = next(member["name"] for member in before["members"] if member["role"] == "Sync Standby")
    # Refused without a confirmation, and for a member that is not the synchronous standby.
    unconfirmed = invoke("db.switchover", f"--to={target}", inventory=inventory)
    assert unconfirmed.code == 3 and "pass --yes to confirm" in unconfirmed.stderr
    other = next(member["name"] for member in before["members"] if member["role"] == "Replica")
    refused = invoke("db.switchover", f"--to={other}", "--yes", inventory=inventory)
    assert refused.code == 3 and "not the synchronous standby" in refused.stderr
    sandbox.ssh_at(web, writer(seconds=40))
    sandbox.ssh_at(web, reader(seconds=40, port=5001))
    try:
        time.sleep(8)
        switched = invoke("db.switchover", f"--to={target}", "--yes", inventory=inventory, timeout=300)
        assert switched.code == 0, switched.stdout + switched.stderr
        time.sleep(10)
    finally:
        sandbox.ssh_at(web, f"systemctl stop {READER_UNIT} 2>/dev/null || true", check=False)
        writes = logged_writes(sandbox.ssh_at(web, STOP_WRITER, check=False))
    assert invoke("db.status", "--json", inventory=inventory).json["leader"] == target
    acknowledged = {write.number for write in writes if write.acknowledged}
    pause = longest_pause(writes)
    reads = [line.split() for line in sandbox.ssh_at(web, "cat /root/reader.log").splitlines()]
    failed_reads = [at for at, result in reads if result != "ok"]
    print(f"switchover to {target}: longest write pause {pause:.1f} s, {len(writes) - len(acknowledged)} writes "
          f"refused; {len(reads)} reads of the replicas, {len(failed_reads)} failed")
    assert not failed_reads and len(reads) > 50
    # Every acknowledged write is on the new leader.
    stored = {int(number) for number in app_sql(sandbox, web, "select id from probe_writes").split()}
    assert acknowledged <= stored


def test_pgbackrest_archives_from_whichever_member_leads_and_backs_up_from_a_replica(cluster, sandbox):
    addresses, *_, inventory = cluster
    status = invoke("db.status", "--json", inventory=inventory).json
    if status["leader"] == MEMBERS[0]:  # the repository's first database host: lead from another
        target = next(member["name"] for member in status["members"] if member["role"] == "Sync Standby")
        assert invoke("db.switchover", f"--to={target}", "--yes", inventory=inventory).code == 0
        status = invoke("db.status", "--json", inventory=inventory).json
    leader = status["leader"]
    timeline = next(member["timeline"] for member in status["members"] if member["name"] == leader)
    # The leader's archive check (a WAL segment switched and waited for in the repository) passes; a
    # replica's passes by leaving it to the leader.
    for name in MEMBERS:
        checked = sandbox.ssh_at(addresses[name], "systemctl start vigil-pgbackrest-check.service && echo passed",
                                 check=False)
        assert checked.strip().endswith("passed"), (name, checked)
    info = json.loads(sandbox.ssh_at(addresses[BACKUP], "runuser -u pgbackrest -- pgbackrest --stanza=together-pray "
                                                        "--output=json info"))[0]
    newest_wal = max(archive["max"] for archive in info["archive"])
    assert int(newest_wal[:8], 16) == timeline, (newest_wal, timeline)  # WAL of the new leader's timeline
    # A backup: pgBackRest finds the primary among the members and copies from a standby.
    made = invoke("backup.create", inventory=inventory, timeout=900)
    assert made.code == 0, made.stdout + made.stderr
    log = sandbox.ssh_at(addresses[BACKUP], "tail -n 200 /var/log/pgbackrest/together-pray-backup.log")
    assert "wait for replay on the standby" in log, log[-2000:]


def test_a_member_forced_apart_from_the_leader_is_rebuilt_by_db_reinit(cluster, sandbox):
    addresses, *_, inventory = cluster
    web = addresses[WEB]
    status = invoke("db.status", "--json", inventory=inventory).json
    victim = next(member["name"] for member in status["members"] if member["role"] == "Replica")
    # A split, for real: the replica's Patroni stopped, its PostgreSQL started by hand and promoted, and a
    # row written there that the leader never sees.
    sandbox.ssh_at(addresses[victim], r"""
set -e
systemctl stop patroni@17-main.service
cd /tmp
runuser -u postgres -- /usr/lib/postgresql/17/bin/pg_ctl -D /var/lib/postgresql/17/main -w -o \
    "-c config_file=/etc/postgresql/17/main/postgresql.conf -c listen_addresses=localhost" start >/dev/null
runuser -u postgres -- /usr/lib/postgresql/17/bin/pg_ctl -D /var/lib/postgresql/17/main -w promote >/dev/null
runuser -u postgres -- psql -X -q -d together_pray -c "insert into probe_writes (id) values (-1)"
runuser -u postgres -- /usr/lib/postgresql/17/bin/pg_ctl -D /var/lib/postgresql/17/main -w -m fast stop >/dev/null
systemctl start patroni@17-main.service
""")
    app_sql(sandbox, web, "insert into probe_writes (id) values (-2)")
    unconfirmed = invoke("db.reinit", victim, inventory=inventory)
    assert unconfirmed.code == 3
    leader = invoke("db.reinit", status["leader"], "--yes", inventory=inventory)
    assert leader.code == 3 and "its data is the cluster's" in leader.stderr
    rebuilt = invoke("db.reinit", victim, "--yes", inventory=inventory, timeout=900)
    assert rebuilt.code == 0, rebuilt.stdout + rebuilt.stderr
    assert f"{victim} streams from {status['leader']} again" in rebuilt.stdout
    rows = sandbox.ssh_at(addresses[victim], "runuser -u postgres -- psql -X -t -A -d together_pray -c "
                                             "'select id from probe_writes where id < 0 order by id'").split()
    # The leader's row is there, the split's is gone: its data is the leader's again.
    assert rows == ["-2"], rows
    assert invoke("db.status", inventory=inventory).code == 0


HAPROXY = "socat stdio /run/haproxy/admin.sock"


def servers_up(sandbox, balancer: str) -> dict[str, str]:
    """Each web host's state on the balancer's HAProxy (backend web): name -> UP, DOWN, DRAIN..."""
    table = sandbox.ssh_at(balancer, f'echo "show stat" | {HAPROXY}')
    return {fields[1]: fields[17] for fields in (line.split(",") for line in table.splitlines())
            if len(fields) > 17 and fields[0] == "web" and fields[1] in WEBS}


def test_visitors_reach_the_app_through_the_balancer_which_nginx_trusts_for_their_address(cluster, sandbox):
    addresses, *_ = cluster
    site = f"https://{addresses[BALANCER]}"
    page = requests.get(f"{site}/", verify=str(CA), timeout=10)
    assert page.status_code == 200 and HOME_PAGE in page.text
    health = requests.get(f"{site}/api/health", verify=str(CA), timeout=10)
    assert health.status_code == 200
    # nginx's headers, in one place: they come through the balancer as nginx sets them.
    assert "max-age=" in page.headers["Strict-Transport-Security"] and page.headers["X-Content-Type-Options"]
    assert requests.get(f"http://{addresses[BALANCER]}/", allow_redirects=False, timeout=10).status_code == 301
    # Both web hosts are in the rotation, and each logs the visitor's address, not the balancer's: a
    # client's own X-Forwarded-For is replaced, never believed.
    assert set(servers_up(sandbox, addresses[BALANCER]).values()) == {"UP"}
    marker = f"/api/health?e2e={time.time_ns()}"
    for _ in range(4):
        requests.get(f"{site}{marker}", verify=str(CA), timeout=10, headers={"X-Forwarded-For": "203.0.113.99"})
    lines = [line for name in WEBS for line in sandbox.ssh_at(
        addresses[name], f"grep -h -F {shlex.quote(marker)} /var/log/nginx/access.log || true").splitlines()]
    clients = {line.split()[0] for line in lines}
    assert len(lines) == 4 and clients and addresses[BALANCER] not in clients and "203.0.113.99" not in clients, lines
    # The web hosts take web traffic from the balancer alone.
    for name in WEBS:
        assert tcp_probe(addresses[BALANCER], addresses[name], 443) == "open"
        assert tcp_probe(addresses["vps7"], addresses[name], 443) == "filtered"


def test_a_web_host_powered_off_under_load_leaves_the_rotation_failing_at_most_the_requests_on_it(cluster, sandbox):
    addresses, *_ = cluster
    with LoadLoop(f"https://{addresses[BALANCER]}/", expect=HOME_PAGE, verify=str(CA), max_seconds=120) as load:
        time.sleep(3)
        assert invoke("sandbox.poweroff", "vps11", "--hard").code == 0
        out = wait_for(lambda: servers_up(sandbox, addresses[BALANCER]).get("vps11", "").startswith("DOWN"), 30)
        time.sleep(5)
    print(f"vps11 powered off: {load.result.total} requests through the balancer, {load.result.failed} failed "
          f"({sorted(set(load.result.failures))}), p99 {load.result.percentile(0.99):.0f} ms")
    assert out, servers_up(sandbox, addresses[BALANCER])
    # At most the requests in flight on it when it died (one per client), though retry-on should leave none.
    assert load.result.failed <= load.threads and load.result.ok > 50, load.result.failures[:10]
    assert invoke("sandbox.poweron", "vps11", timeout=600).code == 0
    back = wait_for(lambda: servers_up(sandbox, addresses[BALANCER]).get("vps11") == "UP", 180, every=3)
    assert back, servers_up(sandbox, addresses[BALANCER])


def test_a_rolling_deploy_through_the_balancer_fails_no_request(cluster, sandbox):
    addresses, *_, inventory = cluster
    with LoadLoop(f"https://{addresses[BALANCER]}/", expect=HOME_PAGE, verify=str(CA), max_seconds=600) as load:
        time.sleep(2)
        rolled = invoke("deploy.backend", "--serial=1", inventory=inventory, timeout=900)
        time.sleep(2)
    assert rolled.code == 0, rolled.stdout[-3000:] + rolled.stderr
    print(f"rolling deploy.backend --serial=1: {load.result.total} requests, {load.result.failed} failed, "
          f"p99 {load.result.percentile(0.99):.0f} ms")
    assert load.result.failed == 0 and load.result.ok > 50, load.result.failures[:10]
    # Both hosts are back in the rotation, none left drained.
    assert set(servers_up(sandbox, addresses[BALANCER]).values()) == {"UP"}


def test_without_an_etcd_quorum_the_leader_demotes_itself_rather_than_run_alone(cluster, sandbox):
    addresses, *_, inventory = cluster
    web = addresses[WEB]
    leader = wait_for(lambda: leader_of(members_now(sandbox, addresses["vps7"])), 60)
    others = [name for name in MEMBERS if name != leader]

    def primaries() -> list[str]:
        """The members whose Patroni says they take writes (GET /primary: 200)."""
        return [name for name in MEMBERS if sandbox.ssh_at(addresses[name], (
            "curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert /etc/patroni/tls/ca.crt "
            f"https://{addresses[name]}:8008/primary"), check=False).strip() == "200"]

    try:
        # One etcd member stopped: two of three are a quorum, the leader keeps its lock and takes writes.
        sandbox.ssh_at(addresses[others[0]], "systemctl stop etcd.service")
        time.sleep(15)
        assert primaries() == [leader]
        assert app_sql(sandbox, web, "insert into probe_writes (id) values (-10) on conflict do nothing"
                       ).startswith("INSERT 0 ")
        # Two stopped: the leader cannot renew its lock, so it stops taking writes; no member does.
        sandbox.ssh_at(addresses[others[1]], "systemctl stop etcd.service")
        assert wait_for(lambda: primaries() == [], 60, every=2), primaries()
        refused = app_sql(sandbox, web, "insert into probe_writes (id) values (-11)", check=False)
        assert not refused.startswith("INSERT 0 "), "a write was taken without an etcd quorum"
        shown = invoke("db.status", inventory=inventory)
        assert shown.code == 2 and "no member can read the cluster from etcd" in shown.stdout, shown.stdout
        # incident.status says it on every member's line; the runbook would fail over, and cannot lead
        # anyone out of a lost quorum (its failover refuses without one).
        status = invoke("incident.status", f"--limit={','.join(MEMBERS)}", inventory=inventory)
        assert status.stdout.count("no member can read the cluster from etcd") >= 3, status.stdout
        dry = invoke("incident.run", "db-failover", "--check", inventory=inventory)
        assert "failover" in dry.stdout, dry.stdout + dry.stderr
    finally:
        for name in others:
            sandbox.ssh_at(addresses[name], "systemctl start --no-block etcd.service", check=False)
    # The quorum back: a leader again, by itself, and writes taken.
    assert wait_for(lambda: len(primaries()) == 1, 120, every=3), primaries()
    assert wait_for(lambda: app_sql(sandbox, web, "insert into probe_writes (id) values (-12) on conflict do nothing",
                                    check=False).startswith("INSERT 0 "), 60, every=2)
    assert invoke("db.status", inventory=inventory).code in (0, 2)  # a replica may still be catching up
    # Once every member streams again, the runbook's first check finds the incident resolved.
    assert wait_for(lambda: invoke("db.status", inventory=inventory).code == 0, 120, every=3)
    resolved = invoke("incident.run", "db-failover", inventory=inventory)
    assert resolved.code == 0, resolved.stdout + resolved.stderr


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


def test_the_balancer_gets_its_certificate_from_certbot_over_http_01_and_renews_it(cluster, sandbox, tmp_path):
    addresses, *_ = cluster
    balancer = addresses[BALANCER]
    with local_acme(BALANCER, tmp_path) as server:
        # The production way to the site's certificate, from the local ACME server: HTTP-01 through HAProxy's
        # port 80 to certbot's standalone server behind it. (The web hosts keep theirs, from the sandbox CA.)
        production = {"nginx_tls": "certbot", "nginx_server_name": DOMAIN, "nginx_certbot_server": server["directory"],
                      "nginx_certbot_ca_certificate": str(CA)}
        (tmp_path / "inventory").mkdir()
        inventory = sandbox.scratch_inventory(tmp_path / "inventory", layout_with(MEMBERS, production))
        first = invoke("provision.server", "--json", f"--limit={BALANCER}", inventory=inventory, timeout=900)
        assert first.code == 0, first.stdout[-4000:] + first.stderr
        second = invoke("provision.server", "--json", f"--limit={BALANCER}", inventory=inventory, timeout=900)
        assert (second.host(BALANCER)["changed"], second.host(BALANCER)["failed"]) == (0, 0), second.host(BALANCER)
        # Visitors get the app, over a certificate for the domain that chains to the ACME server's root.
        root = tmp_path / "acme-root.pem"
        root.write_text(server["root"])
        page = session_for(DOMAIN, balancer).get(f"https://{DOMAIN}/", verify=str(root), timeout=10)
        assert page.status_code == 200 and HOME_PAGE in page.text
        assert "GET /.well-known/acme-challenge/" in sandbox.ssh_at(balancer, "journalctl -t haproxy --no-pager")
        # A renewal runs the whole exchange again through HAProxy, from the server the certificate came from
        # (--server again: a dry run otherwise swaps in Let's Encrypt's staging server).
        renewal_config = sandbox.ssh_at(balancer, f"cat /etc/letsencrypt/renewal/{DOMAIN}.conf")
        assert f"server = {server['directory']}" in renewal_config.splitlines()
        renewal = sandbox.ssh_at(balancer, "certbot renew --dry-run --no-random-sleep-on-renew --server "
                                           f"{shlex.quote(server['directory'])} 2>&1 | tail -3", check=False)
        assert "Congratulations, all simulated renewals succeeded" in renewal, renewal
    timer = sandbox.ssh_at(balancer, "systemctl is-enabled certbot.timer; systemctl is-active certbot.timer")
    assert timer.split() == ["enabled", "active"]
    # What a real renewal runs afterwards: the new certificate becomes HAProxy's, which keeps serving.
    sandbox.ssh_at(balancer, "/etc/letsencrypt/renewal-hooks/deploy/vigil-haproxy-certificate")
    assert session_for(DOMAIN, balancer).get(f"https://{DOMAIN}/api/health", verify=str(root), timeout=10).ok
