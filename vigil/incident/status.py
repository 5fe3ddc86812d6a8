"""`incident.status`: what is wrong, at a glance. Each host answers one read-only question (HOST_STATUS,
as root through the admin user's sudo) and the site is asked from outside over HTTPS; every verdict is a
pure function of those answers (status_rules), so the rules are tested without hosts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vigil.backup.repository import find_repository, last_line, parse_status, status_command
from vigil.core.errors import ConfigError, VigilError
from vigil.core.fanout import Unreachable, on_hosts
from vigil.core.inventory import Host, load_inventory
from vigil.core.roles import load_role
from vigil.core.topology import database_cluster, monitor_host
from vigil.database.cluster import Cluster
from vigil.database.cluster import parse_status as parse_cluster
from vigil.deploy.settings import host_settings
from vigil.deploy.status import states_as_admin, status_row
from vigil.incident.endpoints import https_checks, site_of
from vigil.incident.errors import error_check, groups_since, tracker_token
from vigil.incident.host_status import host_status_command, parse_host_status
from vigil.incident.status_rules import (
    FAIL,
    OK,
    WARN,
    Check,
    alert_checks,
    cluster_checks,
    host_checks,
    release_checks,
    repository_checks,
    verdict,
)
from vigil.monitor.alerts import firing_command, parse_firing
from vigil.vault.error_tracking import ErrorsSite, errors_site
from vigil.vault.schema import load_schema

# The roles whose vars a status screen reads (the site, the units).
STATUS_ROLES = ("app", "nginx", "postgresql")
# The database host's line in an env without a backup host: nothing to restore from, ever.
NO_BACKUPS = Check("backups", WARN, "none: the env has no backup host (inventory group `backup`, roles/pgbackrest)")


@dataclass
class HostReport:
    """One host's lines on the status screen, or why it could not be asked."""

    host: str
    roles: list[str]
    checks: list[Check] = field(default_factory=list)
    unreachable: str = ""
    # When this host's newest live release went live (ISO, UTC); "" for none.
    deployed_at: str = ""

    @property
    def verdict(self) -> str:
        return "unreachable" if self.unreachable else verdict(self.checks)


