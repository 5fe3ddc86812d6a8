"""The runbook actions on real hosts: each changes something and returns a one-line summary, or raises
ActionFailed naming what worked and what did not, by host. ACTIONS is the registry the runbooks'
`action:` names resolve in."""

from __future__ import annotations

import os
import time
from typing import Callable

from vigil.backup.access import connect
from vigil.backup.repository import create_backup, require_repository
from vigil.core.commands import script
from vigil.core.errors import ExitCode, VigilError
from vigil.core.fanout import Unreachable
from vigil.core.local_files import unique_path
from vigil.core.output import Reporter
from vigil.core.playbook import Target, run_playbook
from vigil.core.redaction import REDACTOR, mask_log_line
from vigil.core.runner import RunOptions
from vigil.database.cluster import Cluster
from vigil.database.levers import failover
from vigil.deploy.maintenance import set_maintenance
from vigil.deploy.rollout import deploy_service, services_of
from vigil.deploy.scripts import MARK_BAD
from vigil.deploy.settings import host_settings
from vigil.incident.checks import check_http
from vigil.incident.endpoints import site_of
from vigil.incident.engine import RETRY_SECONDS, ActionFailed, Finding
from vigil.incident.hosts import EnvHosts
from vigil.incident.logs import gather_logs
from vigil.incident.runbooks import Step
from vigil.incident.services import APP_SERVICES, SERVICE_UNITS
from vigil.vault.store import lookup

# Each known place on one of the full filesystems ($2: their mount points, comma-separated): print
# "<place> <bytes freed>"; places elsewhere are left alone (freeing them cannot help). The journal keeps
# $1 of archived files; temporary files untouched for a week and rotated logs go.
FREE_DISK = r"""
journal_keep=$1; mounts=",$2,"; shift 2
size() { du -sb -- "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
on_full() {
    for dir in "$@"; do
        [ -e "$dir" ] || continue
        case $mounts in *",$(df -P -- "$dir" | awk 'NR==2 {print $6}'),"*) return 0 ;; esac
    done
    return 1
}
for place in "$@"; do
    case $place in
    journal) dirs=/var/log/journal ;;
    apt-cache) dirs=/var/cache/apt/archives ;;
    rotated-logs) dirs=/var/log ;;
    old-tmp) dirs="/tmp /var/tmp" ;;
    core-dumps) dirs=/var/lib/systemd/coredump ;;
    *) continue ;;
    esac
    # shellcheck disable=SC2086
    on_full $dirs || continue
    # shellcheck disable=SC2086
    before=$(size $dirs)
    case $place in
    journal) journalctl --vacuum-size="$journal_keep" >/dev/null 2>&1 ;;
    apt-cache) apt-get clean >/dev/null 2>&1 ;;
    rotated-logs)
        find /var/log -xdev -type f \( -name '*.gz' -o -name '*.xz' -o -name '*.[0-9]' -o -name '*.old' \) \
            -delete 2>/dev/null ;;
    old-tmp) find /tmp /var/tmp -xdev -mindepth 1 -type f -mtime +7 -atime +7 -delete 2>/dev/null ;;
    core-dumps) find /var/lib/systemd/coredump -xdev -mindepth 1 -type f -delete 2>/dev/null ;;
    esac
    # shellcheck disable=SC2086
    after=$(size $dirs)
    echo "$place $(( before > after ? before - after : 0 ))"
done
"""

# After a rollback, how long the release returned to may take to answer before it counts as not mending it.
ROLLBACK_SETTLE_SECONDS = 30
RESTART_UNIT = 'systemctl reset-failed -- "$1" 2>/dev/null; systemctl restart -- "$1"'
RESTART_NGINX = 'nginx -t -q && systemctl restart nginx.service'
RENEW_WITH_CERTBOT = 'certbot renew --cert-name "$1" --force-renewal --quiet && systemctl reload nginx.service'
JOURNAL_KEEP = "200M"
Failing = list[Finding] | None


def free_disk_command(places: list[str], mounts: list[str]):
    """Free `places` that lie on one of `mounts` (the full filesystems): freeing elsewhere cannot help."""
    return script(FREE_DISK, JOURNAL_KEEP, ",".join(mounts), *places)


