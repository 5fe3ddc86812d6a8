"""deploy: build releases (`deploy.build`), ship them with no downtime (`deploy.backend`, `deploy.frontend`,
`deploy.all`), go back (`deploy.rollback`) and see what runs where (`deploy.releases`, `deploy.status`)."""

from __future__ import annotations

import re
import time

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.markup import escape
from rich.table import Table

from vigil.cli.common import HOST_FLAGS_HELP, exit_unless_ok, exits_cleanly
from vigil.core.errors import ConfigError, ExitCode, VigilError
from vigil.core.output import Reporter
from vigil.core.redaction import REDACTOR
from vigil.core.runner import RunOptions
from vigil.deploy.build import build as build_artifact
from vigil.deploy.rollout import break_locks, deploy_service, promotable, services_of
from vigil.deploy.status import read_states, release_rows, releases_by_host, status_row, where_served

DEPLOY_HELP = {
    "env": HOST_FLAGS_HELP["env"],
    "limit": HOST_FLAGS_HELP["limit"],
    "ref": "Build and ship this git commit, tag or branch (default: each service's configured ref).",
    "source": "Build from this directory or git URL instead of the service's configured source, for this run.",
    "serial": "Roll through the hosts this many at a time, stopping at the first failure (default: all at once).",
    "lock_wait": "Seconds to wait for another deploy's lock before giving up (default: 0).",
    "verbose": HOST_FLAGS_HELP["verbose"],
    "json": HOST_FLAGS_HELP["json"],
}


@task(help={"env": HOST_FLAGS_HELP["env"], "app": "backend, frontend or all (default: all).",
            "ref": "Build this git commit, tag or branch instead of each service's configured ref.",
            "source": "Build --app from this directory or git URL instead of its configured source."})
@exits_cleanly
def build(c, env="sandbox", app="all", ref=None, source=None):
    """Build release artifacts on this machine (cached by source: the same source is built once).

    Example: invoke deploy.build --app=backend --ref=main
    """
    reporter = Reporter()
    if source is not None and app == "all":
        raise ConfigError("--source: name the service it is the source of with --app")
    sources = services_of(env, ref, (app, source) if source is not None else None)
    if app != "all" and app not in sources:
        raise ConfigError(f"--app: {app!r} is not one of {', '.join(sources)} or all")
    for service, source in sources.items():
        if app in ("all", service):
            artifact = build_artifact(source, echo=reporter.line)
            reporter.line(f"{service} {artifact.id} {artifact.path} sha256:{artifact.sha256[:16]} "
                          f"{'(cached)' if artifact.cached else '(built)'}")


def _deploy(services: list[str], env, limit, ref, serial, lock_wait, verbose, json, source=None) -> None:
    sources = services_of(env, ref, (services[0], source) if source is not None else None)
    reporter = Reporter(json_output=json, verbose=verbose)
    for service in services:
        if service not in sources:
            raise ConfigError(f"{service!r} is not in app_services ({', '.join(sources)})")
        code, artifact, _ = deploy_service(
            env, service, sources[service], limit, RunOptions(serial=int(serial)), reporter, lock_wait=float(lock_wait)
        )
        exit_unless_ok(code)


# A docstring's first line is the task's summary in `invoke --list`, so it cannot wrap.
@task(help=DEPLOY_HELP)
@exits_cleanly
def backend(c, env="sandbox", limit=None, ref=None, serial=0, lock_wait=0, verbose=False, json=False, source=None):
    """Deploy the backend: build once, then on each web host start the idle color, gate on /health, switch, retire the old.

    Example: invoke deploy.backend --env=staging --ref=v1.4.0 --serial=1
    """  # noqa: E501
    _deploy(["backend"], env, limit, ref, serial, lock_wait, verbose, json, source)


@task(help=DEPLOY_HELP)
@exits_cleanly
def frontend(c, env="sandbox", limit=None, ref=None, serial=0, lock_wait=0, verbose=False, json=False, source=None):
    """Deploy the frontend the same way as the backend (health gate on its page).

    Example: invoke deploy.frontend --env=staging
    """
    _deploy(["frontend"], env, limit, ref, serial, lock_wait, verbose, json, source)


