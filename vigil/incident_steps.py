"""The runbook step library on real hosts: each check reads, each action changes, one round trip per host.

Checks return Findings (a host, what was looked at, ok or not, why); actions
return a one-line summary or raise ActionFailed naming the host. Commands are
built as data here (tested in tests/unit) and run as root through the admin
user's sudo, like incident.status.
"""

from __future__ import annotations

import dataclasses as dc
import io
import json
import os
import time
from pathlib import Path
from typing import Callable

from vigil import incident as I
from vigil.commands import REDACTOR, Command, script
from vigil.runbook import RETRY_SECONDS, ActionFailed, Finding, Step

# --- commands -------------------------------------------------------------------------------------

# Each path's filesystem once: "<mount point> <use%> <path asked>".
DISK_USAGE = r'''
for dir in "$@"; do [ -d "$dir" ] && df -P -- "$dir" | awk -v d="$dir" 'NR==2 {print $6, $5, d}'; done | sort -u -k1,1
'''

DATABASE_ANSWERS = r'''
pg_isready -q -t 5 || { echo "pg_isready: not accepting connections"; exit 1; }
runuser -u postgres -- psql -X -q -d "$1" -Atc 'select 1' 2>&1 | tail -n 1
'''

CERTIFICATE_END = r'''
openssl x509 -enddate -noout -in "$1" 2>/dev/null | cut -d= -f2; date -u +%Y-%m-%dT%H:%M:%SZ
'''

# Each known place on one of the full filesystems ($2: their mount points, comma-separated): print
# "<place> <bytes freed>"; places elsewhere are left alone (freeing them cannot help). The journal keeps
# $1 of archived files; temporary files untouched for a week and rotated logs go; backups past
# retention go by vigil-backup's own rules (never the newest verified one, never a pinned one).
FREE_DISK = r'''
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
    journal) dirs=/var/log/journal ;; apt-cache) dirs=/var/cache/apt/archives ;; rotated-logs) dirs=/var/log ;;
    old-tmp) dirs="/tmp /var/tmp" ;; core-dumps) dirs=/var/lib/systemd/coredump ;; old-backups) dirs=/var/backups/vigil ;;
    *) continue ;;
    esac
    # shellcheck disable=SC2086
    on_full $dirs || continue
    # shellcheck disable=SC2086
    before=$(size $dirs)
    case $place in
    journal) journalctl --vacuum-size="$journal_keep" >/dev/null 2>&1 ;;
    apt-cache) apt-get clean >/dev/null 2>&1 ;;
    rotated-logs) find /var/log -xdev -type f \( -name '*.gz' -o -name '*.xz' -o -name '*.[0-9]' -o -name '*.old' \) -delete 2>/dev/null ;;
    old-tmp) find /tmp /var/tmp -xdev -mindepth 1 -type f -mtime +7 -atime +7 -delete 2>/dev/null ;;
    core-dumps) find /var/lib/systemd/coredump -xdev -mindepth 1 -type f -delete 2>/dev/null ;;
    old-backups) [ -x /usr/local/sbin/vigil-backup ] && { /usr/local/sbin/vigil-backup prune >/dev/null || echo "old-backups: prune failed" >&2; } ;;
    esac
    # shellcheck disable=SC2086
    after=$(size $dirs)
    echo "$place $(( before > after ? before - after : 0 ))"
done
'''

# Each path through this host's own nginx, by the site's name (SNI and Host) but to 127.0.0.1: the answer is
# this host's, whatever DNS or a load balancer would pick. "<path> <expected text found: 1|0> <status> <seconds>".
# TLS is not verified here: the certificate check is about that.
HTTP_THROUGH_NGINX = r'''
name=$1; shift
while [ "$#" -ge 2 ]; do
    path=$1; expect=$2; shift 2
    body=$(curl -sk --max-time 10 --resolve "$name:443:127.0.0.1" -w '\n@@%{http_code} %{time_total}' "https://$name$path" 2>&1)
    case $body in *"$expect"*) found=1 ;; *) found=0 ;; esac
    echo "$path $found ${body##*@@}"
done
'''
POSTGRESQL_INSTANCES = "systemctl list-units --all --plain --no-legend 'postgresql@*.service' | awk '{print $1, $3, $4}'"
MARK_BAD = 'test -d "$1" && printf \'{"id": "%s", "status": "bad", "by": "incident.run"}\\n\' "$2" > "$1/.vigil-bad"'
# After a rollback, how long the release returned to may take to answer before it counts as not mending it.
ROLLBACK_SETTLE_SECONDS = 30
RESTART_UNIT = 'systemctl reset-failed -- "$1" 2>/dev/null; systemctl restart -- "$1"'
RESTART_NGINX = 'nginx -t -q && systemctl restart nginx.service'
LISTENING = 'ss -Hltn "sport = :$1" | head -n 1'
JOURNAL_KEEP = "200M"