def parse_freed(stdout: str) -> dict[str, int]:
    """FREE_DISK's lines -> place -> bytes freed."""
    freed = {}
    for line in stdout.splitlines():
        place, _, size = line.partition(" ")
        if size.strip().isdigit():
            freed[place] = int(size)
    return freed


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def targets(hosts: EnvHosts, step: Step, failing: Failing) -> dict[str, list[str]]:
    """host -> services the action is for: what `on` found failing (within `services` if given), else
    every host running each of `services`."""
    wanted = step.params.get("services")
    if failing is not None:
        found: dict[str, list[str]] = {}
        for finding in failing:
            if finding.target in SERVICE_UNITS and (wanted is None or finding.target in wanted):
                found.setdefault(finding.host, []).append(finding.target)
        return {host: list(dict.fromkeys(services)) for host, services in found.items()}
    return {host: [service for service in wanted if host in hosts.running(service)]
            for host in hosts.hosts if any(host in hosts.running(service) for service in wanted)}


def summarise(verb: str, answers: dict[str, tuple[list[str], list[str]] | Unreachable]) -> str:
    """"<verb> vps1: a, b" for what worked; ActionFailed naming both what worked and what did not."""
    done, problems = [], []
    for host, answer in sorted(answers.items()):
        if isinstance(answer, Unreachable):
            problems.append(f"{host}: {answer}")
            continue
        worked, failed = answer
        done += [f"{host}: {', '.join(worked)}"] if worked else []
        problems += [f"{host}: {problem}" for problem in failed]
    summary = f"{verb} " + "; ".join(done) if done else f"nothing {verb}"
    if problems:
        raise ActionFailed(f"{summary}; failed: {'; '.join(problems)}")
    return summary


def post_alert(url: str, payload: dict, timeout: float = 10) -> str:
    """POST Slack-compatible JSON; "" on success, else why (never the URL: it is a secret)."""
    # requests on first use: every task imports this module, few post an alert (CLI start-up).
    import requests  # noqa: PLC0415

    try:
        response = requests.post(url, json=payload, timeout=timeout)
    except requests.RequestException as error:
        return type(error).__name__
    return "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"


def act_restart(hosts: EnvHosts, step: Step, failing: Failing) -> str:
    """Restart the failing (or named) services on their hosts; never one a deploy is switching."""
    wanted = targets(hosts, step, failing)
    if not wanted:
        raise ActionFailed("nothing to restart: no failing service this action may restart")

    def restart(transport, host):
        done, problems = [], []
        states = hosts.app_states(transport, host, [service for service in wanted[host] if service in APP_SERVICES])
        for service in wanted[host]:
            unit, lock = states.get(
                service, ({"nginx": "nginx.service", "postgresql": "postgresql.service"}.get(service), None)
            )
            if lock:
                # A deploy is switching colors here: a restart could hit the one it is about to stop.
                problems.append(
                    f"{service}: a deploy holds the lock (by {lock.get('who', '?')} since {lock.get('since', '?')})"
                )
                continue
            if unit is None:
                problems.append(f"{service}: no release is live to restart")
                continue
            command = script(RESTART_NGINX) if service == "nginx" else script(RESTART_UNIT, unit)
            answer = transport.run(command, timeout=180)
            if answer.ok:
                done.append(unit)
            else:
                problems.append(f"{unit}: {REDACTOR.redact(answer.stderr.strip()[-200:]) or f'exited {answer.status}'}")
        return done, problems

    return summarise("restarted", hosts.on_hosts(sorted(wanted), restart))


def act_rollback(hosts: EnvHosts, step: Step, failing: Failing) -> str:
    """Roll the failing app services back on every host, through deploy.rollback's health-gated switch;
    once the release returned to serves, mark the one left bad."""
    services = sorted({service for host_services in targets(hosts, step, failing).values() for service in host_services
                       if service in APP_SERVICES})
    if not services:
        raise ActionFailed("nothing to roll back: no failing app service")
    sources, done = services_of(hosts.env), []
    for service in services:
        before = hosts.current_releases(service)
        code, _, results = deploy_service(hosts.env, service, sources[service], None, RunOptions(), Reporter.quiet(),
                                          rollback=True)
        if code != ExitCode.OK:
            reasons = "; ".join(
                f"{r.host}: {r.error or r.unreachable or r.skipped}" for r in results if r.failed or r.skipped
            )
            raise ActionFailed(f"{service}: the rollback failed ({REDACTOR.redact(reasons)[-400:]})")
        after = hosts.current_releases(service)
        moved = ", ".join(f"{host} {before.get(host)} -> {after.get(host)}" for host in sorted(after))
        # Blame the release left only once the one returned to serves: a failure the rollback did not
        # mend (the database, the host) says nothing against it.
        healthy = healthy_within(hosts, service, ROLLBACK_SETTLE_SECONDS)
        left = {host: release for host, release in before.items() if release != after.get(host)}
        marked = mark_bad(hosts, service, left) if healthy else []
        done.append(
            f"{service} {moved}"
            + (
                f"; marked bad on {', '.join(marked)}"
                if marked
                else "; still failing, so the release left is not marked bad"
                if not healthy
                else ""
            )
        )
    return "rolled back " + "; ".join(done)