@task(name="all", help={key: text for key, text in DEPLOY_HELP.items() if key != "source"})
@exits_cleanly
def all_(c, env="sandbox", limit=None, ref=None, serial=0, lock_wait=0, verbose=False, json=False):
    """Deploy the backend, then the frontend (a failed backend deploy stops before the frontend).

    Example: invoke deploy.all --env=staging
    """
    _deploy(["backend", "frontend"], env, limit, ref, serial, lock_wait, verbose, json)


@task(
    help={
        **{key: text for key, text in DEPLOY_HELP.items() if key not in ("ref", "source")},
        "app": "backend or frontend.",
        "to": "The release id to return to (default: each host's previous good release; `deploy.releases` lists them).",
        "migrations": "First revert the migrations the current release added (after a backup), with its own code.",
        "restore_point": "Instead of down migrations: return the database to the restore point the current release "
                         "made before its migrations, then roll back, all under maintenance mode (needs a backup "
                         "host; every write since is lost, after a safety point).",
        "yes": "With --restore-point: do not ask for confirmation.",
    }
)
@exits_cleanly
def rollback(
    c, app, env="sandbox", limit=None, to=None, migrations=False, restore_point=False, yes=False, serial=0,
    lock_wait=0, verbose=False, json=False
):
    """Return a service to an earlier release, through the same health-gated switch; releases marked bad are skipped.

    Example: invoke deploy.rollback --app=backend --env=production [--migrations | --restore-point]
    """
    sources = services_of(env)
    if app not in sources:
        raise ConfigError(f"--app: {app!r} is not one of {', '.join(sources)}")
    if to is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", to):
        raise ConfigError(f"--to: {to!r} is not a release id")
    if migrations and restore_point:
        raise ConfigError("--migrations and --restore-point both undo the migrations: choose one")
    if to is not None and restore_point:
        raise ConfigError("--to with --restore-point: the release to return to is the one before the restore "
                          "point's; leave --to out")
    reporter = Reporter(json_output=json, verbose=verbose)
    if restore_point:
        _undo_by_restore(env, app, sources[app], limit, int(serial), float(lock_wait), yes, reporter, json)
        return
    code, _, _ = deploy_service(env, app, sources[app], limit, RunOptions(serial=int(serial)), reporter,
                                lock_wait=float(lock_wait), rollback=True, rollback_to=to, revert_migrations=migrations)
    exit_unless_ok(code)


def _undo_by_restore(env, app, source, limit, serial, lock_wait, yes, reporter: Reporter, json: bool) -> None:
    """deploy.rollback --restore-point; with --json, one document: the rollback's hosts and the restore's
    report, or the error that stopped them."""
    # Point-in-time recovery's modules, for this path only: a plain rollback starts without them.
    from vigil.backup.undo import undo_migrations_by_restore  # noqa: PLC0415

    rolling = Reporter.quiet() if json else reporter
    rolled: list = []

    def roll_back():
        code, _, results = deploy_service(env, app, source, limit, RunOptions(serial=serial), rolling,
                                          lock_wait=lock_wait, rollback=True)
        rolled.extend(results)
        return code, results

    try:
        report = undo_migrations_by_restore(env, app, limit, yes, reporter.say, roll_back, prompt=reporter.prompt)
    except VigilError as error:
        if json:
            reporter.document({"rollback": [one.as_dict() for one in rolled], "error": REDACTOR.redact(error.message)})
        raise
    if json:
        reporter.document({"rollback": [one.as_dict() for one in rolled], "restore": report})
    if not all(report["health"].values()):
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={**{key: text for key, text in DEPLOY_HELP.items() if key not in ("ref", "source")},
            "env": "The environment to promote to (default: production).",
            "from_env": "The environment whose serving release is promoted (default: staging).",
            "app": "backend, frontend or all (default: all)."})
