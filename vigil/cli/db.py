"""db: the database cluster (three or more database hosts under Patroni): its status, a planned
switchover, a failover when no member leads, and rebuilding a diverged member. docs/ha.md."""

from __future__ import annotations

import sys

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.table import Table

from vigil.cli.common import HOST_FLAGS_HELP, exits_cleanly
from vigil.core.errors import ConfigError, ExitCode
from vigil.core.inventory import load_inventory
from vigil.core.output import Reporter
from vigil.database.cluster import Cluster, ClusterStatus
from vigil.database.levers import failover as fail_over
from vigil.database.levers import reinit as rebuild
from vigil.database.levers import switchover as switch_over

YES_HELP = "Do not ask for confirmation."


def confirm(what: str, env: str, yes: bool, reporter: Reporter) -> None:
    """A change of the cluster: --yes, or the env's name typed at a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{what}: pass --yes to confirm (no terminal to ask on)")
    if reporter.prompt(f"{what}. Type {env!r} to go on: ").strip() != env:
        raise ConfigError("not confirmed; nothing was changed")


def status_table(env: str, status: ClusterStatus) -> Table:
    table = Table(title=f"{env}: database cluster {status.scope}")
    for column in ("member", "role", "state", "timeline", "lag (MB)"):
        table.add_column(column)
    for member in status.members:
        style = "green" if member.leads or member.state == "streaming" else "red"
        table.add_row(member.name, member.role, f"[{style}]{member.state}[/{style}]",
                      "" if member.timeline is None else str(member.timeline),
                      "" if member.lag_mb is None else f"{member.lag_mb:g}")
    if not status.members:
        for name, view in status.own.items():
            table.add_row(name, f"({view.role}, its own view)", f"[red]{view.state}[/red]",
                          "" if view.timeline is None else str(view.timeline), "")
    return table


@task(help={"env": HOST_FLAGS_HELP["env"], "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def status(c, env="sandbox", json=False):
    """The cluster's members: who leads, who is the synchronous standby, each one's state, timeline and lag,
    and what is wrong. Each member is asked once, all at the same time.

    Exits 0 for a healthy cluster, 2 when something is wrong.
    Example: invoke db.status --env=production
    """
    found = Cluster.of(load_inventory(env), "db.status").status()
    reporter = Reporter()
    problems = found.problems()
    if json:
        reporter.document({"env": env, "scope": found.scope, "leader": found.leader.name if found.leader else None,
                           "members": [vars(member) for member in found.members],
                           "own": {name: vars(view) for name, view in found.own.items()},
                           "unreachable": found.unreachable, "problems": problems})
    else:
        reporter.table(status_table(env, found))
        for problem in problems:
            reporter.line(f"problem: {problem}")
        if not problems:
            reporter.line(f"healthy: {found.leader.name} leads, every member streams from it")
    if problems:
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={"env": HOST_FLAGS_HELP["env"], "to": "The member to lead (a replica streaming from the leader).",
            "yes": YES_HELP})
@exits_cleanly
def switchover(c, to, env="sandbox", yes=False):
    """A planned change of leader: the leader hands over to --to once it has every write, and steps down to
    follow it. Writes pause for a few seconds; the app reconnects through HAProxy by itself.

    Example: invoke db.switchover --to=db2 --env=production
    """
    cluster = Cluster.of(load_inventory(env), "db.switchover")
    reporter = Reporter()
    confirm(f"The {env} database's leader changes to {to}", env, yes, reporter)
    switch_over(cluster, to, reporter.line)


@task(help={"env": HOST_FLAGS_HELP["env"], "to": "The member to lead (default: the synchronous standby, "
                                                 "else the replica least behind).", "yes": YES_HELP})
@exits_cleanly
def failover(c, env="sandbox", to=None, yes=False):
    """Make a replica lead when no member does (Patroni promotes one by itself when the leader is lost; this
    is for when it did not: a paused cluster, or every candidate lagging). Refused while a leader runs.

    Example: invoke db.failover --env=production --to=db3
    """
    cluster = Cluster.of(load_inventory(env), "db.failover")
    reporter = Reporter()
    confirm(f"A replica of the {env} database takes over as leader", env, yes, reporter)
    fail_over(cluster, to, reporter.line)


@task(help={"env": HOST_FLAGS_HELP["env"], "host": "The member to rebuild (never the leader).", "yes": YES_HELP})
@exits_cleanly
def reinit(c, host, env="sandbox", yes=False):
    """Rebuild a member whose data diverged from the leader's (after a split, a failed rewind): its data is
    discarded and copied anew from the leader, and it streams again.

    Example: invoke db.reinit db3 --env=production
    """
    cluster = Cluster.of(load_inventory(env), "db.reinit")
    reporter = Reporter()
    confirm(f"{host}'s copy of the {env} database is discarded and copied anew from the leader", env, yes, reporter)
    rebuild(cluster, host, reporter.line)


ns = Collection("db")
ns.add_task(status)
ns.add_task(switchover)
ns.add_task(failover)
ns.add_task(reinit)
