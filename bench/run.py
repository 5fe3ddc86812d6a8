"""Every benchmark in one run, side by side: `invoke bench` (or `./scripts/bench` on a fresh clone).

Boots fresh sandbox VPSes (any sandbox already up is taken down first: figures come from known
hosts), then, each comparison in alternating rounds (median, min and max of --rounds):

  0. the CLI's own start-up, before any VPS is up: `invoke --help TASK` and `invoke --list` against a
     bare `import invoke` (bench/startup.py)
  1. a no-op re-run of the full onboarding: vigil against Ansible and pyinfra (bench/onboard_noop.py)
  2. SSH round trips per host in those runs, counted on the hosts
  3. a backend deploy under load: vigil's warm redeploy and its rollback within the rollback window
     against a naive restart (bench/deploy_under_load.py)
  4. a full backup into the pgBackRest repository through vigil against raw pgbackrest and pg_dump -Fc,
     then the database host lost: RPO and RTO (bench/recovery.py)
  5. a VPS powered off to the alert at the webhook, with the monitor host's default intervals, and the
     monitor host's memory and CPU at rest watching 6 hosts (bench/alerting.py)
  6. a million-row PaaS database moved in: `backup.import` against a bare `pg_dump | pg_restore`
     between the same two servers (bench/importing.py)
  7. a preview of a branch beside an env holding a million rows: `preview.up` to serving, and the memory
     a running preview takes (bench/previews.py)
  8. past one server: the database leader's power cut to the first write, a planned switchover's write
     pause, failed requests through the balancer when a web host dies and in a rolling deploy, and the
     balancer's added latency (bench/ha.py)
  9. error tracking: an error thrown in the backend to its issue in Bugsink, and what a request that
     throws costs while Bugsink is unreachable (bench/errors.py)

Prints the summary table and writes bench/results/<date>.md (the machine, every table, the
targets, and the time per e2e module of the last test run on this clone: bench/suite.py). The
README's Performance section carries the summary table of the latest results file
(tests/unit/bench/test_bench.py holds them to each other). Leaves the sandbox down unless --keep.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (  # noqa: E402
    alerting,
    deploy_under_load,
    errors,
    ha,
    importing,
    onboard_noop,
    previews,
    recovery,
    startup,
    suite,
)
from bench.common import (  # noqa: E402
    REPO,
    SUMMARY_COLUMNS,
    BenchError,
    Spread,
    commit,
    invoke,
    machine,
    markdown_table,
)

RESULTS = REPO / "bench" / "results"
# An error's way into Bugsink takes well under a second: several per round give its worst case some weight.
ERROR_EVENTS_PER_ROUND = 4
SUMMARY_HEADING = "## Summary"


def summary(started: startup.StartupResult, noop: onboard_noop.NoopResult, deploy: deploy_under_load.DeployResult,
            lost: recovery.RecoveryResult, alerts: alerting.AlertingResult,
            moved: importing.ImportResult, preview: previews.PreviewResult, cluster: ha.HaResult,
            tracked: errors.ErrorsResult, times: suite.SuiteTimes | None) -> str:
    """The headline table: each comparison's medians, their ratio, and the target."""
    median = {name: Spread.of(measured.seconds).median for name, measured in noop.measured.items()}
    trips = {name: max(measured.sessions["vps1"]) for name, measured in noop.measured.items()}
    loads = deploy.loads

    def failed(kind: str) -> str:
        return f"{Spread.of([load.failed for load in loads[kind]]).median:.0f}"

    def p99(kind: str) -> str:
        return f"{Spread.of([load.percentile(0.99) for load in loads[kind]]).median:.0f} ms"

    def verdict(value: float, target: float) -> str:
        return f"{value:.2f} (target at most {target}): {'met' if value <= target else 'missed'}"

    rows = [
        started.summary_row(),
        [
            "no-op onboarding re-run, 1 host",
            f"{median['vigil']:.2f} s",
            f"the floor {median['floor']:.2f} s",
            verdict(noop.ratio("vigil", "floor"), onboard_noop.TARGETS["vigil/floor"]),
        ],
        [
            "no-op onboarding re-run, 1 host",
            f"{median['vigil']:.2f} s",
            f"Ansible {median['ansible']:.2f} s",
            verdict(noop.ratio("vigil", "ansible"), onboard_noop.TARGETS["vigil/ansible"]),
        ],
        [
            "no-op onboarding re-run, 1 host",
            f"{median['vigil']:.2f} s",
            f"pyinfra {median['pyinfra']:.2f} s",
            verdict(noop.ratio("vigil", "pyinfra"), onboard_noop.TARGETS["vigil/pyinfra"]),
        ],
        [
            f"no-op onboarding re-run, {onboard_noop.HOSTS} hosts",
            f"{median[onboard_noop.MANY]:.2f} s",
            f"vigil, 1 host {median['vigil']:.2f} s",
            verdict(noop.ratio(onboard_noop.MANY, "vigil"), onboard_noop.TARGETS[f"{onboard_noop.MANY}/vigil"]),
        ],
        [
            "SSH round trips per host, no-op onboarding",
            f"{trips['vigil']} ({noop.measured['vigil'].operations} operations)",
            f"the floor {trips['floor']}, Ansible {trips['ansible']}, pyinfra {trips['pyinfra']}",
            "the same on every host, whatever its operations"
            if noop.constant_round_trips()
            else "VARIES with the host",
        ],
        [
            "failed requests during a backend deploy",
            failed("vigil"),
            f"naive restart {failed('naive')}",
            "zero downtime" if failed("vigil") == "0" else "REQUESTS FAILED",
        ],
        ["p99 latency during a backend deploy", p99("vigil"), f"steady state {p99('steady')}", ""],
        [
            "warm redeploy of the backend under load",
            f"{deploy.median('vigil'):.1f} s, {failed('vigil')} failed",
            f"of which safety windows {deploy.windows} s",
            f"target at most {deploy_under_load.TARGETS['vigil']:g} s, 0 failed: "
            + ("met" if deploy.met("vigil") else "missed (see 3.)"),
        ],
        [
            "rollback within the window under load",
            f"{deploy.median('rollback'):.2f} s, {failed('rollback')} failed",
            f"the first rollback, no load {deploy.cold_rollback:.2f} s",
            f"target at most {deploy_under_load.TARGETS['rollback']:g} s, 0 failed: "
            + ("met" if deploy.met("rollback") else "missed (see 3.)"),
        ],
        [
            "full backup into the pgBackRest repository",
            f"{Spread.of(lost.backups['vigil']).median:.2f} s",
            f"raw pgbackrest {Spread.of(lost.backups['pgbackrest']).median:.2f} s, "
            f"pg_dump -Fc {Spread.of(lost.backups['pg_dump']).median:.2f} s",
            verdict(lost.wrapper_ratio, recovery.WRAPPER_TARGET),
        ],
        [
            "RPO: commits lost with the database host",
            f"{lost.rpo_seconds:.1f} s ({lost.acknowledged - lost.recovered} rows)",
            f"archive_timeout {lost.archive_timeout} s",
            "within 60 s" if lost.rpo_seconds <= 60 else "MORE THAN 60 s",
        ],
        [
            "RTO: database host lost to serving again",
            f"{lost.rto_seconds:.0f} s",
            f"restore step {lost.restore_seconds:.1f} s, restore drill {lost.drill_rto:.1f} s",
            "",
        ],
        [
            "VPS powered off to the alert at the webhook",
            f"{Spread.of(alerts.latencies).median:.0f} s",
            "default intervals (15 s scrapes, 45 s down)",
            "within 90 s" if Spread.of(alerts.latencies).median <= alerting.LATENCY_TARGET else "MORE THAN 90 s",
        ],
        [
            f"monitor host at rest, {alerts.watched} hosts watched",
            f"{sum(alerts.memory_mib.values()):.0f} MiB, {sum(alerts.cpu_percent.values()):.1f} % of a core",
            "Prometheus, Alertmanager, blackbox exporter",
            "",
        ],
        [
            "a million-row PaaS database moved in (backup.import, checks included)",
            f"{Spread.of(moved.vigil).median:.2f} s",
            f"bare pg_dump | pg_restore {Spread.of(moved.bare).median:.2f} s",
            verdict(moved.ratio, importing.TARGET_RATIO),
        ],
        [
            "a preview of a branch up to serving, beside a million rows",
            f"{Spread.of(preview.total).median:.1f} s",
            f"{Spread.of(preview.memory_mib).median:.0f} MiB per running preview",
            "recorded (no target)",
        ],
        *cluster.summary_rows(),
        *tracked.summary_rows(),
        suite.summary_row(times),
    ]
    return markdown_table(SUMMARY_COLUMNS, rows)


