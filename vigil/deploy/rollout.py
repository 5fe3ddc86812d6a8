"""A service to all its hosts: build (or reuse) the artifact, then deploy it host by host, rolling; roll
back; promote what one env serves to another; break a dead deploy's lock."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

from vigil.core.audit_log import append_local_audit, audit_record, operator
from vigil.core.errors import ConfigError, ExitCode
from vigil.core.fanout import Connections, connect
from vigil.core.inventory import Host, load_inventory
from vigil.core.output import Environment, Reporter, exit_code
from vigil.core.paths import LocalState, rel
from vigil.core.roles import load_role
from vigil.core.runner import CHANGED, FAILED, OK, HostPlan, HostResult, OperationResult, RunOptions, run
from vigil.core.topology import inventory_repository_ends
from vigil.deploy.balancer import balancers, out_of_rotation
from vigil.deploy.build import GIT_URL, AppSource, Artifact, app_sources, build, built
from vigil.deploy.executor import HostDeploy
from vigil.deploy.preflight import preflight
from vigil.deploy.safety import DatabaseHost, parse_serving_point, serving_point_command
from vigil.deploy.scripts import APPEND_HISTORY, BREAK_LOCK, as_deploy
from vigil.deploy.settings import Settings, host_settings
from vigil.deploy.state import HostState, parse_json_object
from vigil.deploy.status import read_states, web_hosts
from vigil.vault.schema import load_schema
from vigil.vault.store import load_for_masking


def services_of(env: str, ref: str | None = None, source: tuple[str, str] | None = None) -> dict[str, AppSource]:
    """The env's app services (roles/app defaults, then the inventory's vars), each with its source;
    `ref` (--ref) overrides every service's ref, `source` (service, --source) one service's source.

    Example: services_of("staging", "v1.4.0")["backend"].ref == "v1.4.0"
    """
    inventory, role = load_inventory(env), load_role("app")
    services = inventory.vars.get("app_services", role.defaults["app_services"])
    where = (
        f"{rel(inventory.path)}: vars.app_services"
        if "app_services" in inventory.vars
        else "roles/app/defaults.yml: app_services"
    )
    if source is not None:
        services = with_source(services, where, *source)
    return app_sources(services, where, ref)


def with_source(services: object, where: str, service: str, source: str) -> object:
    """`services` with `service` built from `source` (a directory, taken from where the task runs, or a
    git URL) for this run only: a branch's checkout, a variant.

    Example: with_source(services, where, "backend", "../together-pray-branch/backend")
    """
    if not isinstance(services, dict) or not isinstance(services.get(service), dict):
        raise ConfigError(f"--source: {service!r} is not one of the app's services ({where})")
    if not GIT_URL.match(source):
        path = Path(source).resolve()
        if not (path / "package.json").is_file():
            raise ConfigError(f"--source: {source} has no package.json")
        source = str(path)
    spec = {key: value for key, value in services[service].items() if key != "subdir"}
    return {**services, service: {**spec, "source": source}}


def serving_line(results: list[HostResult], serving: dict[str, str]) -> str:
    """Which hosts serve which release after a (rolling, maybe stopped) deploy: 'r2 on vps1, vps2; r1 on vps3'."""
    by_release: dict[str, list[str]] = {}
    for result in results:
        release = serving.get(result.host) or ("not reached" if result.skipped or result.unreachable else "unknown")
        by_release.setdefault(release, []).append(result.host)
    return "; ".join(f"{release} on {', '.join(hosts)}" for release, hosts in by_release.items())


def deploy_work(settings_for: Callable[[Host], Settings], artifact: Artifact | None, who: str, lock_wait: float,
                rollback: bool = False, rollback_to: str | None = None, database=None, serving: dict | None = None,
                revert_first: str | None = None, rotation=None):
    """The per-host work runner.run calls for a deploy (or, with `rollback`, a return to an earlier release).

    serving: filled with host -> the release it serves once its deploy ended. revert_first: the host
    that reverts the current release's migrations before it rolls back. rotation: host name -> a context
    in which the balancers send it nothing (vigil.deploy.balancer), for a rolling deploy behind them.
    """

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        deploy = HostDeploy(transport, host_plan.host, settings_for(host_plan.host), artifact, who, lock_wait=lock_wait,
                            progress=progress, rollback=rollback, rollback_to=rollback_to, database=database,
                            revert_migrations=host_plan.host.name == revert_first)
        with rotation(host_plan.host.name) if rotation else contextlib.nullcontext():
            result = deploy.deploy()
        if serving is not None:
            serving[host_plan.host.name] = deploy.serving
        return result

    return work


def deploy_service(
    env: str,
    service: str,
    source: AppSource,
    limit: str | None,
    options: RunOptions,
    reporter: Reporter,
    lock_wait: float = 0,
    environment: Environment | None = None,
    rollback: bool = False,
    rollback_to: str | None = None,
    revert_migrations: bool = False,
    artifact: Artifact | None = None,
    promoted_from: str | None = None,
) -> tuple[ExitCode, Artifact | None, list[HostResult]]:
    """Build (or reuse) `service`'s artifact and deploy it to its hosts, rolling by options.serial.

    With `rollback`, nothing is built or shipped: each host returns to `rollback_to` or its previous
    good release through the same health-gated switch. `artifact`: ship this one (a promotion)
    instead of building `source` (`revert_migrations`: the first host first
    reverts, alone, the migrations the current release added). Returns (exit code, artifact or None, host
    results). The hosts are the group the secrets schema runs the service on; each is logged in to
    as the deploy user, never the bootstrap user.
    """
    environment = environment or Environment()
    inventory = load_inventory(env)
    schema = load_schema()
    # Only to mask them: a release's log may quote a value (a URL with its password).
    load_for_masking(env)
    if service not in schema.services:
        raise ConfigError(f"{service!r} is not a service of {schema.path.name} ({', '.join(schema.services)})")
    topology = schema.topology(inventory)
    hosts = service_hosts(env, inventory, schema, service, limit)
    settings = {host.name: host_settings(inventory, host, [service])[0] for host in hosts}
    # Release tasks (migrations) touch the shared database: the first host runs them, alone, before
    # any other host starts the new release; the others skip them.
    first, *rest = hosts
    for host in (hosts if rollback else rest):
        settings[host.name] = dataclasses.replace(settings[host.name], tasks=())
    # None: no database host in the inventory, or several: the app's database is not one vigil runs.
    db = topology.database_or_none()
    database = DatabaseHost(db.name, lambda: connect(inventory, db, admin=False),
                            restore_points=inventory_repository_ends(inventory) is not None, env=env) if db else None
    if revert_migrations:
        for host in hosts:
            if not settings[host.name].migrations_dir or not settings[host.name].revert_task:
                raise ConfigError(f"--migrations: {service} has no migrations to revert on {host.name} "
                                  f"(app_migrations.{service} in roles/app/defaults.yml or the inventory)")
    # The preflight's connections carry the deploy on, unless a build leaves them idle too long (Connections).
    with Connections(inventory, admin=False) as connections:
        preflight(inventory, hosts, settings, lock_wait, connector=connections)
        artifact = None if rollback else artifact or build(source, echo=reporter.say)
        who = operator()
        serving: dict[str, str] = {}
        # Behind balancers, a host a rolling deploy touches leaves their rotation first; all hosts at once
        # stay in it (each host's own blue/green switch keeps serving), or the balancers would have none.
        rolling = 0 < options.serial < len(hosts) and balancers(inventory)
        drain_wait = inventory.vars_for(hosts[0], [load_role("balancer")]).integer("balancer_drain_wait_seconds",
                                                                                   minimum=0) if rolling else 0
        rotation = (lambda name: out_of_rotation(inventory, name, drain_wait)) if rolling else None

        def roll(batch: list[Host], previous: list[HostResult]) -> list[HostResult]:
            if any(result.failed for result in previous):
                now = environment.clock()
                return [
                    HostResult(host.name, skipped="an earlier host failed", started=now, finished=now) for host in batch
                ]
            return run(
                [HostPlan(host, []) for host in batch],
                connections,
                options,
                reporter.progress,
                work=deploy_work(
                    lambda host: settings[host.name],
                    artifact,
                    who,
                    lock_wait,
                    rollback,
                    rollback_to,
                    database,
                    serving,
                    revert_first=first.name if revert_migrations else None,
                    rotation=rotation,
                ),
                stop_after_failure=True,
            )

        results = roll([first], []) if (settings[first.name].tasks or revert_migrations) and rest else []
        results += roll(rest if results else hosts, results)
    code = exit_code(results)
    task = (
        f"deploy.rollback {service}"
        if rollback
        else f"deploy.promote {service}"
        if promoted_from
        else f"deploy.{service}"
    )
    record = audit_record(task, env, [r.host for r in results], code.name.lower(), environment.clock(),
                          sum(r.count(CHANGED) for r in results))
    record["release"] = artifact.id if artifact else (rollback_to or "previous")
    if promoted_from:
        record["promoted_from"] = promoted_from
    append_local_audit(record, environment)
    reporter.recap(f"{task} {record['release']}", env, results, notes={service: serving_line(results, serving)})
    return code, artifact, results


def service_hosts(env: str, inventory, schema, service: str, limit: str | None) -> list[Host]:
    """The hosts `limit` selects of those the secrets schema runs `service` on; ConfigError when none."""
    runs_service = {host.name for host in schema.topology(inventory).app_hosts(service)}
    hosts = [host for host in inventory.select(limit) if host.name in runs_service]
    if not hosts:
        raise ConfigError(f"--limit {limit or 'all'} selects no host of group {schema.services[service].hosts!r} "
                          f"in inventory/{env}.yml")
    return hosts


# The restore points made before a release's migrations ran (deploy/safety.py: kind `migrate`).
MIGRATE = "vigil-migrate-"


def newest_point(points: dict[str, dict | None]) -> tuple[str, dict] | None:
    """(host, record) of the newest restore point made before migrations ran (a release's record of
    another kind, left by an older version, is no way back to before them); None when none has one. A host
    that ran the release's migrations in an earlier deploy keeps that deploy's record beside the release,
    while the host that ran them this time holds this deploy's. (A point's name ends in the UTC time it
    was made, which parse_serving_point checks.)"""
    return max(((host, point) for host, point in points.items() if point and point["name"].startswith(MIGRATE)),
               key=lambda found: found[1]["name"].rsplit("-", 1)[1], default=None)


def serving_restore_point(env: str, service: str, limit: str | None) -> tuple[str, dict]:
    """The restore point the release every host of `service` serves made before its migrations ran, and
    the host whose record says so (newest_point). ConfigError when `limit` leaves a host out (it would
    go on serving that release on the restored database), the hosts serve different releases, or none
    has a record."""
    inventory = load_inventory(env)
    schema = load_schema()
    every = service_hosts(env, inventory, schema, service, None)
    chosen = {host.name for host in service_hosts(env, inventory, schema, service, limit)}
    left_out = [host.name for host in every if host.name not in chosen]
    if left_out:
        raise ConfigError(f"--restore-point: the database is every {service} host's, so --limit must select them "
                          f"all; it leaves out {', '.join(left_out)}")
    serving, points = {}, {}
    for host in every:
        layout = host_settings(inventory, host, [service])[0].layout
        with connect(inventory, host, admin=False) as transport:
            answer = transport.run(serving_point_command(layout.current, layout.releases))
        serving[host.name], points[host.name] = parse_serving_point(answer.stdout) if answer.ok else (None, None)
    if None in serving.values() or len(set(serving.values())) != 1:
        listed = ", ".join(f"{host}: {release or 'nothing'}" for host, release in serving.items())
        raise ConfigError(f"--restore-point: the {service} hosts do not all serve one release ({listed}); "
                          "finish that deploy first")
    found = newest_point(points)
    if found is None:
        raise ConfigError(f"--restore-point: {service} release {next(iter(serving.values()))} made no restore point "
                          "(it ran no migration, or the env had no backup host then); --migrations runs the down "
                          "migrations instead")
    return found


def break_locks(env: str, services: list[str], limit: str | None, reason: str, reporter: Reporter,
                environment: Environment | None = None) -> tuple[ExitCode, dict[str, dict[str, dict]]]:
    """deploy.unlock --force: remove each host's deploy lock of `services`, recording who broke whose lock
    and why in the service's history and the local audit log. Returns (exit code, {host: {service: holder}})."""
    environment = environment or Environment()
    inventory, hosts, settings = web_hosts(env, services, limit)
    who, broken = operator(), {}

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        name = host_plan.host.name
        result = HostResult(name, started=environment.clock())
        for one in settings[name]:
            layout = one.layout
            step = f"Break {layout.service}'s deploy lock."
            answer = transport.run(as_deploy(BREAK_LOCK, layout.lock))
            if not answer.ok:
                op = OperationResult(step, FAILED, error=answer.stderr.strip()[-300:])
                result.error = f"{step}: {op.error}"
            elif answer.stdout.strip() == "@free":
                op = OperationResult(step, OK, summary="not locked")
            else:
                holder = parse_json_object(answer.stdout.strip()) or {"who": "unknown"}
                broken.setdefault(name, {})[layout.service] = holder
                line = (
                    json.dumps(
                        {
                            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(environment.clock())),
                            "who": who,
                            "result": "unlocked",
                            "reason": reason,
                            "holder": holder,
                        }
                    )
                    + "\n"
                )
                transport.run(as_deploy(APPEND_HISTORY, layout.history, stdin=line.encode()))
                op = OperationResult(
                    step,
                    CHANGED,
                    summary=f"held by {holder.get('who', 'unknown')} since "
                    f"{holder.get('since', '?')} (release {holder.get('release', '?')})",
                )
            result.operations.append(op)
            if progress:
                progress(name, op)
        result.finished = environment.clock()
        return result

    results = run([HostPlan(host, []) for host in hosts], lambda host: connect(inventory, host, admin=False),
                  RunOptions(), reporter.progress, work=work)
    code = exit_code(results)
    record = audit_record(f"deploy.unlock {','.join(services)}", env, [r.host for r in results], code.name.lower(),
                          environment.clock(), sum(r.count(CHANGED) for r in results))
    record.update({"reason": reason, "broken": broken})
    append_local_audit(record, environment)
    reporter.recap(f"deploy.unlock {','.join(services)}", env, results)
    return code, broken