def healthy_within(hosts: EnvHosts, service: str, seconds: float) -> bool:
    """Whether `service` answers on every web host within `seconds`."""
    deadline = hosts.clock() + seconds
    while True:
        findings = check_http(hosts, {"services": [service]})
        if findings and all(finding.ok for finding in findings):
            return True
        if hosts.clock() + RETRY_SECONDS > deadline:
            return False
        hosts.sleep(RETRY_SECONDS)


def mark_bad(hosts: EnvHosts, service: str, releases: dict[str, str | None]) -> list[str]:
    """The release an incident rolled back from is bad: no later rollback may return to it. Returns
    "<release> on <host>" where it is marked; ActionFailed names the hosts where it could not be."""
    def mark(transport, host):
        release = releases[host]
        layout = host_settings(hosts.inventory, hosts.hosts[host], [service])[0].layout
        answer = transport.run(script(MARK_BAD, layout.release(release), release, "incident.run",
                                      as_user=hosts.vars(host)["app_owner"]))
        return (
            (f"{release} on {host}", "")
            if answer.ok
            else ("", answer.stderr.strip()[-200:] or f"exited {answer.status}")
        )

    answers = hosts.on_hosts([host for host, release in releases.items() if release], mark)
    problems = [
        f"{host}: {answer if isinstance(answer, Unreachable) else answer[1]}"
        for host, answer in answers.items()
        if isinstance(answer, Unreachable) or answer[1]
    ]
    if problems:
        raise ActionFailed(
            f"{service} rolled back, but the release left could not be marked bad: {'; '.join(problems)}"
        )
    return sorted(answer[0] for answer in answers.values())


def act_maintenance(hosts: EnvHosts, step: Step, failing: Failing) -> str:
    """Maintenance mode on or off on every web host, as incident.maintenance does it."""
    code, failed = set_maintenance(hosts.env, step.params["state"] == "on", None)
    if code != ExitCode.OK:
        raise ActionFailed(f"maintenance {step.params['state']} failed on {', '.join(failed)}")
    return f"maintenance {step.params['state']} on {', '.join(hosts.running('nginx'))}"


def act_collect_logs(hosts: EnvHosts, step: Step, failing: Failing) -> str:
    """The services' journals from every host, merged and masked, into a new file in the incident's record."""
    lines, problems = gather_logs(hosts.env, step.params["services"], step.params["since"], 2000, None)
    try:
        path = unique_path(hosts.incident.directory, f"logs-{step.id}-{time.strftime('%H%M%S', time.gmtime())}", ".txt")
    except FileExistsError as error:
        raise ActionFailed(str(error)) from None
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        for line in lines:
            out.write(mask_log_line(line.render()) + "\n")
        for host, why in problems.items():
            out.write(f"{host}: the journal could not be read: {REDACTOR.redact(why)}\n")
    return f"{len(lines)} lines from {', '.join(sorted({line.host for line in lines})) or 'no host'} in {path.name}" + \
        (f"; unreadable on {', '.join(sorted(problems))}" if problems else "")


def act_free_disk(hosts: EnvHosts, step: Step, failing: Failing) -> str:
    """Free the places given on the full filesystems only (those a disk check found), host by host."""
    if failing is not None:
        full: dict[str, list[str]] = {}
        for finding in failing:
            if finding.target.startswith("filesystem "):
                full.setdefault(finding.host, []).append(finding.target.removeprefix("filesystem "))
    else:
        full = {host: ["/"] for host in hosts.hosts}  # no disk check to go by: the root filesystem's places
    if not full:
        raise ActionFailed("no full filesystem to free space on (the disk check failed for other reasons)")

    def free(transport, host):
        answer = transport.run(free_disk_command(step.params["places"], full[host]), timeout=600)
        if not answer.ok:
            return [], [answer.stderr.strip()[-200:] or f"exited {answer.status}"]
        freed = parse_freed(answer.stdout)
        places = ", ".join(f"{place} {megabytes(size)}" for place, size in freed.items() if size) or "nothing to free"
        return [f"freed {megabytes(sum(freed.values()))} on {', '.join(full[host])} ({places})"], []

    return summarise("", hosts.on_hosts(sorted(full), free)).strip()


