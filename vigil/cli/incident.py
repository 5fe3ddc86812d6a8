"""incident: status at a glance, runbooks and their incident records.

Also post-mortems, logs, snapshots and maintenance mode.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.markup import escape
from rich.table import Table

from vigil.cli.common import HOST_FLAGS_HELP, exit_unless_ok, exits_cleanly
from vigil.core.errors import ConfigError, ExitCode, VigilError
from vigil.core.inventory import load_inventory
from vigil.core.local_files import write_private
from vigil.core.output import Reporter
from vigil.core.paths import LocalState
from vigil.core.redaction import REDACTOR, mask_log_line
from vigil.deploy.maintenance import set_maintenance
from vigil.incident import records
from vigil.incident.engine import CHECKED, DECLINED, RESOLVED
from vigil.incident.errors import groups_since, moment, report_lines, tracker_token
from vigil.incident.hosts import EnvHosts
from vigil.incident.logs import SINCE, gather_archive, gather_logs
from vigil.incident.runbooks import load_all
from vigil.incident.runs import read_host_actions, run_runbook
from vigil.incident.services import SERVICE_UNITS
from vigil.incident.snapshot import snapshot as take_snapshot
from vigil.incident.status import gather
from vigil.incident.status_rules import FAIL, OK, WARN
from vigil.monitor.alerts import alert_history
from vigil.vault.error_tracking import errors_site

STYLE = {OK: "green", WARN: "yellow", FAIL: "red"}


@task(help={"env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"], "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def status(c, env="sandbox", limit=None, json=False):
    """One screen per environment: each host's services, releases, health over HTTPS, disk, memory, load,
    certificate, backups, failed units, and an overall verdict.

    Exits 0 when healthy or only degraded (warnings), 2 when something fails, 4 when a host is unreachable.
    Example: invoke incident.status --env=production
    """
    reporter = Reporter()
    reports = gather(env, limit)
    worst = "unreachable" if any(r.unreachable for r in reports) else \
        "unhealthy" if any(r.verdict == "unhealthy" for r in reports) else \
        "degraded" if any(r.verdict == "degraded" for r in reports) else "healthy"
    if json:
        reporter.document(
            {
                "env": env,
                "verdict": worst,
                "hosts": [
                    {
                        "host": r.host,
                        "roles": r.roles,
                        "verdict": r.verdict,
                        "unreachable": r.unreachable,
                        "checks": [{"name": c.name, "state": c.state, "detail": c.detail} for c in r.checks],
                    }
                    for r in reports
                ],
            }
        )
    else:
        for report in reports:
            table = Table(title=f"{report.host} ({', '.join(report.roles) or 'other'}): {report.verdict}")
            for column in ("check", "state", "detail"):
                table.add_column(column)
            if report.unreachable:
                table.add_row("ssh", "[red]fail[/]", escape(REDACTOR.redact(report.unreachable)))
            for check in report.checks:
                table.add_row(
                    check.name, f"[{STYLE[check.state]}]{check.state}[/]", escape(REDACTOR.redact(check.detail))
                )
            reporter.table(table)
        reporter.marked(f"{escape(env)}: [bold]{worst}[/]")
    if worst == "unreachable":
        raise Exit(code=int(ExitCode.UNREACHABLE))
    if worst == "unhealthy":
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={"state": "on or off.", "env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"],
            "check": HOST_FLAGS_HELP["check"], "json": HOST_FLAGS_HELP["json"],
            "incident": "Record it on this incident's timeline (a mitigation)."})
@exits_cleanly
def maintenance(c, state, env="sandbox", limit=None, check=False, json=False, incident=None):
    """Maintenance mode on the web hosts: nginx answers 503 with the maintenance page and Retry-After;
    the app keeps running (a restore, a long migration).

    Example: invoke incident.maintenance on --env=production --incident=20261126-054000-backend-down
    """
    if state not in ("on", "off"):
        raise ConfigError(f"state: {state!r} is not on or off")
    record = _incident_of(env, incident)
    code, failed = set_maintenance(env, state == "on", limit, Reporter(json_output=json, check=check), check=check)
    if record and not check:
        record.add(f"maintenance {state}", "done" if code == ExitCode.OK else "failed",
                   f"failed on {', '.join(failed)}" if failed else f"limit: {limit or 'all web hosts'}", kind="action")
    exit_unless_ok(code)


def _incident_of(env: str, incident: str | None):
    """The named incident record (None if none is named), refused when it is about another env."""
    if not incident:
        return None
    record = records.load_incident(incident)
    if record.data.get("env") != env:
        raise ConfigError(f"incident {record.id} is about {record.data.get('env')}, not {env}")
    return record


@task(help={"id": "The incident (invoke incident.list --incidents).", "text": "What was seen or done, in a sentence.",
            "resolved": "Also mark the incident resolved."})
@exits_cleanly
def note(c, id, text=None, resolved=False):
    """Add a line to an incident's timeline: a mitigation done by hand, a finding, a decision.

    Example: invoke incident.note 20261126-054000-backend-down --text="Scaled the database host to 8 GB."
    """
    record = records.load_incident(id)
    if not text or not text.strip() or len(text) > 1000:
        raise ConfigError("--text: say what was seen or done, in at most 1000 characters")
    record.add("note", "resolved" if resolved else "noted", text.strip(), kind="note")
    if resolved:
        record.data.update(status="resolved", resolved_at=records.utc(time.time()))
        record.save()
    Reporter().line(f"{record.id}: noted" + (" and resolved" if resolved else ""))


@task(help={"service": "backend, frontend, nginx, postgresql or all (default: all; with --archive, every line).",
            "since": "From when, as journalctl reads it (default: \"1 hour ago\"; \"2026-11-26 03:00\", \"today\").",
            "lines": "At most this many lines per host (default: 500).",
            "archive": "Read what the hosts shipped to the monitor host (a host that is down or gone included).",
            "grep": "Only lines that match this pattern (journalctl --grep).",
            "env": HOST_FLAGS_HELP["env"], "limit": HOST_FLAGS_HELP["limit"], "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def logs(c, service="all", since="1 hour ago", lines=500, env="sandbox", limit=None, json=False, archive=False,
         grep=""):
    """The journal of a service on every host that runs it, merged by time, secrets masked.

    With --archive, from the monitor host's copy (roles/journal): the last lines of a host that died.
    Example: invoke incident.logs --service=backend --since="30 min ago" --env=production
             invoke incident.logs --archive --limit=web2 --since="2 hours ago" --env=production
    """
    reporter = Reporter()
    services = list(SERVICE_UNITS) if service == "all" else [service]
    if not set(services) <= set(SERVICE_UNITS):
        raise ConfigError(f"--service: {service!r} is not one of {', '.join(SERVICE_UNITS)} or all")
    if not SINCE.match(since):
        raise ConfigError(f"--since: {since!r} is not a time journalctl reads (\"1 hour ago\", \"2026-11-26 03:00\")")
    if not str(lines).isdigit() or not 1 <= int(lines) <= 100000:
        raise ConfigError(f"--lines: {lines!r} is not a number from 1 to 100000")
    if len(grep) > 200 or "\n" in grep:
        raise ConfigError("--grep: at most 200 characters, on one line")
    if archive:
        merged, problems = gather_archive(env, None if service == "all" else services, since, int(lines), limit, grep)
    else:
        merged, problems = gather_logs(env, services, since, int(lines), limit, grep)
    shown = [mask_log_line(line.render()) for line in merged]
    if json:
        reporter.document({"lines": shown, "unreadable": problems})
    else:
        for line in shown:
            reporter.line(line)
        for host, why in problems.items():
            reporter.line(f"{host}: the journal could not be read: {why}")
    if problems:
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(name="list", help={"incidents": "List the incident records instead of the runbooks."})
@exits_cleanly
def list_(c, incidents=False):
    """The runbooks (playbooks/runbooks/*.yml, each validated), or with --incidents the incident records.

    Example: invoke incident.list
    """
    reporter = Reporter()
    if incidents:
        table = Table(title="incidents (.vigil/incidents)")
        for column in ("id", "env", "opened", "by", "status", "runs"):
            table.add_column(column)
        for record in records.list_incidents():
            table.add_row(
                record.get("id", "?"),
                record.get("env", "?"),
                record.get("opened_at", "?"),
                escape(record.get("opened_by", "?")),
                record.get("status", "?"),
                ", ".join(f"{run['runbook']}: {run.get('outcome', '?')}" for run in record.get("runs", [])),
            )
        reporter.table(table)
        return
    table = Table(title="runbooks (playbooks/runbooks): invoke incident.run NAME [--check] [--yes]")
    for column in ("name", "what it is for", "steps"):
        table.add_column(column)
    for book in load_all():
        table.add_row(
            book.name,
            escape(book.description),
            ", ".join(f"{step.type}{'*' if step.confirm else ''}" for step in book.steps),
        )
    reporter.table(table)
    reporter.marked("* asks before acting (--yes answers for you)")


@task(help={"name": "The runbook (invoke incident.list).", "env": HOST_FLAGS_HELP["env"],
            "yes": "Go on with the steps that ask first, without asking (no terminal: required for them).",
            "check": "Run the checks and say which actions would run; change nothing.",
            "incident": "Add to this incident's timeline instead of opening a new one.",
            "json": HOST_FLAGS_HELP["json"]})
@exits_cleanly
def run(c, name, env="sandbox", yes=False, check=False, incident=None, json=False):
    """Run a runbook: its checks, then its actions where the checks say so, until a check shows the incident
    resolved. Every step goes on the incident's timeline (incident.report renders it).

    Exits 0 when resolved (or, with --check, when the checks ran), 2 when it is not, 3 when a step needed
    confirmation that was not given.
    Example: invoke incident.run backend-down --env=production
    """
    reporter = Reporter()

    def confirm(step) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise ConfigError(
                f"step {step.id} asks first ({step.confirm}): pass --yes to go on (no terminal to ask on)"
            )
        return reporter.prompt(f"{step.confirm} [y/N] ").strip().lower() in ("y", "yes")

    say = (lambda text: None) if json else reporter.line
    outcome_run, record = run_runbook(env, name, check, confirm, say, incident)
    if json:
        reporter.document(
            {
                "runbook": name,
                "env": env,
                "incident": record.id if record else None,
                "outcome": outcome_run.outcome,
                "check": check,
                "steps": [
                    {
                        "id": r.step.id,
                        "type": r.step.type,
                        "kind": r.step.kind,
                        "outcome": r.outcome,
                        "detail": r.detail,
                        "failing": [f"{f.host} {f.target}" for f in r.failing],
                    }
                    for r in outcome_run.results
                ],
            }
        )
    else:
        reporter.line(
            f"{name}: {outcome_run.outcome}"
            + (f" (incident {record.id}; invoke incident.report {record.id})" if record else "")
        )
    if outcome_run.outcome == DECLINED:
        raise Exit(code=int(ExitCode.BAD_INPUT))
    if outcome_run.outcome not in (RESOLVED, CHECKED):
        raise Exit(code=int(ExitCode.HOST_FAILED))


@task(help={"id": "The incident (invoke incident.list --incidents).",
            "output": "Write the post-mortem here (default: .vigil/incidents/<id>/postmortem.md).",
            "force": "Replace a post-mortem already written there (it may hold what people filled in)."})
@exits_cleanly
def report(c, id, output=None, force=False):
    """A post-mortem in Markdown: summary, impact window (from the monitor host's alerts), timeline,
    actions taken, and the sections left to fill.

    Example: invoke incident.report 20261126-054000-backend-down
    """
    reporter = Reporter()
    record = records.load_incident(id)
    env = record.data["env"]
    hosts = EnvHosts(env, record, lambda text: None)
    opened = records.parse_utc(record.data["opened_at"]) or 0
    timeline = record.timeline()
    last = max([entry["at"] for entry in timeline] + [record.data["opened_at"]])
    # From an hour before the incident was opened (what went wrong before anyone ran vigil) to half an
    # hour after its last entry.
    start, end = opened - 3600, min((records.parse_utc(last) or opened) + 1800, time.time())
    notes = []
    try:
        alerts = alert_history(env, start, end)
    except VigilError as error:  # the monitor host down is a note in the report, not the end of it
        alerts, notes = [], [f"the monitor host's alerts could not be read: {error.message}"]
    if alerts is None:
        alerts, notes = [], [f"no monitor host in inventory/{env}.yml: no alert history (docs/monitoring.md)"]
    error_groups = None
    site = errors_site(load_inventory(env))
    if site is not None:
        try:
            error_groups = report_lines([group for group in groups_since(site, tracker_token(env), records.utc(start))
                                         if moment(group.first_seen).timestamp() <= end])
        except VigilError as error:  # as the alerts: a note in the report, not the end of it
            error_groups, notes = [], [*notes, f"the error tracker could not be read: {error.message}"]
    actions, unreadable = read_host_actions(hosts, records.utc(start))
    actions = [event for event in actions if event.get("at", "") <= records.utc(end)]
    text = records.render_report(record, timeline, alerts + actions, error_groups)
    path = Path(output) if output else record.directory / "postmortem.md"
    if path.exists() and not force:
        raise ConfigError(
            f"{path} exists and may hold what people filled in: --force replaces it, --output writes elsewhere"
        )
    write_private(path, text)
    reporter.line(text)
    reporter.line(f"written to {path}")
    for note in notes:
        reporter.line(note)
    for host, why in unreadable.items():
        reporter.line(f"{host}: what root did for deploys could not be read: {why}")


@task(
    help={
        "env": HOST_FLAGS_HELP["env"],
        "incident": "Save it with this incident's record (default: .vigil/incidents/snapshots).",
    }
)
@exits_cleanly
def snapshot(c, env="sandbox", incident=None):
    """A diagnostics bundle of every host (unit states, recent logs, nginx error log, disk, memory, top processes,
    listening ports), each line redacted, saved here as a 0600 tar.gz.

    Example: invoke incident.snapshot --env=production
    """
    reporter = Reporter()
    record = _incident_of(env, incident)
    path, unreadable = take_snapshot(env, record.directory if record else LocalState.default().incidents / "snapshots")
    if record:
        record.add("snapshot", "saved", path.name, kind="note")
    reporter.line(f"snapshot: {path}")
    for host, why in unreadable.items():
        reporter.line(f"{host}: could not be read: {why}")
    if unreadable:
        raise Exit(code=int(ExitCode.UNREACHABLE))


ns = Collection("incident")
for command in (status, maintenance, logs, list_, run, report, snapshot, note):
    ns.add_task(command)
