"""monitor: what the monitor host's Prometheus knows (uptime against a target), and its pages."""

from __future__ import annotations

import contextlib
import time
import webbrowser

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.table import Table

from vigil.cli.common import HOST_FLAGS_HELP, exits_cleanly
from vigil.core.errors import ConfigError, ExitCode
from vigil.core.fanout import connect
from vigil.core.inventory import load_inventory
from vigil.core.output import Reporter
from vigil.core.paths import rel
from vigil.core.roles import load_role
from vigil.monitor.analytics import build_and_fetch
from vigil.monitor.prometheus import ALERTMANAGER_PORT, PROMETHEUS_PORT, require_monitor
from vigil.monitor.uptime import uptime as measure_uptime


def duration(seconds: float) -> str:
    """1 h 02 min 05 s, 43 min 12 s, 7 s: how long, for a person."""
    seconds = round(seconds)
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s" if minutes \
        else f"{secs} s"
    return ("-" if seconds < 0 else "") + text


def stamp(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment))


@task(help={"env": HOST_FLAGS_HELP["env"], "days": "How many days back to look (default 30).",
            "target": "The availability to meet, in percent (default: monitoring_uptime_target, 99.9).",
            "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def uptime(c, env="sandbox", days=30.0, target=None, json=False):
    """Each probed service's availability (frontend, backend, SSH, per web host) from the monitor host's
    history, against a target: error budget left and every outage (start, end, duration).

    Exits 0 when every service met the target, 2 when one did not.
    Example: invoke monitor.uptime --env=production --days=30 --target=99.9
    """
    inventory = load_inventory(env)
    monitor = require_monitor(inventory, "monitor.uptime")
    settings = inventory.vars_for(monitor, [load_role("monitoring")])
    interval = settings.integer("monitoring_scrape_interval", minimum=1)
    try:
        target = float(target) if target is not None else float(settings["monitoring_uptime_target"])
        days = float(days)
    except (TypeError, ValueError):
        raise ConfigError(f"--target/--days: expected numbers, got {target!r} and {days!r}") from None
    services = measure_uptime(env, days, target, interval, time.time())
    reporter = Reporter()
    if json:
        reporter.document({"env": env, "days": days, "target": target, "interval_seconds": interval, "services": [{
            "service": s.service, "host": s.host, "availability": round(s.availability, 4), "met": s.met,
            "probes": s.probes, "succeeded": s.succeeded, "observed_seconds": s.observed_seconds,
            "down_seconds": s.down_seconds, "budget_seconds": round(s.budget_seconds, 1),
            "budget_left_seconds": round(s.budget_left_seconds, 1),
            "outages": [{"start": o.start, "end": o.end, "seconds": round(o.seconds, 1)} for o in s.outages],
        } for s in services]})
    else:
        table = Table(title=f"{env}: availability over the last {days:g} days (target {target:g} %)")
        for column in ("service", "host", "availability", "down", "budget left", "outages"):
            table.add_column(column)
        for s in services:
            style = "green" if s.met else "red"
            table.add_row(s.service, s.host, f"[{style}]{s.availability:.3f} %[/{style}]", duration(s.down_seconds),
                          duration(s.budget_left_seconds), str(len(s.outages)))
        reporter.table(table)
        for s in services:
            for outage in s.outages:
                reporter.line(f"outage: {s.service} on {s.host} from {stamp(outage.start)} to {stamp(outage.end)} "
                              f"UTC, {duration(outage.seconds)}")
        if not services:
            reporter.line("no probe history yet: the monitor host has not probed anything in that time")
    if not all(s.met for s in services):
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={"env": HOST_FLAGS_HELP["env"],
            "seconds": "Close the tunnels after this many seconds (default: keep them until Ctrl-C)."})
@exits_cleanly
def open(c, env="sandbox", seconds=None):
    """Reach the monitor host's Prometheus and Alertmanager from this machine: SSH tunnels (pinned host key)
    to http://127.0.0.1:9090 and http://127.0.0.1:9093, which listen on the monitor host's loopback only.

    Example: invoke monitor.open --env=production   (then browse http://127.0.0.1:9093)
    """
    inventory = load_inventory(env)
    monitor = require_monitor(inventory, "monitor.open")
    reporter = Reporter()
    with connect(inventory, monitor, admin=False) as transport, contextlib.ExitStack() as tunnels:
        for name, port in (("Prometheus (API; Debian ships it without its web UI)", PROMETHEUS_PORT),
                           ("Alertmanager", ALERTMANAGER_PORT)):
            tunnels.enter_context(transport.forward_local(port, port))
            reporter.line(f"{name} of {env}: http://127.0.0.1:{port}")
        reporter.line("Ctrl-C closes the tunnels." if seconds is None else f"open for {float(seconds):g} s")
        try:
            deadline = None if seconds is None else time.monotonic() + float(seconds)
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@task(help={"env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"],
            "open": "Open each fetched report in this machine's browser.", "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def analytics(c, env="sandbox", limit=None, open=False, json=False):
    """Each web host's visitor report (GoAccess over its nginx log: visitors, pages, referrers, status codes,
    response times; addresses anonymised), built now and fetched into .vigil/analytics/ENV/.

    Example: invoke monitor.analytics --env=production --open
    """
    fetched = build_and_fetch(env, limit)
    reporter = Reporter()
    if json:
        reporter.document({"env": env, "reports": [{
            "host": r.host, "html": str(r.html), "requests": r.figures.get("total_requests", 0),
            "unique_visitors": r.figures.get("unique_visitors", 0), "from": r.figures.get("start_date", ""),
            "to": r.figures.get("end_date", ""), "top_pages": r.top_pages} for r in fetched.reports],
            "failed": fetched.failed})
    else:
        table = Table(title=f"{env}: visitors (addresses anonymised)")
        for column in ("host", "from", "to", "requests", "unique visitors", "top pages", "report"):
            table.add_column(column)
        for r in fetched.reports:
            table.add_row(r.host, r.figures.get("start_date", ""), r.figures.get("end_date", ""),
                          str(r.figures.get("total_requests", 0)), str(r.figures.get("unique_visitors", 0)),
                          ", ".join(f"{page} ({hits})" for page, hits in r.top_pages[:3]), rel(r.html))
        reporter.table(table)
        for host, why in fetched.failed.items():
            reporter.error(f"{host}: {why}")
    if open:
        for r in fetched.reports:
            webbrowser.open(r.html.as_uri())
    if fetched.failed:
        raise Exit(code=int(ExitCode.HOST_FAILED))


ns = Collection("monitor")
ns.add_task(uptime)
ns.add_task(open)
ns.add_task(analytics)
