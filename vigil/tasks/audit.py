"""audit: the security and performance checklists as runs against the live hosts (`audit.security`, `audit.performance`)."""

from __future__ import annotations

import json as jsonlib

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.markup import escape
from rich.table import Table

from vigil import audit as A
from vigil.commands import REDACTOR
from vigil.errors import ConfigError, ExitCode
from vigil.report import table_console
from vigil.tasks.common import HOST_FLAGS_HELP, exits_cleanly


def _show(title: str, env: str, items: list, json: bool) -> None:
    failed = [item for item in items if not item.ok]
    if json:
        print(jsonlib.dumps(REDACTOR.redact_data({"env": env, "passed": not failed, "items": [
            {"item": i.name, "host": i.host, "ok": i.ok, "evidence": i.evidence} for i in items]}), indent=2))
    else:
        console = table_console()
        table = Table(title=f"{title} on {env}")
        for column in ("item", "host", "result", "evidence"):
            table.add_column(column)
        for item in items:
            table.add_row(item.name, item.host, "[green]pass[/]" if item.ok else "[red]FAIL[/]", escape(REDACTOR.redact(item.evidence)))
        console.print(table)
        console.print(f"{env}: {len(items) - len(failed)} of {len(items)} passed")
    if failed:
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={"env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"], "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def security(c, env="sandbox", limit=None, json=False):
    """The security checklist against the live hosts, one line per item with pass or fail and its evidence:
    HTTPS and HSTS, TLS versions, secrets files, CORS, rate limiting, the database port, security headers,
    SSH, firewall, unattended upgrades, backups, certificates, and no plaintext secret in git.

    Exits 0 when every item passes, 2 when any fails.
    Example: invoke audit.security --env=production
    """
    _show("security checklist", env, A.security(env, limit), json)


@task(help={"env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"], "json": HOST_FLAGS_HELP["json"],
            "requests": "Page loads per web host, one after another (default: 20; at most 200)."})
@exits_cleanly
def performance(c, env="sandbox", limit=None, json=False, requests=20):
    """The performance checklist: the frontend page's time to first byte and full HTML (p50, p95) against the
    2 s target, compression, cache headers on static assets, database connection pooling, and each host's
    CPU, memory and disk headroom.

    Exits 0 when every item passes, 2 when any fails.
    Example: invoke audit.performance --env=production --requests=50
    """
    if not str(requests).isdigit() or not 1 <= int(requests) <= 200:
        raise ConfigError(f"--requests: {requests!r} is not a number from 1 to 200")
    _show("performance checklist", env, A.performance(env, limit, int(requests)), json)


ns = Collection("audit")
ns.add_task(security)
ns.add_task(performance)
