"""audit: the security and performance checklists, run against the live hosts.

`audit.security` and `audit.performance`.
"""

from __future__ import annotations

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.markup import escape
from rich.table import Table

from vigil.audit.checklist import Item
from vigil.audit.performance import performance as performance_items
from vigil.audit.security import security as security_items
from vigil.cli.common import HOST_FLAGS_HELP, exits_cleanly
from vigil.core.errors import ConfigError, ExitCode
from vigil.core.output import Reporter
from vigil.core.redaction import REDACTOR


def _show(title: str, env: str, items: list[Item], json: bool) -> None:
    reporter = Reporter()
    failed = [item for item in items if not item.ok]
    if json:
        reporter.document({"env": env, "passed": not failed, "items": [
            {"item": i.name, "host": i.host, "ok": i.ok, "evidence": i.evidence} for i in items]})
    else:
        table = Table(title=f"{title} on {env}")
        for column in ("item", "host", "result", "evidence"):
            table.add_column(column)
        for item in items:
            table.add_row(
                item.name,
                item.host,
                "[green]pass[/]" if item.ok else "[red]FAIL[/]",
                escape(REDACTOR.redact(item.evidence)),
            )
        reporter.table(table)
        reporter.marked(escape(f"{env}: {len(items) - len(failed)} of {len(items)} passed"))
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
    _show("security checklist", env, security_items(env, limit), json)


@task(help={"env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"], "json": HOST_FLAGS_HELP["json"],
            "requests": "Page loads per web host, one after another (default: 20; at most 200).",
            "loads": "First visits of each page in a headless browser, per web host (default: 5; at most 50).",
            "pages": "The pages to load in the browser, comma-separated (default: app_pages, roles/app)."})
@exits_cleanly
def performance(c, env="sandbox", limit=None, json=False, requests=20, loads=5, pages=None):
    """The performance checklist: the frontend page's time to first byte and full HTML (p50, p95), and each
    page's Largest Contentful Paint, load event and bytes in Debian's Chromium (p50, p95, a screenshot in
    .vigil/audit/ENV/), against the 2 s target; compression, cache headers on static assets, database
    connection pooling, and each host's CPU, memory and disk headroom.

    Exits 0 when every item passes, 2 when any fails.
    Example: invoke audit.performance --env=production --requests=50 --loads=10
    """
    for flag, value, most in (("--requests", requests, 200), ("--loads", loads, 50)):
        if not str(value).isdigit() or not 1 <= int(value) <= most:
            raise ConfigError(f"{flag}: {value!r} is not a number from 1 to {most}")
    _show("performance checklist", env, performance_items(env, limit, int(requests), int(loads), pages), json)


ns = Collection("audit")
ns.add_task(security)
ns.add_task(performance)