def http_command(server_name: str, services: list[str]) -> Command:
    return script(HTTP_THROUGH_NGINX, server_name,
                  *[part for service in services for part in I.HTTP_ENDPOINTS[service][1:]])


def parse_http(host: str, stdout: str, services: list[str]) -> list[Finding]:
    answers = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            answers[parts[0]] = parts[1:]
    findings = []
    for service in services:
        path = I.HTTP_ENDPOINTS[service][1]
        found, status, seconds = answers.get(path, ("0", "000", "0"))
        ms = f"{float(seconds) * 1000:.0f} ms" if seconds.replace(".", "", 1).isdigit() else "?"
        detail = f"HTTP {status} in {ms}" if status != "000" else "no answer from nginx"
        findings.append(Finding(host, service, status == "200" and found == "1", detail))
    return findings


def disk_command(paths: list[str]) -> Command:
    return script(DISK_USAGE, *paths)


def database_command(database: str) -> Command:
    return script(DATABASE_ANSWERS, database)


def free_disk_command(places: list[str], mounts: list[str]) -> Command:
    """Free `places` that lie on one of `mounts` (the full filesystems): freeing elsewhere cannot help."""
    return script(FREE_DISK, JOURNAL_KEEP, ",".join(mounts), *places)


def parse_disk(host: str, stdout: str, max_used: int) -> list[Finding]:
    findings = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].rstrip("%").isdigit():
            used = int(parts[1].rstrip("%"))
            findings.append(Finding(host, f"filesystem {parts[0]}", used < max_used, f"{used}% used (max {max_used}%)"))
    return findings


def parse_freed(stdout: str) -> dict[str, int]:
    freed = {}
    for line in stdout.splitlines():
        place, _, size = line.partition(" ")
        if size.strip().isdigit():
            freed[place] = int(size)
    return freed


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# --- the library ----------------------------------------------------------------------------------