def act_backup(hosts: EnvHosts, step: Step, failing: Failing) -> str:
    """An incremental backup now, into the backup host's pgBackRest repository (a full one when it holds
    none yet), annotated with the step's label."""
    try:
        repository = require_repository(hosts.inventory, "the runbook's backup action")
        with connect(hosts.inventory, repository.host) as transport:
            made = create_backup(transport, repository, "incr", step.params["label"])
    except VigilError as error:
        raise ActionFailed(str(error)) from None
    return (f"backup {made.label} ({made.type}) on {repository.host.name} "
            f"({megabytes(made.size)}, {megabytes(made.stored)} stored)")


class _Placeholders(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def act_notify(hosts: EnvHosts, step: Step, failing: Failing) -> str:
    """Post the message to the env's alert webhook (ALERT_WEBHOOK_URL), or print it where there is none."""
    message = step.params["message"].format_map(_Placeholders(env=hosts.env, incident=hosts.incident.id,
                                                              runbook=hosts.incident.data.get("title", "")))
    url = hosts.secrets.get("ALERT_WEBHOOK_URL", "")
    if not url:
        hosts.say(f"  notify: {message}")
        if hosts.secrets_problem:
            raise ActionFailed(
                f"not sent: the {hosts.env} secrets could not be read ({hosts.secrets_problem}): {message}"
            )
        return f"no ALERT_WEBHOOK_URL in the {hosts.env} secrets, so only printed: {message}"
    error = post_alert(
        url, {"text": message, "vigil": {"env": hosts.env, "incident": hosts.incident.id, "event": "runbook"}}
    )
    if error:
        raise ActionFailed(f"the alert webhook refused it ({error}): {message}")
    return f"posted to the alert webhook: {message}"


def act_renew_certificate(hosts: EnvHosts, step: Step, failing: Failing) -> str:
    """A fresh certificate where the check found one close to expiry: certbot's renewal, or the nginx role
    (which issues one from the env's own CA when the installed one is close to expiry)."""
    names = sorted({finding.host for finding in failing}) if failing is not None else hosts.running("nginx")
    certbot = [host for host in names if hosts.vars(host)["nginx_tls"] == "certbot"]
    local = [host for host in names if host not in certbot]
    if certbot:
        def renew(transport, host):
            name, _, _ = site_of(hosts.vars(host))
            answer = transport.run(script(RENEW_WITH_CERTBOT, name), timeout=300)
            return (["renewed"], []) if answer.ok else ([], [answer.stderr.strip()[-200:]])

        answers = hosts.on_hosts(certbot, renew)
        problems = [f"{host}: {answer if isinstance(answer, Unreachable) else '; '.join(answer[1])}"
                    for host, answer in answers.items() if isinstance(answer, Unreachable) or answer[1]]
        if problems:
            worked = sorted(
                host for host, answer in answers.items() if not isinstance(answer, Unreachable) and not answer[1]
            )
            raise ActionFailed(f"renewed on {', '.join(worked) or 'no host'}; failed: {'; '.join(problems)}")
    if local:
        code, _ = run_playbook(
            "incident renew_certificate",
            "onboard",
            Target(hosts.env, ",".join(local)),
            RunOptions(),
            Reporter.quiet(),
            lookup(hosts.env),
            only_roles=["nginx"],
        )
        if code != ExitCode.OK:
            raise ActionFailed(f"the nginx role failed on {', '.join(local)}")
    return f"renewed the certificate on {', '.join(names)}"


def act_failover(hosts: EnvHosts, step: Step, failing: Failing) -> str:
    """A replica of the database cluster made leader where none leads (vigil.database.levers.failover)."""
    said: list[str] = []
    try:
        failover(Cluster.of(hosts.inventory, "the runbook's failover"), None, said.append)
    except VigilError as problem:
        raise ActionFailed(problem.message) from None
    return "; ".join(said)


# What a runbook's `action: NAME` runs (its parameters are validated by runbooks.ACTIONS).
ACTIONS: dict[str, Callable[[EnvHosts, Step, Failing], str]] = {
    "restart": act_restart,
    "rollback": act_rollback,
    "maintenance": act_maintenance,
    "collect_logs": act_collect_logs,
    "free_disk": act_free_disk,
    "backup": act_backup,
    "notify": act_notify,
    "renew_certificate": act_renew_certificate,
    "failover": act_failover,
}