@exits_cleanly
def promote(
    c, from_env="staging", env="production", app="all", limit=None, serial=0, lock_wait=0, verbose=False, json=False
):
    """Ship exactly the artifact one environment serves to another (same id, same bytes), through the usual deploy.

    Example: invoke deploy.promote --from-env=staging --env=production
    """
    if from_env == env:
        raise ConfigError(f"--from-env and --env are both {env!r}: promote between two environments")
    sources = services_of(env)
    services = _services(app, env)
    reporter = Reporter(json_output=json, verbose=verbose)
    # Every service's artifact is found before anything ships: a missing one stops the promotion whole.
    artifacts = {service: promotable(from_env, service, sources[service]) for service in services}
    for service in services:
        code, _, _ = deploy_service(env, service, sources[service], limit, RunOptions(serial=int(serial)), reporter,
                                    lock_wait=float(lock_wait), artifact=artifacts[service], promoted_from=from_env)
        exit_unless_ok(code)


def _services(app: str, env: str) -> list[str]:
    sources = services_of(env)
    if app != "all" and app not in sources:
        raise ConfigError(f"--app: {app!r} is not one of {', '.join(sources)} or all")
    return list(sources) if app == "all" else [app]


@task(
    name="releases",
    help={
        "env": HOST_FLAGS_HELP["env"],
        "limit": HOST_FLAGS_HELP["limit"],
        "json": HOST_FLAGS_HELP["json"],
        "app": "backend, frontend or all (default: all).",
    },
)
@exits_cleanly
def releases_(c, env="sandbox", app="all", limit=None, json=False):
    """List each web host's releases: id, ref, when uploaded and deployed, by whom, good or bad, which is current,
    then root's own record of what deploys had it do there (units started/stopped, upstreams switched).

    Example: invoke deploy.releases --env=production --app=backend
    """
    reporter = Reporter()
    unreached, states, settings, trails = read_states(env, _services(app, env), limit, trail=True)
    rows = {host: {service: release_rows(state, settings[host][service]) for service, state in per_host.items()}
            for host, per_host in states.items()}
    if json:
        reporter.document({"env": env, "hosts": rows, "root_trail": trails, "unreachable": unreached})
    else:
        for host, per_host in rows.items():
            for service, releases in per_host.items():
                table = Table(title=f"{service} releases on {host} ({env})")
                for column in ("release", "ref", "uploaded", "by", "deployed", "status", ""):
                    table.add_column(column)
                for row in releases:
                    style = "bold green" if row["current"] else "red" if row["status"] == "bad" else ""
                    table.add_row(
                        row["release"],
                        row["ref"],
                        row["uploaded"],
                        row["by"],
                        row["deployed"],
                        row["status"],
                        ", ".join(row["marks"]),
                        style=style,
                    )
                reporter.table(table)
            reporter.table(trail_table(host, trails.get(host, [])))
        for host, why in unreached.items():
            reporter.marked(f"[red]{escape(host)}: {escape(REDACTOR.redact(why))}[/]")
    if unreached:
        raise Exit(code=int(ExitCode.UNREACHABLE))


# Root's newest trail lines a releases table shows (--json gives all the host keeps for it).
TRAIL_SHOWN = 10


def trail_table(host: str, trail: list[dict]) -> Table:
    """Root's own record of what deploys had it do on `host` (units, upstream switches), newest first."""
    table = Table(title=f"root on {host}: what deploys had it do (newest {min(len(trail), TRAIL_SHOWN)} "
                        f"of {len(trail)}; --json for all)")
    for column in ("time", "by", "helper", "action", "on"):
        table.add_column(column)
    for entry in reversed(trail[-TRAIL_SHOWN:]):
        table.add_row(*(str(entry.get(key, "")) for key in ("time", "by", "helper", "action", "args")))
    return table