class HostLibrary:
    """Checks and actions on one env's hosts (the runbook engine's Library).

    incident: the incident record (collected logs go in its directory); say: progress lines for people.
    """

    def __init__(self, env: str, incident, say: Callable[[str], None]):
        from vigil import secrets
        from vigil.config import load_inventory, load_role
        from vigil.errors import VigilError

        self.env, self.incident, self.say = env, incident, say
        self.before_action: Callable[[], object] = lambda: None
        self.inventory = load_inventory(env)
        self.schema = secrets.load_schema()
        try:
            self.secrets = secrets.load(env)  # also registers them, so no output can show one
            self.secrets_problem = ""
        except VigilError as error:
            # Still masked: URL passwords and values named as secrets (incident.mask_line).
            self.secrets, self.secrets_problem = {}, error.message
        self.web, self.database = I.app_and_database_hosts(self.inventory, self.schema)
        self.roles = [load_role(name) for name in ("app", "nginx", "postgresql", "backup", "monitor")]
        self.hosts = {host.name: host for host in self.inventory.select(None)}

    # -- plumbing --

    def vars(self, name: str):
        return self.inventory.vars_for(self.hosts[name], self.roles)

    def hosts_running(self, service: str) -> list[str]:
        if service == "postgresql":
            return [self.database] if self.database else []
        return [name for name in self.hosts if name in self.web]

    def group(self, group: str) -> list[str]:
        return {"all": list(self.hosts), "web": self.hosts_running("backend"),
                "database": self.hosts_running("postgresql")}[group]

    def on_hosts(self, names: list[str], work: Callable[[object, str], object]) -> dict[str, object]:
        """work(transport, host name) on each host at once; a host that cannot be reached maps to its reason."""
        from vigil.runner import HostPlan, HostResult, RunOptions, run
        from vigil.transport import SSHTransport

        answers: dict[str, object] = {}

        def host_work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
            answers[host_plan.host.name] = work(transport, host_plan.host.name)
            return HostResult(host_plan.host.name)

        results = run([HostPlan(self.hosts[name].as_admin(), []) for name in names],
                      lambda host: SSHTransport(dc.replace(host, bootstrap_user=None), self.inventory.known_hosts, self.inventory.env),
                      RunOptions(), None, work=host_work)
        for result in results:
            if result.unreachable or result.error:
                answers[result.host] = ConnectionError(REDACTOR.redact(result.unreachable or result.error))
        return answers

    def live_units(self, transport, host: str, services: list[str]) -> dict[str, str | None]:
        """service -> the unit of the color nginx sends its traffic to (None: nothing deployed)."""
        return {service: unit for service, (unit, _) in self.app_states(transport, host, services).items()}

    def app_states(self, transport, host: str, services: list[str]) -> dict[str, tuple[str | None, dict | None]]:
        """service -> (its live unit or None, the deploy lock held on it or None), in one round trip."""
        from vigil.deploy import live_color, parse_states, settings_from_vars, states_command

        settings = {service: settings_from_vars(self.vars(host), service) for service in services}
        if not settings:
            return {}
        answer = transport.run(dc.replace(states_command(list(settings.values())), sudo=True))
        states = parse_states(answer.stdout) if answer.ok else {}
        found = {}
        for service, one in settings.items():
            color = live_color(states[service], one) if service in states else None
            found[service] = (one.layout.unit(color) if color else None, states[service].lock if service in states else None)
        return found

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def clock(self) -> float:
        return time.monotonic()

    # -- checks --

    def check(self, step: Step, attempt: int) -> list[Finding]:
        if attempt:
            self.say(f"  {step.id}: again ({attempt})")
        return getattr(self, f"check_{step.type}")(step.params)

    def check_http(self, params: dict) -> list[Finding]:
        def work(transport, host):
            server_name, _, _ = I.site_of(self.vars(host))
            return parse_http(host, transport.run(http_command(server_name, params["services"]), timeout=60).stdout,
                              params["services"])

        return self._flatten(self.on_hosts(self.hosts_running("backend"), work))

    def check_systemd(self, params: dict) -> list[Finding]:
        def work(transport, host):
            app = [service for service in params["services"] if service in I.APP_SERVICES and host in self.web]
            units = {service: unit for service, unit in self.live_units(transport, host, app).items()} if app else {}
            if "nginx" in params["services"] and host in self.web:
                units["nginx"] = "nginx.service"
            findings = []
            if "postgresql" in params["services"] and host == self.database:
                # postgresql.service only wraps the clusters (it stays "active" when one dies): ask the instances.
                instances = [line.split() for line in transport.run(script(POSTGRESQL_INSTANCES)).stdout.splitlines() if line.strip()]
                findings.append(Finding(host, "postgresql", bool(instances) and all(state == "active" for _, state, _ in instances),
                                        ", ".join(f"{unit} {state} ({sub})" for unit, state, sub in instances) or "no cluster unit"))
            for service, unit in units.items():
                if unit is None:
                    findings.append(Finding(host, service, False, "no release is live"))
                    continue
                state = transport.run(Command(("systemctl", "is-active", "--", unit), sudo=True)).stdout.strip() or "unknown"
                findings.append(Finding(host, service, state == "active", f"{unit} {state}"))
            return findings

        hosts = sorted({name for service in params["services"] for name in self.hosts_running(service)})
        return self._flatten(self.on_hosts(hosts, work))

    def check_disk(self, params: dict) -> list[Finding]:
        def work(transport, host):
            answer = transport.run(disk_command(params["paths"]))
            return parse_disk(host, answer.stdout, params["max_used"]) or [Finding(host, "disk", False, "df answered nothing")]

        return self._flatten(self.on_hosts(self.group(params["hosts"]), work))

    def check_database(self, params: dict) -> list[Finding]:
        if not self.database:
            return [Finding("-", "postgresql", False, "the inventory runs no database host")]

        def work(transport, host):
            answer = transport.run(database_command(self.vars(host)["postgresql_database"]))
            ok = answer.ok and answer.stdout.strip() == "1"
            return [Finding(host, "postgresql", ok, "answers queries" if ok else (answer.stdout + answer.stderr).strip()[-200:])]

        return self._flatten(self.on_hosts([self.database], work))

    def check_certificate(self, params: dict) -> list[Finding]:
        def work(transport, host):
            _, certificate, _ = I.site_of(self.vars(host))
            answer = transport.run(script(CERTIFICATE_END, certificate))
            lines = answer.stdout.strip().splitlines()
            days = I.certificate_days(lines[0], lines[-1]) if len(lines) == 2 else None
            if days is None:
                return [Finding(host, "certificate", False, f"{certificate} is not readable")]
            return [Finding(host, "certificate", days >= params["min_days"], f"{days} days left (at least {params['min_days']} wanted)")]

        return self._flatten(self.on_hosts(self.hosts_running("nginx"), work))

    def check_port(self, params: dict) -> list[Finding]:
        def work(transport, host):
            listening = bool(transport.run(script(LISTENING, str(params["port"]))).stdout.strip())
            return [Finding(host, f"port {params['port']}", listening == params["listening"],
                            "listening" if listening else "not listening")]

        return self._flatten(self.on_hosts(self.group(params["hosts"]), work))

    @staticmethod
    def _flatten(answers: dict[str, object]) -> list[Finding]:
        findings = []
        for host, answer in sorted(answers.items()):
            findings += [Finding(host, "ssh", False, str(answer))] if isinstance(answer, Exception) else answer
        return findings

    # -- actions --

    def act(self, step: Step, failing: list[Finding] | None) -> str:
        self.before_action()
        return getattr(self, f"act_{step.type}")(step, failing)

    def _targets(self, step: Step, failing: list[Finding] | None) -> dict[str, list[str]]:
        """host -> services the action is for: what `on` found failing (within `services` if given), else
        every host running each of `services`."""
        wanted = step.params.get("services")
        if failing is not None:
            targets: dict[str, list[str]] = {}
            for finding in failing:
                if finding.target in I.SERVICE_UNITS and (wanted is None or finding.target in wanted):
                    targets.setdefault(finding.host, []).append(finding.target)
            return {host: list(dict.fromkeys(services)) for host, services in targets.items()}
        return {host: [service for service in wanted if host in self.hosts_running(service)]
                for host in self.hosts if any(host in self.hosts_running(service) for service in wanted)}

    def act_restart(self, step: Step, failing: list[Finding] | None) -> str:
        targets = self._targets(step, failing)
        if not targets:
            raise ActionFailed("nothing to restart: no failing service this action may restart")

        def work(transport, host):
            done, problems = [], []
            states = self.app_states(transport, host, [s for s in targets[host] if s in I.APP_SERVICES])
            for service in targets[host]:
                unit, lock = states.get(service, ({"nginx": "nginx.service", "postgresql": "postgresql.service"}.get(service), None))
                if lock:
                    # A deploy is switching colors here: a restart could hit the one it is about to stop.
                    problems.append(f"{service}: a deploy holds the lock (by {lock.get('who', '?')} since {lock.get('since', '?')})")
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

        return self._summarise("restarted", self.on_hosts(sorted(targets), work))

    @staticmethod
    def _summarise(verb: str, answers: dict[str, object]) -> str:
        """"<verb> vps1: a, b" for what worked; ActionFailed naming both what worked and what did not."""
        done, problems = [], []
        for host, answer in sorted(answers.items()):
            if isinstance(answer, Exception):
                problems.append(f"{host}: {answer}")
                continue
            worked, failed = answer
            done += [f"{host}: {', '.join(worked)}"] if worked else []
            problems += [f"{host}: {problem}" for problem in failed]
        summary = f"{verb} " + "; ".join(done) if done else f"nothing {verb}"
        if problems:
            raise ActionFailed(f"{summary}; failed: {'; '.join(problems)}")
        return summary

    def act_rollback(self, step: Step, failing: list[Finding] | None) -> str:
        from vigil.deploy import deploy_service
        from vigil.errors import ExitCode
        from vigil.report import Environment, Reporter
        from vigil.runner import RunOptions
        from vigil.tasks.deploy import services_of

        services = sorted({service for host_services in self._targets(step, failing).values() for service in host_services
                           if service in I.APP_SERVICES})
        if not services:
            raise ActionFailed("nothing to roll back: no failing app service")
        sources, done = services_of(self.env), []
        for service in services:
            before = self._current_releases(service)
            quiet = io.StringIO()
            code, _, results = deploy_service(self.env, service, sources[service], None, RunOptions(),
                                              Reporter(Environment(stdout=quiet, stderr=quiet), json_output=True), rollback=True)
            if code != ExitCode.OK:
                reasons = "; ".join(f"{r.host}: {r.error or r.unreachable or r.skipped}" for r in results if r.failed or r.skipped)
                raise ActionFailed(f"{service}: the rollback failed ({REDACTOR.redact(reasons)[-400:]})")
            after = self._current_releases(service)
            moved = ", ".join(f"{host} {before.get(host)} -> {after.get(host)}" for host in sorted(after))
            # Blame the release left only once the one returned to serves: a failure the rollback did not
            # mend (the database, the host) says nothing against it.
            healthy = self._healthy_within(service, ROLLBACK_SETTLE_SECONDS)
            marked = self._mark_bad(service, {host: release for host, release in before.items() if release != after.get(host)}) \
                if healthy else []
            done.append(f"{service} {moved}" + (f"; marked bad on {', '.join(marked)}" if marked else
                                               "; still failing, so the release left is not marked bad" if not healthy else ""))
        return "rolled back " + "; ".join(done)

    def _healthy_within(self, service: str, seconds: float) -> bool:
        deadline = self.clock() + seconds
        while True:
            findings = self.check_http({"services": [service]})
            if findings and all(finding.ok for finding in findings):
                return True
            if self.clock() + RETRY_SECONDS > deadline:
                return False
            self.sleep(RETRY_SECONDS)

    def _current_releases(self, service: str) -> dict[str, str | None]:
        from vigil.deploy import parse_states, settings_from_vars, states_command

        def work(transport, host):
            settings = settings_from_vars(self.vars(host), service)
            answer = transport.run(dc.replace(states_command([settings]), sudo=True))
            return parse_states(answer.stdout)[service].current if answer.ok else None

        return {host: (None if isinstance(release, Exception) else release)
                for host, release in self.on_hosts(self.hosts_running(service), work).items()}

    def _mark_bad(self, service: str, releases: dict[str, str | None]) -> list[str]:
        """The release an incident rolled back from is bad: no later rollback may return to it. Returns
        the hosts where it is marked; ActionFailed names those where it could not be."""
        from vigil.deploy import settings_from_vars

        def work(transport, host):
            release = releases[host]
            layout = settings_from_vars(self.vars(host), service).layout
            answer = transport.run(script(MARK_BAD, layout.release(release), release, as_user=self.vars(host)["app_owner"]))
            return f"{release} on {host}" if answer.ok else RuntimeError(answer.stderr.strip()[-200:] or f"exited {answer.status}")

        answers = self.on_hosts([host for host, release in releases.items() if release], work)
        problems = [f"{host}: {answer}" for host, answer in answers.items() if isinstance(answer, Exception)]
        if problems:
            raise ActionFailed(f"{service} rolled back, but the release left could not be marked bad: {'; '.join(problems)}")
        return sorted(answers.values())

    def act_maintenance(self, step: Step, failing) -> str:
        from vigil.errors import ExitCode

        code, failed = I.set_maintenance(self.env, step.params["state"] == "on", None)
        if code != ExitCode.OK:
            raise ActionFailed(f"maintenance {step.params['state']} failed on {', '.join(failed)}")
        return f"maintenance {step.params['state']} on {', '.join(self.hosts_running('nginx'))}"

    def act_collect_logs(self, step: Step, failing) -> str:
        lines, problems = I.gather_logs(self.env, step.params["services"], step.params["since"], 2000, None)
        path = unique_path(self.incident.directory, f"logs-{step.id}-{time.strftime('%H%M%S', time.gmtime())}", ".txt")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            for line in lines:
                out.write(I.mask_line(line.render()) + "\n")
            for host, why in problems.items():
                out.write(f"{host}: the journal could not be read: {REDACTOR.redact(why)}\n")
        return f"{len(lines)} lines from {', '.join(sorted({line.host for line in lines})) or 'no host'} in {path.name}" + \
            (f"; unreadable on {', '.join(sorted(problems))}" if problems else "")

    def act_free_disk(self, step: Step, failing: list[Finding] | None) -> str:
        if failing is not None:
            full = {}
            for finding in failing:
                if finding.target.startswith("filesystem "):
                    full.setdefault(finding.host, []).append(finding.target.removeprefix("filesystem "))
        else:
            full = {host: ["/"] for host in self.hosts}  # no disk check to go by: the root filesystem's places
        if not full:
            raise ActionFailed("no full filesystem to free space on (the disk check failed for other reasons)")

        def work(transport, host):
            answer = transport.run(free_disk_command(step.params["places"], full[host]), timeout=600)
            if not answer.ok:
                return [], [answer.stderr.strip()[-200:] or f"exited {answer.status}"]
            freed = parse_freed(answer.stdout)
            places = ", ".join(f"{place} {megabytes(size)}" for place, size in freed.items() if size) or "nothing to free"
            return [f"freed {megabytes(sum(freed.values()))} on {', '.join(full[host])} ({places})"], \
                [line for line in answer.stderr.splitlines() if line.startswith("old-backups")]

        return self._summarise("", self.on_hosts(sorted(full), work)).strip()

    def act_backup(self, step: Step, failing) -> str:
        from vigil import backup
        from vigil.errors import VigilError

        if not self.database:
            raise ActionFailed("the inventory runs no database host to back up")
        host = self.hosts[self.database].as_admin()
        try:
            with backup.connect(self.inventory, host) as transport:
                made = backup.ask(transport, host, "create", step.params["label"])
        except VigilError as error:
            raise ActionFailed(str(error)) from None
        return f"backup {made.get('id', '?')} on {self.database} ({megabytes(made.get('size', 0))})"

    def act_notify(self, step: Step, failing) -> str:
        message = step.params["message"].format_map(_Placeholders(env=self.env, incident=self.incident.id,
                                                                  runbook=self.incident.data.get("title", "")))
        url = self.secrets.get("ALERT_WEBHOOK_URL", "")
        if not url:
            self.say(f"  notify: {message}")
            if self.secrets_problem:
                raise ActionFailed(f"not sent: the {self.env} secrets could not be read ({self.secrets_problem}): {message}")
            return f"no ALERT_WEBHOOK_URL in the {self.env} secrets, so only printed: {message}"
        error = post_alert(url, {"text": message, "vigil": {"env": self.env, "incident": self.incident.id, "event": "runbook"}})
        if error:
            raise ActionFailed(f"the alert webhook refused it ({error}): {message}")
        return f"posted to the alert webhook: {message}"

    def act_renew_certificate(self, step: Step, failing: list[Finding] | None) -> str:
        from vigil.errors import ExitCode
        from vigil.play import Target, run_playbook
        from vigil.report import Environment, Reporter
        from vigil.runner import RunOptions

        hosts = sorted({finding.host for finding in failing}) if failing is not None else self.hosts_running("nginx")
        certbot = [host for host in hosts if self.vars(host)["nginx_tls"] == "certbot"]
        local = [host for host in hosts if host not in certbot]
        if certbot:
            def work(transport, host):
                name, _, _ = I.site_of(self.vars(host))
                answer = transport.run(script('certbot renew --cert-name "$1" --force-renewal --quiet && systemctl reload nginx.service',
                                              name), timeout=300)
                return "renewed" if answer.ok else RuntimeError(answer.stderr.strip()[-200:])

            answers = self.on_hosts(certbot, work)
            problems = [f"{host}: {answer}" for host, answer in answers.items() if isinstance(answer, Exception)]
            if problems:
                worked = sorted(host for host, answer in answers.items() if not isinstance(answer, Exception))
                raise ActionFailed(f"renewed on {', '.join(worked) or 'no host'}; failed: {'; '.join(problems)}")
        if local:
            # The nginx role issues a fresh certificate from the env's CA when the installed one is close to expiry.
            quiet = io.StringIO()
            code, _ = run_playbook("incident renew_certificate", "onboard", Target(self.env, ",".join(local)), RunOptions(),
                                   Reporter(Environment(stdout=quiet, stderr=quiet), json_output=True), only_roles=["nginx"])
            if code != ExitCode.OK:
                raise ActionFailed(f"the nginx role failed on {', '.join(local)}")
        return f"renewed the certificate on {', '.join(hosts)}"