def promotable(from_env: str, service: str, source: AppSource, state: LocalState | None = None) -> Artifact:
    """The artifact `from_env`'s web hosts serve for `service`, from the local cache, or rebuilt from its git ref
    (the same commit builds the same id and bytes). Raises ConfigError naming why it cannot be promoted."""
    unreached, states, _, _ = read_states(from_env, [service], None)
    release, meta = served_release(from_env, service, unreached, states)
    artifact = built(service, release, state)
    if artifact is None and meta.get("ref") and meta["ref"] != "worktree":
        artifact = build(dataclasses.replace(source, ref=meta["ref"]), state)
    return checked_artifact(from_env, service, release, meta, artifact)


def served_release(from_env: str, service: str, unreached: dict[str, str],
                   states: dict[str, dict[str, HostState]]) -> tuple[str, dict]:
    """The one release of `service` every host of `from_env` serves, and its metadata; ConfigError when a
    host cannot say, they disagree, a deploy is running or they hold it with different bytes."""
    if unreached:
        raise ConfigError(f"--from-env {from_env}: cannot read what "
                          f"{', '.join(f'{host} ({why})' for host, why in unreached.items())} serves")
    serving = {host: per_host[service].current for host, per_host in states.items()}
    releases = set(serving.values())
    if None in releases or len(releases) != 1:
        listed = ", ".join(f"{host}: {release or 'nothing'}" for host, release in serving.items())
        raise ConfigError(f"--from-env {from_env}: its hosts do not all serve one {service} release ({listed}); "
                          "finish that deploy first")
    release = releases.pop()
    locked = [host for host, per_host in states.items() if per_host[service].lock]
    if locked:
        raise ConfigError(
            f"--from-env {from_env}: a deploy of {service} is running on {', '.join(locked)}; promote once it is done"
        )
    sums = {per_host[service].releases.get(release, {}).get("sha256") for per_host in states.values()}
    if len(sums) != 1:
        raise ConfigError(f"--from-env {from_env}: its hosts hold {release} with different bytes; nothing was promoted")
    return release, next(iter(states.values()))[service].releases.get(release, {})


def checked_artifact(from_env: str, service: str, release: str, meta: dict, artifact: Artifact | None) -> Artifact:
    """`artifact` if it is the very one `from_env` runs (its id and checksum); ConfigError saying why not."""
    if artifact is None:
        raise ConfigError(
            f"{service} release {release} ({from_env}) is not in .vigil/artifacts/{service}/ here, and was "
            "built from a working tree, so it cannot be rebuilt: promote from the machine that built it, "
            "or deploy a git ref (--ref) to both environments"
        )
    if artifact.id != release or (meta.get("sha256") and artifact.sha256 != meta["sha256"]):
        raise ConfigError(
            f"{service}: the artifact built here for {release} ({artifact.id}, sha256 {artifact.sha256[:16]}) "
            f"is not the one {from_env} runs (sha256 {str(meta.get('sha256'))[:16]}); nothing was promoted"
        )
    return artifact