@task(help={"env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"], "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def status(c, env="sandbox", limit=None, json=False):
    """What each web host serves now: release and its age, live color, units, lock, last deploy, and what is wrong.

    Exits non-zero when a host is unreachable or a service is not serving as deployed.
    Example: invoke deploy.status --env=production
    """
    reporter = Reporter()
    services = _services("all", env)
    unreached, states, settings, _ = read_states(env, services, limit)
    now = time.time()
    rows = {host: {service: status_row(state, settings[host][service], now) for service, state in per_host.items()}
            for host, per_host in states.items()}
    serving = {
        service: releases_by_host({host: per_host[service] for host, per_host in rows.items() if service in per_host})
        for service in services
    }
    problems = [f"{host} {service}: {problem}" for host, per_host in rows.items() for service, row in per_host.items()
                for problem in row["problems"]]
    problems += [
        f"{service}: the hosts disagree ({where_served(by)})" for service, by in serving.items() if len(by) > 1
    ]
    if json:
        reporter.document(
            {"env": env, "hosts": rows, "serving": serving, "unreachable": unreached, "problems": problems}
        )
    else:
        table = Table(title=f"deploy status on {env}")
        for column in ("host", "service", "release", "age", "live", "blue", "green", "lock", "last deploy"):
            table.add_column(column)
        for host, per_host in rows.items():
            for service, row in per_host.items():
                last = row["last_deploy"]
                lock = row["lock"]
                table.add_row(
                    host,
                    service,
                    row["release"] or "-",
                    row["age"],
                    row["live"],
                    row["units"]["blue"],
                    row["units"]["green"],
                    f"{lock.get('who', '?')} since {lock.get('since', '?')}" if lock else "",
                    " ".join(
                        filter(
                            None,
                            (
                                last.get("time"),
                                last.get("who"),
                                "rollback to" if last.get("rollback") else "",
                                last.get("release"),
                                last.get("result"),
                            ),
                        )
                    ),
                    style="red" if row["problems"] else "",
                )
        for host, why in unreached.items():
            table.add_row(host, "-", "unreachable", "", "", "", "", "", "", style="red")
        reporter.table(table)
        for service, by in serving.items():
            reporter.marked(escape(f"{service}: {where_served(by, unreached)}"))
        for line in problems + [f"{host}: {why}" for host, why in unreached.items()]:
            reporter.marked(f"[red]{escape(REDACTOR.redact(line))}[/]")
    if unreached:
        raise Exit(code=int(ExitCode.UNREACHABLE))
    if problems:
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={"env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"], "json": HOST_FLAGS_HELP["json"],
            "app": "backend, frontend or all (default: all).",
            "force": "Remove the locks (without it: show who holds them).",
            "reason": "Why the lock is broken (required with --force; recorded with who broke it)."})
@exits_cleanly
def unlock(c, env="sandbox", app="all", limit=None, force=False, reason=None, json=False):
    """Break a deploy lock left by a deploy that died; who broke it, whose it was and why go into the history.

    Without --force it only shows who holds each lock. A deploy that is still running
    keeps running: break a lock only when its holder is gone.
    Example: invoke deploy.unlock --env=production --app=backend --force --reason="CI runner killed mid-deploy"
    """
    reporter = Reporter()
    services = _services(app, env)
    if not force:
        unreached, states, _, _ = read_states(env, services, limit)
        held = {host: {service: state.lock for service, state in per_host.items() if state.lock}
                for host, per_host in states.items()}
        held = {host: locks for host, locks in held.items() if locks}
        for host, locks in held.items():
            for service, lock in locks.items():
                reporter.line(f"{host} {service}: held by {lock.get('who', 'unknown')} since {lock.get('since', '?')} "
                              f"(release {lock.get('release', '?')})")
        reporter.line(
            "no deploy lock is held" if not held else "remove with --force --reason=WHY, once that deploy is gone"
        )
        if unreached:
            raise Exit(code=int(ExitCode.UNREACHABLE))
        return
    if not reason or not reason.strip() or len(reason) > 300 or any(ord(ch) < 32 for ch in reason):
        raise ConfigError("--reason: say why the lock is broken (one line, at most 300 characters); it is recorded")
    code, _ = break_locks(env, services, limit, reason.strip(), Reporter(json_output=json))
    exit_unless_ok(code)


ns = Collection("deploy")
for command in (build, backend, frontend, all_, promote, rollback, releases_, status, unlock):
    ns.add_task(command)
