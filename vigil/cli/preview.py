"""preview: a branch or pull request served beside its env at its own HTTPS address, with its own database
and secrets (docs/previews.md)."""

from __future__ import annotations

import time

from invoke import Collection, task
from rich.table import Table

from vigil.cli.common import HOST_FLAGS_HELP, exits_cleanly
from vigil.core.audit_log import audit_locally
from vigil.core.errors import ConfigError
from vigil.core.output import Reporter
from vigil.previews import lifecycle

ENV_HELP = {"env": "The env the previews stand beside, whose hosts, data and secrets they derive from "
                   "(default: sandbox).", "json": HOST_FLAGS_HELP["json"]}


@task(help={**ENV_HELP, "branch": "The branch to serve (any name: the preview's is made from it, safely).",
            "pr": "Its pull request's number, kept in the preview's record.",
            "ref": "Build (or, in CI, ship) this commit instead of the branch's head.",
            "worktree": "Build as deploy.build does without --ref: each service's configured source and ref (the "
                        "sandbox's: this checkout's working tree, uncommitted changes included).",
            "source": "SERVICE=PATH_OR_URL: build that service from there instead (deploy.build --source).",
            "at": "A new preview's data: the env's as of this moment (a time, a backup's label, a restore point, or "
                  "latest: backup.branch's --at). Without a backup host: a copy of the live database."})
@exits_cleanly
def up(c, branch=None, env="sandbox", pr=None, ref=None, worktree=False, source=None, at="latest", json=False):
    """Serve BRANCH at https://<name>.<previews_domain>: built once, its own database branched from the env's
    (backup.branch, or a live copy without a backup host), its own secrets, capped units; a preview already
    up is updated (its data kept) and its expiry refreshed.

    Example: invoke preview.up --env=staging --branch=feature/login --pr=42
    """
    if not branch:
        raise ConfigError("preview.up: --branch is required")
    number = None
    if pr is not None:
        if not str(pr).isdigit():
            raise ConfigError(f"--pr: {pr!r} is not a pull request number")
        number = int(pr)
    chosen = None
    if source is not None:
        service, _, where = str(source).partition("=")
        if not service or not where:
            raise ConfigError(f"--source: {source!r}: expected SERVICE=PATH_OR_URL (backend=../app/backend)")
        chosen = (service, where)
    if worktree and ref:
        raise ConfigError("preview.up: --worktree builds each service's configured ref: give it or --ref, not both")
    reporter = Reporter(json_output=json)
    made = lifecycle.up(env, branch, number, ref, reporter, worktree=worktree, source=chosen, at=at)
    audit_locally("preview.up", env, [made["host"]], "ok", preview=made["slug"])
    if json:
        reporter.document(made)
        return
    seconds = made["seconds"]
    reporter.line(f"{made['url']} serves {branch!r} ({'new' if made['created'] else 'updated'}; database "
                  f"{made['database']}: {made['data']}; built in {seconds['build']}s, database {seconds['database']}s, "
                  f"deployed in {seconds['deploy']}s)")


@task(positional=["name"], help={**ENV_HELP, "name": "The preview's name (preview.list).",
                                  "branch": "Or the branch whose preview it is.",
                                  "missing_ok": "A preview that is not there is not an error (CI, when a pull "
                                                "request closes)."})
@exits_cleanly
def down(c, name=None, env="sandbox", branch=None, missing_ok=False, json=False):
    """Remove a preview: its units, site, files, env files, record, database and role; nothing of the env.

    Example: invoke preview.down feature-login-5d41402a --env=staging
    """
    removed = lifecycle.down(env, name, branch, missing_ok)
    audit_locally("preview.down", env, list(removed["removed"]) or ["-"], "ok", preview=removed["slug"])
    reporter = Reporter(json_output=json)
    if json:
        reporter.document(removed)
        return
    what = "; ".join(f"{host}: {', '.join(items)}" for host, items in removed["removed"].items())
    reporter.line(f"{removed['slug']}: removed {what}" if what else f"{removed['slug']}: nothing to remove")


@task(name="list", help=ENV_HELP)
@exits_cleanly
def list_(c, env="sandbox", json=False):
    """Every preview: name, branch, commit, URL, age, expiry and the memory its units use."""
    context = lifecycle.Context.of(env)
    found = lifecycle.list_previews(context)
    reporter = Reporter(json_output=json)
    if json:
        reporter.document(found)
        return
    table = Table(title=f"previews beside {env}")
    for column in ("name", "branch", "commit", "url", "host", "age", "expires", "memory"):
        table.add_column(column)
    now = time.time()
    for host, previews in found.items():
        for preview in previews:
            table.add_row(preview["slug"], preview["branch"], preview.get("commit", "")[:10],
                          f"https://{context.name_of(preview['slug'], host)}", host,
                          f"{(now - preview['created']) / 3600:.1f} h",
                          time.strftime("%Y-%m-%d %H:%M", time.gmtime(preview["expires"])),
                          f"{preview['memory'] / 1048576:.0f} MiB")
    reporter.table(table)


@task(help=ENV_HELP)
@exits_cleanly
def prune(c, env="sandbox", json=False):
    """Remove every preview past its expiry (previews_ttl_days after its last preview.up)."""
    removed = lifecycle.prune(env)
    reporter = Reporter(json_output=json)
    if json:
        reporter.document(removed)
        return
    reporter.line(f"removed {len(removed)} expired preview(s)" + (
        ": " + ", ".join(item["slug"] for item in removed) if removed else ""))


@task(help={**ENV_HELP, "lines": "How many journal lines (default 100)."})
@exits_cleanly
def logs(c, name, env="sandbox", lines=100, json=False):
    """A preview's backend and frontend journal."""
    Reporter().line(lifecycle.logs(env, name, int(lines)), end="")


ns = Collection("preview")
for command in (up, down, prune, logs):
    ns.add_task(command)
ns.add_task(list_, name="list")
