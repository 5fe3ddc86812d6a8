"""Changing who leads the database cluster, or rebuilding a member: each through patronictl on a member,
checked against the cluster's status first (a refusal names why and changes nothing), and waited for
until the cluster shows it done.
"""

from __future__ import annotations

import time
from typing import Callable

from vigil.core.errors import ConfigError
from vigil.database.cluster import Cluster, ClusterError, ClusterStatus, Member

Say = Callable[[str], None]
# How long a change may take to show in the cluster's status: a promotion takes a few seconds, a rebuilt
# member as long as copying the leader's data.
LEADER_WAIT_SECONDS, REINIT_WAIT_SECONDS = 90, 3600


def switchover(cluster: Cluster, to: str, say: Say) -> float:
    """A planned change of leader to member `to`; the seconds until it led. Refused unless a leader runs and
    `to` streams from it (and, in synchronous mode, is the synchronous standby: only it holds every
    acknowledged write)."""
    target = cluster.host(to, "--to").name
    status = cluster.status()
    leader = status.leader
    if leader is None:
        raise ConfigError("db.switchover hands over from a running leader, and no member leads: "
                          "use `invoke db.failover` (docs/ha.md)")
    if leader.name == target:
        say(f"{target} already leads; nothing to do")
        return 0.0
    candidate = _member(status, target)
    if candidate.state != "streaming":
        raise ConfigError(f"--to: {target} is {candidate.state or 'not listed'}, not a replica streaming from "
                          f"{leader.name}: it cannot take over")
    synchronous = [member.name for member in status.members if member.synchronous]
    if synchronous and target not in synchronous:
        raise ConfigError(f"--to: {target} is not the synchronous standby ({', '.join(synchronous)}); in synchronous "
                          "mode only that one is sure to hold every acknowledged write: switch over to it")
    say(f"switching over: {leader.name} -> {target}")
    started = time.monotonic()
    cluster.run_on([target], cluster.patronictl("switchover", cluster.scope, "--leader", leader.name,
                                                "--candidate", target, "--force"))
    return _until_leading(cluster, target, started, say)


def failover(cluster: Cluster, to: str | None, say: Say) -> float:
    """Make a replica lead when no member does; the seconds until it led. Refused while a leader runs (that
    is a switchover's job) and without an etcd quorum (no member may lead then)."""
    status = cluster.status()
    if not status.quorum:
        raise ClusterError("no member can read the cluster from etcd: without a quorum no member may lead "
                        "(docs/ha.md, Quorum); bring etcd members back first")
    if status.leader is not None:
        raise ConfigError(f"{status.leader.name} leads: a failover is for a cluster without a running leader; "
                          "for a planned change use `invoke db.switchover --to=HOST`")
    if to is not None:
        target = _member(status, cluster.host(to, "--to").name)
    else:
        target = best_candidate(status)
    say(f"failing over to {target.name} ({target.role}, {target.state})")
    started = time.monotonic()
    cluster.run_on([target.name], cluster.patronictl("failover", cluster.scope, "--candidate", target.name,
                                                     "--force"))
    return _until_leading(cluster, target.name, started, say)


def best_candidate(status: ClusterStatus) -> Member:
    """The replica with every acknowledged write (the synchronous standby), else the least behind."""
    replicas = [member for member in status.members if member.state in ("streaming", "running") and not member.leads]
    if not replicas:
        raise ClusterError("no replica runs to take over: " + "; ".join(status.problems()))
    return min(replicas, key=lambda member: (not member.synchronous, member.lag_mb or 0.0))


def reinit(cluster: Cluster, name: str, say: Say) -> float:
    """Replace member `name`'s data with a fresh copy of the leader's (a diverged or broken replica); the
    seconds until it streamed again. Refused for the leader, and without one to copy from."""
    target = cluster.host(name, "host").name
    status = cluster.status()
    if status.leader is None:
        raise ClusterError("no member leads: there is nothing to copy from (`invoke db.status`)")
    if status.leader.name == target:
        raise ConfigError(f"{target} leads: its data is the cluster's; to rebuild it, switch over first "
                          f"(`invoke db.switchover --to=...`)")
    say(f"rebuilding {target} from {status.leader.name} (its own data is discarded)")
    started = time.monotonic()
    cluster.run_on([target], cluster.patronictl("reinit", cluster.scope, target, "--force", "--wait"),
                   timeout=REINIT_WAIT_SECONDS)
    done = cluster.wait_for(lambda now: _state(now, target) == "streaming", REINIT_WAIT_SECONDS, every=2)
    if _state(done, target) != "streaming":
        raise ClusterError(f"{target} is {_state(done, target) or 'not listed'} after its rebuild, not streaming")
    elapsed = time.monotonic() - started
    say(f"{target} streams from {status.leader.name} again ({elapsed:.1f} s)")
    return elapsed


def _member(status: ClusterStatus, name: str) -> Member:
    member = next((member for member in status.members if member.name == name), None)
    if member is None:
        raise ClusterError(f"{name} is not in the cluster's list (is its Patroni running? `invoke db.status`)")
    return member


def _state(status: ClusterStatus, name: str) -> str:
    return next((member.state for member in status.members if member.name == name), "")


def _until_leading(cluster: Cluster, target: str, started: float, say: Say) -> float:
    done = cluster.wait_for(lambda now: now.leader is not None and now.leader.name == target, LEADER_WAIT_SECONDS)
    if done.leader is None or done.leader.name != target:
        raise ClusterError(f"{target} does not lead after {LEADER_WAIT_SECONDS} s: "
                        + ("; ".join(done.problems()) or "another member leads"))
    elapsed = time.monotonic() - started
    say(f"{target} leads ({elapsed:.1f} s)")
    return elapsed