def report(day: str, rounds: int, started, noop, deploy, lost, alerts, moved, preview, cluster, tracked,
           times: suite.SuiteTimes | None, minutes: float) -> str:
    versions = ", ".join(noop.versions.values())
    return "\n".join([
        f"# Benchmarks, {day}",
        "",
        f"`invoke bench` (bench/run.py) at commit {commit()}: {rounds} rounds of each comparison, the order",
        f"rotated every round; each figure is the median, with min and max. The whole run took {minutes:.0f} minutes.",
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in machine()],
        f"- peers, installed from PyPI by the benchmark (bench/peers/requirements.txt): {versions}",
        "",
        SUMMARY_HEADING,
        "",
        summary(started, noop, deploy, lost, alerts, moved, preview, cluster, tracked, times),
        "",
        "## 0. The CLI's start-up",
        "",
        startup.DESCRIPTION,
        "",
        started.table(),
        "",
        started.import_table(),
        "",
        "## 1. No-op re-run of the full onboarding",
        "",
        f"vps1 has every role (web and database), vps2 to vps{onboard_noop.HOSTS} the web roles; all were onboarded by",
        f"vigil first ({noop.first_onboarding:.0f} s for the first run on {onboard_noop.HOSTS} fresh hosts). The peers",
        "(bench/peers/) check what bench/peers/export.py takes from vigil's own plan for vps1, and reported",
        "0 changed in check mode and in a real run before measuring. The floor (bench/peers/floor.py) is the least",
        "a check can cost: one paramiko connection and the facts vigil's run reads from vps1, in one command. Each",
        "run is a fresh process, start to exit, started once this machine (which also runs the VPSes) is quiet:",
        "under a quarter of a core busy.",
        "",
        noop.table(),
        "",
        *[f"- {line}" for line in noop.verdicts()],
        "",
        "## 2. SSH round trips",
        "",
        "Counted on the hosts: sshd (LogLevel VERBOSE) logs each session, a command or a file transfer, in",
        "the host's journal, read from this machine. vigil reads every fact a host's plan needs in one",
        "round trip and writes its audit line in one more; a no-op run sends nothing else.",
        "",
        noop.round_trip_table(),
        "",
        "## 3. Zero-downtime deploy under load",
        "",
        f"{deploy.requests}+ HTTPS page loads per loop through nginx on vps1, two clients with keep-alive; the",
        "frontend renders each page from the backend's data, so a gap in either fails a request. Release B (a",
        "copy of the sample with one comment added) is deployed over A, already on the host, then rolled back",
        "to A within the rollback window (A still running); those two stay together in the rotation.",
        "",
        deploy.table(),
        "",
        *[f"- {line}" for line in deploy.verdicts()],
        "",
        *([f"Naive restart failures over all rounds: {deploy.failures()}.", ""] if deploy.failures() else []),
        "## 4. Losing the database host, with a pgBackRest repository",
        "",
        f"vps1 (database and web), vps2 (web), vps3 (backup host); the app's database plus a {lost.rows:,}-row",
        f"table ({lost.size}). Full backups, {rounds} alternating rounds, each timed from this machine (vigil: a fresh",
        "process start to exit; the others: one SSH session):",
        "",
        lost.backup_table(),
        "",
        "Then a writer on vps1 committed a numbered row every 100 ms for 40 s and vps1 lost its power",
        "(SIGKILL to its container); a new VPS replaced it and was recovered by docs/runbooks/restore.md's",
        "steps. One loss per run:",
        "",
        lost.loss_table(),
        "",
        *[f"- {line}" for line in lost.verdicts()],
        "",
        "## 5. Monitoring from outside",
        "",
        "vps1 (database and web), vps2 to vps6 (web) and vps7 (the monitor host), onboarded with",
        "roles/monitoring's default intervals. vps2 powered off (`sandbox.poweroff`), then the seconds until",
        "a receiver on this machine (ALERT_WEBHOOK_URL) got FIRING HostDown; powered on and resolved before the",
        "next round. The monitor host's three daemons at rest, over a minute, from their processes (resident",
        "memory; CPU time counts in whole seconds, so 0.0 % is under a second in the minute):",
        "",
        alerts.table(),
        "",
        *[f"- {line}" for line in alerts.verdicts()],
        "",
        "## 6. Moving a database in",
        "",
        importing.DESCRIPTION,
        "",
        moved.table(),
        "",
        "Where backup.import's last round spent its time:",
        moved.where_the_time_went() + ".",
        "",
        *[f"- {line}" for line in moved.verdicts()],
        "",
        "## 7. A preview beside its env",
        "",
        previews.DESCRIPTION,
        "",
        preview.table(),
        "",
        "## 8. Past one server",
        "",
        *ha.layout(),
        "",
        cluster.table(),
        "",
        "## 9. Error tracking",
        "",
        errors.DESCRIPTION,
        "",
        tracked.table(),
        "",
        "## 10. The test suite's time",
        "",
        *suite.section(times),
        "",
    ])