class _Placeholders(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def unique_path(directory: Path, stem: str, suffix: str) -> Path:
    """directory/stem+suffix, or with -2, -3... when that is taken: nothing collected is ever overwritten."""
    for number in range(1, 1000):
        path = directory / f"{stem}{'' if number == 1 else f'-{number}'}{suffix}"
        if not path.exists():
            return path
    raise ActionFailed(f"{directory}: no free name for {stem}{suffix}")


def post_alert(url: str, payload: dict, timeout: float = 10) -> str:
    """POST Slack-compatible JSON; "" on success, else why (never the URL: it is a secret)."""
    import requests

    try:
        response = requests.post(url, json=payload, timeout=timeout)
    except requests.RequestException as error:
        return type(error).__name__
    return "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"


def read_health_events(library: HostLibrary, since: str) -> tuple[list[dict], dict[str, str]]:
    """The probes' state changes on every host since `since` (UTC ISO), and the hosts that could not say."""
    def work(transport, host):
        answer = transport.run(Command(("cat", "--", library.vars(host).path("monitor_events_file")), sudo=True))
        events = []
        for line in answer.stdout.splitlines() if answer.ok else []:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("at", "") >= since:
                events.append({**event, "host": event.get("host") or host})
        return events

    answers = library.on_hosts(list(library.hosts), work)
    problems = {host: str(answer) for host, answer in answers.items() if isinstance(answer, Exception)}
    return [event for answer in answers.values() if isinstance(answer, list) for event in answer], problems




# --- a runbook run, recorded ----------------------------------------------------------------------


def run_runbook(env: str, name: str, check_only: bool, confirm: Callable[[Step], bool], say: Callable[[str], None],
                incident_id: str | None = None):
    """Load and validate the runbook (before touching anything), then run it on the env's hosts, every step
    on the incident's timeline and every action in the local audit log. Returns (run, incident or None).

    The incident record is opened once a check fails or an action is about to run, with the steps before
    it: a run that finds nothing wrong opens none, nor does a --check run (it changes nothing), unless
    `incident_id` names one to add to.
    """
    from vigil import incident_record as R
    from vigil import runbook as RB
    from vigil.errors import ConfigError, VigilError
    from vigil.report import Environment, append_local_audit, audit_record

    book = RB.load(name)
    named = R.load_incident(incident_id) if incident_id else None
    if named and named.data.get("env") != env:
        raise ConfigError(f"incident {named.id} is about {named.data.get('env')}, not {env}")
    library = HostLibrary(env, None, say)
    started = time.time()
    title = f"runbook {name}" + (" (check only)" if check_only else "")
    opened: dict = {"incident": None, "run": None}
    waiting: list[dict] = []  # timeline entries from before the record was opened

    def the_record():
        """The incident record, opened (or the named one joined) now, with what happened so far."""
        if opened["incident"] is None:
            incident = named or R.open_incident(env, name, when=started)
            opened.update(incident=incident, run=incident.begin_run(name, check_only, when=started))
            incident.add(title, "started", book.description, kind="run", when=started)
            for entry in waiting:
                incident.add(**entry)
            library.incident = incident
            if not named:
                say(f"  (incident {incident.id} opened)")
        return opened["incident"]

    def record(result) -> None:
        step = result.step
        entry = {"step": f"{step.id}: {step.describe()}", "result": result.outcome, "detail": result.detail, "kind": step.kind,
                 "failing": [f"{finding.host} {finding.target}" for finding in result.failing], "when": time.time()}
        if opened["incident"] is None and not (result.outcome == "failed" and not check_only):
            waiting.append(entry)
        else:
            the_record().add(**entry)
        if step.kind == "action" and result.outcome in ("done", "failed"):
            append_local_audit(audit_record(f"incident.run {name}: {step.id} ({step.type})", env, [],
                                            "ok" if result.outcome == "done" else "failed", time.time()), Environment())
        say(f"  {MARKS.get(result.outcome, '-')} {step.id} ({step.type}): {result.outcome}"
            + (f": {result.detail}" if result.detail else ""))

    # An action writes what it collects into the record's directory: the record exists before it runs.
    library.before_action = lambda: None if check_only else the_record()
    if named:
        the_record()
    say(f"{name} on {env}: {book.description}" + (" (check only)" if check_only else ""))
    with R.runbook_lock(env, exclusive=not check_only):
        outcome, why = "interrupted", ""  # until the engine says otherwise: Ctrl-C or a crash
        try:
            run = RB.execute(book, library, confirm, check_only, record)
            outcome = run.outcome
        except VigilError as error:
            outcome, why = "stopped", error.message  # a confirmation that could not be asked for
            raise
        finally:
            # A run cut short still closes its entry: the timeline says how far it got.
            if opened["incident"] is not None:
                opened["incident"].add(f"runbook {name}", outcome, why, kind="run")
                opened["incident"].end_run(opened["run"], outcome)
    if opened["incident"] is None and not check_only:
        say("  nothing was failing: no incident opened")
    return run, opened["incident"]


MARKS = {"passed": "ok", "done": "ok", "failed": "FAIL", "skipped": "--", "would run": "..", "declined": "no"}

SNAPSHOT = r'''
app=$1
section() { printf '\n===== %s =====\n' "$1"; }
section "units"; systemctl list-units --all --no-pager --plain --no-legend "$app-*" nginx.service 'postgresql*' 'vigil-*' 2>&1
section "failed units"; systemctl list-units --state=failed --no-pager --plain --no-legend 2>&1
section "disk"; df -hP 2>&1
section "memory"; free -m 2>&1
section "load"; uptime 2>&1
section "top processes"; ps -eo pid,user,pcpu,pmem,rss,etime,comm --sort=-pcpu 2>&1 | head -n 25
section "listening"; ss -Hltnp 2>&1
section "recent logs"; journalctl --no-pager -n 400 -u "$app-*" -u nginx.service -u 'postgresql*' -u 'vigil-*' 2>&1
section "nginx error log"; tail -n 200 /var/log/nginx/error.log 2>&1
section "probe state"; cat /var/lib/vigil/probe-state.json 2>&1
section "backup status"; cat /var/lib/vigil/backup-status.json 2>&1
'''


def snapshot(env: str, into: Path, when: float | None = None) -> tuple[Path, dict[str, str]]:
    """A diagnostics bundle of every host (units, logs, nginx's error log, disk, top processes), each line
    redacted, saved as a 0600 tar.gz in `into`. Returns (its path, {host: why it could not be read})."""
    import tarfile

    from vigil.config import load_role

    library = HostLibrary(env, None, lambda text: None)
    app = library.inventory.vars_for(next(iter(library.hosts.values())), [load_role("app")]).string("app_name", r"[a-z][a-z0-9-]{0,30}")

    def work(transport, host):
        answer = transport.run(script(SNAPSHOT, app), timeout=120)
        return "\n".join(I.mask_line(line) for line in (answer.stdout + answer.stderr).splitlines()) + "\n"

    answers = library.on_hosts(list(library.hosts), work)
    when = when if when is not None else time.time()
    into.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = unique_path(into, f"snapshot-{env}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(when))}", ".tar.gz")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        with tarfile.open(fileobj=handle, mode="w:gz") as archive:
            for host, answer in sorted(answers.items()):
                text = (answer if isinstance(answer, str) else f"could not be read: {answer}\n").encode()
                member = tarfile.TarInfo(f"{path.name.removesuffix('.tar.gz')}/{host}.txt")
                member.size, member.mtime, member.mode = len(text), int(when), 0o600
                archive.addfile(member, io.BytesIO(text))
    return path, {host: str(answer) for host, answer in answers.items() if not isinstance(answer, str)}
