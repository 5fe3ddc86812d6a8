"""vigil.database: the cluster's status read from each member's two views, what is wrong with it, and the
levers' refusals (each names why and runs nothing)."""

from __future__ import annotations

import json

import pytest

from tests.support.inventories import layout
from vigil.core.errors import ConfigError
from vigil.core.fanout import Unreachable
from vigil.database.cluster import BREAK, Cluster, ClusterError, ClusterStatus, Member, OwnView, parse_status
from vigil.database.levers import best_candidate, failover, reinit, switchover

MEMBERS = ["db1", "db2", "db3"]
HEALTHY = [{"Cluster": "together-pray", "Member": "db1", "Host": "10.0.0.1", "Role": "Leader", "State": "running",
            "TL": 3},
           {"Cluster": "together-pray", "Member": "db2", "Host": "10.0.0.2", "Role": "Sync Standby",
            "State": "streaming", "TL": 3, "Lag in MB": 0},
           {"Cluster": "together-pray", "Member": "db3", "Host": "10.0.0.3", "Role": "Replica", "State": "streaming",
            "TL": 3, "Lag in MB": 0}]


def views(rows, own=None) -> str:
    return json.dumps(rows) + "\n" + BREAK + "\n" + json.dumps(own or {"role": "replica", "state": "running"})


def test_the_cluster_view_comes_from_the_first_member_that_read_it_and_each_member_says_its_own():
    status = parse_status("together-pray", MEMBERS, {
        "db1": Unreachable("connection refused"),
        "db2": "null\n" + BREAK + "\n" + json.dumps({"role": "replica", "state": "running", "timeline": 3}),
        "db3": views(HEALTHY, {"role": "replica", "state": "streaming", "timeline": 3}),
    })
    assert [member.name for member in status.members] == MEMBERS
    assert status.leader.name == "db1" and status.members[1].synchronous and status.members[2].lag_mb == 0
    assert status.own["db2"] == OwnView("replica", "running", 3)
    assert status.problems() == ["db1 did not answer: connection refused"]


def status_with(*changes, own=None) -> ClusterStatus:
    rows = [dict(row) for row in HEALTHY]
    for index, key, value in changes:
        rows[index][key] = value
    members = [Member(row["Member"], row["Role"], row["State"], row.get("TL"), row.get("Lag in MB")) for row in rows]
    return ClusterStatus("together-pray", MEMBERS, members, own or {})


@pytest.mark.parametrize("status, problems", [
    (status_with(), []),
    (status_with((0, "State", "stopped")), ["no member leads: writes are refused (`invoke db.failover` once one can)",
                                            "db1 is stopped"]),
    (status_with((2, "State", "starting")), ["db3 is starting"]),
    (status_with((2, "Lag in MB", 40)), ["db3 is 40 MB behind the leader"]),
    (status_with((2, "State", "running")), ["db3 runs but does not stream from the leader"]),
    (ClusterStatus("together-pray", MEMBERS, [], {"db1": OwnView("replica", "running"),
                                                  "db2": OwnView("replica", "running")}),
     ["no member can read the cluster from etcd (no quorum?): none takes writes"]),
])
def test_what_is_wrong_with_the_cluster_is_said_a_sentence_each(status, problems):
    assert status.problems() == problems


class FakeCluster(Cluster):
    """The levers' view of a cluster whose status is given, recording what would be run on which member."""

    def __init__(self, *statuses: ClusterStatus):
        inventory = layout({"web": ["web1"], "db": MEMBERS},
                           private={"db1": "10.0.0.1", "db2": "10.0.0.2", "db3": "10.0.0.3"})
        super().__init__(inventory, [inventory.hosts[name] for name in MEMBERS], "together-pray",
                         "/etc/patroni/17-main.yml")
        object.__setattr__(self, "statuses", list(statuses))
        object.__setattr__(self, "ran", [])

    def status(self) -> ClusterStatus:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def run_on(self, preferred, command, timeout=120):
        self.ran.append((preferred[0], command.argv[3:]))
        return ""


def led_by(name: str) -> ClusterStatus:
    roles = {name: ("Leader", "running")}
    members = [Member(member, *roles.get(member, ("Sync Standby" if member == "db3" else "Replica", "streaming")), 4)
               for member in MEMBERS]
    return ClusterStatus("together-pray", MEMBERS, members)


def test_a_switchover_to_the_synchronous_standby_runs_patronictl_on_it_and_waits_until_it_leads():
    cluster = FakeCluster(status_with((1, "Role", "Replica"), (2, "Role", "Sync Standby")), led_by("db3"))
    said = []
    switchover(cluster, "db3", said.append)
    assert cluster.ran == [("db3", ("switchover", "together-pray", "--leader", "db1", "--candidate", "db3",
                                    "--force"))]
    assert said[-1].startswith("db3 leads")


@pytest.mark.parametrize("lever, status, error, message", [
    (lambda c: switchover(c, "db9", print), status_with(), ConfigError, "--to: 'db9' is not a member"),
    (lambda c: switchover(c, "db3", print), status_with(), ConfigError, "not the synchronous standby \\(db2\\)"),
    (lambda c: switchover(c, "db2", print), status_with((1, "State", "starting")), ConfigError, "db2 is starting"),
    (lambda c: switchover(c, "db2", print), status_with((0, "State", "stopped")), ConfigError, "use `invoke db.fail"),
    (lambda c: failover(c, None, print), status_with(), ConfigError, "db1 leads: a failover is for a cluster"),
    (lambda c: failover(c, None, print), ClusterStatus("together-pray", MEMBERS, []), ClusterError, "without a quorum"),
    (lambda c: reinit(c, "db1", print), status_with(), ConfigError, "db1 leads: its data is the cluster's"),
])
def test_a_lever_refused_says_why_and_runs_nothing(lever, status, error, message):
    cluster = FakeCluster(status)
    with pytest.raises(error, match=message):
        lever(cluster)
    assert cluster.ran == []


def test_a_failover_picks_the_synchronous_standby_before_a_replica_less_behind():
    lost = status_with((0, "State", "stopped"), (1, "Lag in MB", 2), (2, "Lag in MB", 0))
    assert best_candidate(lost).name == "db2"
    cluster = FakeCluster(lost, led_by("db2"))
    failover(cluster, None, print)
    assert cluster.ran == [("db2", ("failover", "together-pray", "--candidate", "db2", "--force"))]


@pytest.mark.parametrize("status, levels, first_line", [
    (status_with(), {"ok"}, "leader, running, timeline 3"),
    (status_with((2, "Lag in MB", 40)), {"warn"}, "leader, running, timeline 3; db3 is 40 MB behind the leader"),
    (status_with((0, "State", "stopped")), {"fail"}, "leader, stopped, timeline 3; no member leads"),
    (ClusterStatus("together-pray", MEMBERS, [], {"db1": OwnView("replica", "running")}), {"fail"},
     "replica (running), by its own account; no member can read the cluster from etcd"),
])
def test_incident_status_gives_each_member_a_cluster_line_saying_what_is_wrong_everywhere(status, levels,
                                                                                           first_line):
    from vigil.incident.status_rules import cluster_checks  # noqa: PLC0415 (incident's rule, tested with the status)
    checks = cluster_checks(status)
    assert sorted(checks) == MEMBERS and {check.state for check in checks.values()} == levels
    assert checks["db1"].detail.startswith(first_line), checks["db1"].detail
