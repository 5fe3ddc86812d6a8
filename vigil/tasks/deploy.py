"""deploy: build releases (`deploy.build`); shipping them to the hosts builds on this."""

from __future__ import annotations

from invoke import Collection, task

from vigil.build import app_sources, build as build_artifact
from vigil.config import load_inventory, load_role
from vigil.errors import ConfigError
from vigil.tasks.common import HOST_FLAGS_HELP, exits_cleanly


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


ns = Collection("deploy")
ns.add_task(build)
