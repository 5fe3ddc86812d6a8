"""incident: what is wrong at a glance (`incident.status`) and maintenance mode (`incident.maintenance`)."""

from __future__ import annotations

import json as jsonlib

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.markup import escape
from rich.table import Table

from vigil import incident as I
from vigil.commands import REDACTOR
from vigil.config import load_inventory
from vigil.errors import ConfigError, ExitCode
from vigil.play import run_plans
from vigil.report import Reporter, table_console
from vigil.runner import HostPlan, RunOptions
from vigil.tasks.common import HOST_FLAGS_HELP, exits_cleanly

STYLE = {I.OK: "green", I.WARN: "yellow", I.FAIL: "red"}


@task(help={"env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"], "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def status(c, env="sandbox", limit=None, json=False):
    """One screen per environment: each host's services, releases, health over HTTPS, disk, memory, load,
    certificate, backups, failed units, and an overall verdict.

    Exits 0 when healthy or only degraded (warnings), 2 when something fails, 4 when a host is unreachable.
    Example: invoke incident.status --env=production
    """
    reports = I.gather(env, limit)
    worst = "unreachable" if any(r.unreachable for r in reports) else \
        "unhealthy" if any(r.verdict == "unhealthy" for r in reports) else \
        "degraded" if any(r.verdict == "degraded" for r in reports) else "healthy"
    if json:
        print(jsonlib.dumps(REDACTOR.redact_data({
            "env": env, "verdict": worst,
            "hosts": [{"host": r.host, "roles": r.roles, "verdict": r.verdict, "unreachable": r.unreachable,
                       "checks": [{"name": c.name, "state": c.state, "detail": c.detail} for c in r.checks]} for r in reports],
        }), indent=2))
    else:
        console = table_console()
        for report in reports:
            table = Table(title=f"{report.host} ({', '.join(report.roles) or 'other'}): {report.verdict}")
            for column in ("check", "state", "detail"):
                table.add_column(column)
            if report.unreachable:
                table.add_row("ssh", "[red]fail[/]", escape(REDACTOR.redact(report.unreachable)))
            for check in report.checks:
                table.add_row(check.name, f"[{STYLE[check.state]}]{check.state}[/]", escape(REDACTOR.redact(check.detail)))
            console.print(table)
        console.print(f"{env}: [bold]{worst}[/]")
    if worst == "unreachable":
        raise Exit(code=int(ExitCode.UNREACHABLE))
    if worst == "unhealthy":
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={"state": "on or off.", "env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"],
            "check": HOST_FLAGS_HELP["check"], "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def maintenance(c, state, env="sandbox", limit=None, check=False, json=False):
    """Maintenance mode on the web hosts: nginx answers 503 with the maintenance page and Retry-After;
    the app keeps running (a restore, a long migration).

    Example: invoke incident.maintenance on --env=production
    """
    if state not in ("on", "off"):
        raise ConfigError(f"state: {state!r} is not on or off")
    inventory = load_inventory(env)
    hosts = [host for host in inventory.select(limit) if host.name in inventory.hosts_in("web", where="incident.maintenance")]
    if not hosts:
        raise ConfigError(f"--limit {limit or 'all'} selects no web host in inventory/{env}.yml")
    plans = [HostPlan(host.as_admin(), I.maintenance_operations(state == "on")) for host in hosts]
    code, _ = run_plans(f"incident.maintenance {state}", inventory, plans, RunOptions(check=check),
                        Reporter(json_output=json, check=check))
    if code != ExitCode.OK:
        raise Exit(code=int(code))


@task(help={"service": "backend, frontend, nginx, postgresql or all (default: all).",
            "since": "From when, as journalctl reads it (default: \"1 hour ago\"; \"2026-11-26 03:00\", \"today\").",
            "lines": "At most this many lines per host (default: 500).",
            "env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"], "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def logs(c, service="all", since="1 hour ago", lines=500, env="sandbox", limit=None, json=False):
    """The journal of a service on every host that runs it, merged by time, secrets masked.

    Example: invoke incident.logs --service=backend --since="30 min ago" --env=production
    """
    services = list(I.SERVICE_UNITS) if service == "all" else [service]
    if not set(services) <= set(I.SERVICE_UNITS):
        raise ConfigError(f"--service: {service!r} is not one of {', '.join(I.SERVICE_UNITS)} or all")
    if not I.SINCE.match(since):
        raise ConfigError(f"--since: {since!r} is not a time journalctl reads (\"1 hour ago\", \"2026-11-26 03:00\")")
    if not str(lines).isdigit() or not 1 <= int(lines) <= 100000:
        raise ConfigError(f"--lines: {lines!r} is not a number from 1 to 100000")
    merged, problems = I.gather_logs(env, services, since, int(lines), limit)
    shown = [I.mask_line(line.render()) for line in merged]
    if json:
        print(jsonlib.dumps({"lines": shown, "unreadable": REDACTOR.redact_data(problems)}, indent=2))
    else:
        for line in shown:
            print(line)
        for host, why in problems.items():
            print(f"{host}: the journal could not be read: {REDACTOR.redact(why)}")
    if problems:
        raise Exit(code=int(ExitCode.HOST_FAILED))


ns = Collection("incident")
for command in (status, maintenance, logs):
    ns.add_task(command)
