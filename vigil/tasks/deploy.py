"""deploy: build releases (`deploy.build`) and ship them with no downtime (`deploy.backend`, `deploy.frontend`, `deploy.all`)."""

from __future__ import annotations

import re

from invoke import Collection, task
from invoke.exceptions import Exit

from vigil.build import app_sources, build as build_artifact
from vigil.config import load_inventory, load_role
from vigil.deploy import deploy_service
from vigil.errors import ConfigError, ExitCode
from vigil.report import Reporter
from vigil.runner import RunOptions
from vigil.tasks.common import HOST_FLAGS_HELP, exits_cleanly

DEPLOY_HELP = {
    "env": HOST_FLAGS_HELP["env"],
    "limit": HOST_FLAGS_HELP["limit"],
    "ref": "Build and ship this git commit, tag or branch (default: each service's configured ref).",
    "serial": "Roll through the hosts this many at a time, stopping at the first failure (default: all at once).",
    "lock_wait": "Seconds to wait for another deploy's lock before giving up (default: 0).",
    "verbose": HOST_FLAGS_HELP["verbose"],
    "json": HOST_FLAGS_HELP["json"],
}


def services_of(env: str, ref: str | None = None):
    """The env's app services (roles/app defaults, then the inventory's vars), each with its source."""
    inventory, role = load_inventory(env), load_role("app")
    services = inventory.vars.get("app_services", role.defaults["app_services"])
    where = f"inventory/{env}.yml: vars.app_services" if "app_services" in inventory.vars else "roles/app/defaults.yml: app_services"
    return app_sources(services, where, ref)


@task(help={"env": HOST_FLAGS_HELP["env"], "app": "backend, frontend or all (default: all).",
            "ref": "Build this git commit, tag or branch instead of each service's configured ref."})
@exits_cleanly
def build(c, env="sandbox", app="all", ref=None):
    """Build release artifacts on this machine (cached by source: the same source is built once).

    Example: invoke deploy.build --app=backend --ref=main
    """
    sources = services_of(env, ref)
    if app != "all" and app not in sources:
        raise ConfigError(f"--app: {app!r} is not one of {', '.join(sources)} or all")
    for service, source in sources.items():
        if app in ("all", service):
            artifact = build_artifact(source, echo=print)
            print(f"{service} {artifact.id} {artifact.path} sha256:{artifact.sha256[:16]} "
                  f"{'(cached)' if artifact.cached else '(built)'}")


def _deploy(services: list[str], env, limit, ref, serial, lock_wait, verbose, json) -> None:
    sources = services_of(env, ref)
    reporter = Reporter(json_output=json, verbose=verbose)
    for service in services:
        if service not in sources:
            raise ConfigError(f"{service!r} is not in app_services ({', '.join(sources)})")
        code, artifact, _ = deploy_service(env, service, sources[service], limit, RunOptions(serial=int(serial)), reporter,
                                           lock_wait=float(lock_wait))
        if code != ExitCode.OK:
            raise Exit(code=int(code))


@task(help=DEPLOY_HELP)
@exits_cleanly
def backend(c, env="sandbox", limit=None, ref=None, serial=0, lock_wait=0, verbose=False, json=False):
    """Deploy the backend: build once, then on each web host start the idle color, gate on /health, switch, retire the old.

    Example: invoke deploy.backend --env=staging --ref=v1.4.0 --serial=1
    """
    _deploy(["backend"], env, limit, ref, serial, lock_wait, verbose, json)


@task(help=DEPLOY_HELP)
@exits_cleanly
def frontend(c, env="sandbox", limit=None, ref=None, serial=0, lock_wait=0, verbose=False, json=False):
    """Deploy the frontend the same way as the backend (health gate on its page).

    Example: invoke deploy.frontend --env=staging
    """
    _deploy(["frontend"], env, limit, ref, serial, lock_wait, verbose, json)


@task(name="all", help=DEPLOY_HELP)
@exits_cleanly
def all_(c, env="sandbox", limit=None, ref=None, serial=0, lock_wait=0, verbose=False, json=False):
    """Deploy the backend, then the frontend (a failed backend deploy stops before the frontend).

    Example: invoke deploy.all --env=staging
    """
    _deploy(["backend", "frontend"], env, limit, ref, serial, lock_wait, verbose, json)


@task(help={**{key: text for key, text in DEPLOY_HELP.items() if key != "ref"}, "app": "backend or frontend.",
            "to": "The release id to return to (default: each host's previous good release; `deploy.releases` lists them)."})
@exits_cleanly
def rollback(c, app, env="sandbox", limit=None, to=None, serial=0, lock_wait=0, verbose=False, json=False):
    """Return a service to an earlier release, through the same health-gated switch; releases marked bad are skipped.

    Example: invoke deploy.rollback --app=backend --env=production
    """
    sources = services_of(env)
    if app not in sources:
        raise ConfigError(f"--app: {app!r} is not one of {', '.join(sources)}")
    if to is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", to):
        raise ConfigError(f"--to: {to!r} is not a release id")
    reporter = Reporter(json_output=json, verbose=verbose)
    code, _, _ = deploy_service(env, app, sources[app], limit, RunOptions(serial=int(serial)), reporter,
                                lock_wait=float(lock_wait), rollback=True, rollback_to=to)
    if code != ExitCode.OK:
        raise Exit(code=int(code))


ns = Collection("deploy")
ns.add_task(build)
ns.add_task(backend)
ns.add_task(frontend)
ns.add_task(all_)
ns.add_task(rollback)