def gather(env: str, limit: str | None) -> list[HostReport]:
    """Every selected host's checks (a host that cannot be reached says why)."""
    inventory = load_inventory(env)
    schema = load_schema()
    topology = schema.topology(inventory)
    database = topology.database_or_none()
    roles = [load_role(name) for name in STATUS_ROLES]
    hosts = inventory.select(limit)
    repository = find_repository(inventory)
    monitor = monitor_host(inventory)
    # With a database cluster every member is a database host; Patroni runs its PostgreSQL, and each member
    # also answers for the cluster (vigil.database.cluster), in the same connection.
    cluster = Cluster.of(inventory, "incident.status") if database_cluster(inventory) else None
    members = {host.name for host in cluster.hosts} if cluster else set()
    views: dict[str, str] = {}

    def is_database(name: str) -> bool:
        return name in members or (database is not None and name == database.name)

    def roles_of(name: str) -> list[str]:
        web, db = topology.runs_app(name), is_database(name)
        backup = repository is not None and name == repository.host.name
        watches = monitor is not None and name == monitor.name
        return [role for role, on in (("web", web), ("database", db), ("backup", backup), ("monitor", watches))
                if on]

    def ask(transport, host: Host) -> HostReport:
        vars = inventory.vars_for(host, roles)
        web, db = topology.runs_app(host.name), is_database(host.name)
        holds_repository = repository is not None and host.name == repository.host.name
        report = HostReport(host.name, roles_of(host.name))
        settings = host_settings(inventory, host, list(schema.services)) if web else []
        states = states_as_admin(transport, settings)
        rows = {one.layout.service: status_row(states[one.layout.service], one, time.time())
                for one in settings if one.layout.service in states}
        live_units = [one.layout.unit(rows[one.layout.service]["live"].split(":")[0]) for one in settings
                      if rows.get(one.layout.service, {}).get("live")]
        database_unit = cluster.config.rsplit("/", 1)[1].replace(".yml", "") if host.name in members else ""
        database_unit = f"patroni@{database_unit}.service" if database_unit else "postgresql.service"
        units = (["nginx.service"] if web else []) + live_units + ([database_unit] if db else [])
        _, certificate, _ = site_of(vars) if web else ("", "", True)
        # The backup host's repository may sit on a filesystem of its own (roles/pgbackrest advises it).
        directories = [repository.path] if holds_repository else []
        facts = parse_host_status(transport.run(host_status_command(units, certificate, directories)).stdout)
        tasks = (
            tuple(
                f"{vars['app_name']}-{service}-{task}@"
                for service, service_tasks in (vars["app_release_tasks"] or {}).items()
                for task in (service_tasks or {})
            )
            if web
            else ()
        )
        report.checks = host_checks(facts, units, web=web, release_tasks=tasks) + release_checks(rows)
        report.deployed_at = max((row["deployed"] for row in rows.values() if row.get("deployed")), default="")
        if db and repository is None:
            report.checks.append(NO_BACKUPS)
        if host.name in members:
            views[host.name] = transport.run(cluster.views_command(host), timeout=30).stdout
        if holds_repository:
            answer = transport.run(status_command(repository), timeout=120)
            try:
                if not answer.ok:
                    raise ConfigError(f"pgBackRest's info failed: {last_line(answer)}")
                report.checks += repository_checks(*parse_status(answer.stdout, repository.stanza), time.time())
            except ConfigError as problem:  # one host's odd answer is its line, not the end of the screen
                report.checks.append(Check("repository", FAIL, problem.message))
        if monitor is not None and host.name == monitor.name:
            answer = transport.run(firing_command(), timeout=90)
            try:
                report.checks += alert_checks(parse_firing(answer.stdout))
            except (ValueError, VigilError) as problem:
                report.checks.append(Check("alerts", FAIL, f"Alertmanager did not answer: {problem}"))
        return report

    # An unreachable host keeps its roles: the screen says which web or database host is gone.
    reports = {name: HostReport(name, roles_of(name), unreachable=answer.reason)
               if isinstance(answer, Unreachable) else answer
               for name, answer in on_hosts(inventory, hosts, ask).items()}
    for host in hosts:
        if topology.runs_app(host.name) and not reports[host.name].unreachable:
            server_name, _, verify = site_of(inventory.vars_for(host, roles))
            reports[host.name].checks += https_checks(server_name, verify)
    if cluster is not None:
        # The cluster's view from whichever member could read it; every member's line says what is wrong.
        answers = {name: views.get(name, Unreachable(reports[name].unreachable or "not asked")) for name in members
                   if name in reports}
        status = parse_cluster(cluster.scope, [host.name for host in cluster.hosts],
                               {name: answers[name] for name in sorted(answers)})
        for name, check in cluster_checks(status).items():
            if name in reports and not reports[name].unreachable:
                reports[name].checks.append(check)
    errors = errors_site(inventory)
    if errors is not None and errors.host in reports and not reports[errors.host].unreachable:
        reports[errors.host].checks.append(new_errors_check(env, errors, reports.values()))
    return [reports[host.name] for host in hosts]


def new_errors_check(env: str, site: ErrorsSite, reports) -> Check:
    """The error groups the env's Bugsink first saw since the last deploy of any web host asked."""
    since = max((report.deployed_at for report in reports if report.deployed_at), default="")
    if not since:
        return Check("new errors", OK, "nothing deployed yet")
    try:
        return error_check(groups_since(site, tracker_token(env), since), since)
    except VigilError as problem:  # the tracker down is its own alert (ErrorTrackingDown): a warning here
        return Check("new errors", WARN, problem.message)