def main(rounds: int = 5, requests: int = 2000, rows: int = 1_000_000, keep: bool = False) -> Path:
    if os.geteuid() != 0:
        raise BenchError("the benchmark boots sandbox VPSes: run it as root")
    if rounds < 5:
        raise BenchError(f"--rounds={rounds}: a median needs at least 5 rounds")
    began = time.monotonic()
    invoke("sandbox.down")
    started = startup.measure(rounds)  # first, while no VPS shares the machine
    try:
        noop = onboard_noop.measure(rounds)
        # The deploy benchmark boots its own vps1: nine idle VPSes would be noise in its latencies.
        invoke("sandbox.down")
        deploy = deploy_under_load.measure(rounds, requests)
        lost = recovery.measure(rows, rounds)
        alerts = alerting.measure(rounds)
        moved = importing.measure(rounds)
        preview = previews.measure(rounds)
        cluster = ha.measure(rounds)
        tracked = errors.measure(ERROR_EVENTS_PER_ROUND * rounds)
    finally:
        if not keep:
            invoke("sandbox.down")
    day = time.strftime("%Y-%m-%d", time.gmtime())
    text = report(day, rounds, started, noop, deploy, lost, alerts, moved, preview, cluster, tracked,
                  suite.SuiteTimes.read(), (time.monotonic() - began) / 60)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{day}.md"
    path.write_text(text)
    print()
    print(text)
    print(f"written: {path.relative_to(REPO)}")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up")
    options = parser.parse_args()
    try:
        main(options.rounds, options.requests, options.rows, options.keep)
    except BenchError as error:
        sys.exit(f"bench: {error}")
