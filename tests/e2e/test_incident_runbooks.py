"""Runbooks, alerts and post-mortems on the session's deployed hosts (vps1: web and database, vps2: web).

Alerts come from the monitor host (vps4): its Alertmanager posts to a receiver this test session runs on
the control machine (the `alerting` fixture, tests/support/alerts.py), exactly as it would to Slack.
"""

from __future__ import annotations

import tarfile
import time

import pytest
import requests

from tests.e2e.test_deploy import current_release, scratch_with_backend, variant
from tests.support.alerts import prometheus, scratch_secrets
from tests.support.sandbox_hosts import REPO, invoke
from vigil.core.errors import ExitCode

CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
# The sandbox's monitor host: a probe every 5 s, BackendDown after 20 s down, Alertmanager's 5 s wait.
ALERT_WITHIN = 90


def monitor_sees_up(sandbox, host: str, service: str, timeout: float = 120) -> None:
    """Wait until the monitor host's probe of `service` on `host` succeeds and no alert about it fires:
    a fault it never saw up is not a new outage."""
    query = f'probe_success{{job="site", host="{host}", service="{service}"}}'
    deadline = time.time() + timeout
    while time.time() < deadline:
        answer = prometheus(sandbox, "query", query=query)["result"]
        alerts = prometheus(sandbox, "alerts")["alerts"]
        firing = [a for a in alerts if a["labels"].get("host") == host and a["labels"]["alertname"] != "Watchdog"
                  and a["labels"].get("scope") == "web"]
        if answer and answer[0]["value"][1] == "1" and not firing:
            return
        time.sleep(3)
    raise AssertionError(f"the monitor host never saw {host}'s {service} up: {answer} {firing}")


def in_order(rows: list[str], *markers: str) -> None:
    """Each marker is on a row after the previous marker's row."""
    after = -1
    for marker in markers:
        found = next((i for i in range(after + 1, len(rows)) if marker in rows[i]), None)
        assert found is not None, f"no {marker!r} row after row {after}: {rows}"
        after = found


def steps(run) -> dict[str, dict]:
    return {step["id"]: step for step in run.json["steps"]}


def test_a_stopped_backend_is_alerted_restarted_by_its_runbook_recovered_and_reported(alerting, sandbox):
    unit = sandbox.live_unit("vps1", "backend")
    monitor_sees_up(sandbox, "vps1", "backend")
    stopped = time.time()
    sandbox.ssh("vps1", f"systemctl stop {unit}")
    status = invoke("incident.status", "--json", "--limit=vps1", timeout=300)
    assert status.code == ExitCode.HOST_FAILED and status.json["verdict"] == "unhealthy"
    assert alerting.wait_for("FIRING", "BackendDown", "vps1", stopped, ALERT_WITHIN + 30) <= ALERT_WITHIN

    run = invoke("incident.run", "backend-down", "--yes", "--json", timeout=600)
    assert run.code == 0, run.stdout[-3000:] + run.stderr
    done = steps(run)
    assert run.json["outcome"] == "resolved" and done["health"]["failing"] == ["vps1 backend"]
    assert (
        done["restart"]["outcome"] == "done"
        and unit in done["restart"]["detail"]
        and "vps2" not in done["restart"]["detail"]
    )
    assert done["recovered"]["outcome"] == "passed" and "escalate" not in done
    assert sandbox.ssh("vps1", f"systemctl is-active {unit}").strip() == "active"
    alerting.wait_for("RESOLVED", "BackendDown", "vps1", stopped, ALERT_WITHIN + 30)

    incident = run.json["incident"]
    report = invoke("incident.report", incident, timeout=300)
    assert report.code == 0, report.stdout[-3000:] + report.stderr
    text = report.stdout
    assert "## Timeline (UTC)" in text and "## Follow-ups" in text
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stopped - 1))
    rows = [line for line in text.splitlines() if line.startswith("| 20") and line[2:22] >= since]
    # In this order after the stop.
    in_order(
        rows,
        "alert on vps1 | BackendDown firing",
        "health: ",
        "restart: ",
        "recovered: ",
        "alert on vps1 | BackendDown resolved",
    )
    window = next(line for line in text.splitlines() if line.startswith("- Window: "))
    assert "from the monitor host's alerts" in window and window[10:30] >= since
    assert (REPO / ".vigil" / "incidents" / incident / "postmortem.md").read_text() in text

    again = invoke("incident.run", "backend-down", "--yes", "--json", timeout=600)
    assert again.code == 0 and list(steps(again)) == ["health"] and again.json["outcome"] == "resolved"
    # Deduplicated: one message when it fired and one when it resolved; nothing about the other web host.
    sent = [line for line in alerting.alerts(stopped) if line[2:] == ("BackendDown", "vps1")]
    assert [status for _, status, _, _ in sent] == ["FIRING", "RESOLVED"]
    assert [line for line in alerting.alerts(stopped) if line[3] == "vps2"] == []


def test_a_release_that_fails_after_its_health_gate_is_rolled_back_by_bad_deploy(deployed, sandbox, tmp_path):
    def fail_after_the_gate(source):
        path = source / "src" / "health.controller.ts"
        path.write_text(path.read_text().replace(
            'await this.dataSource.query("SELECT 1");',
            'if (process.uptime() > 75) throw new Error("fails once the deploy is over");\n'
            '      await this.dataSource.query("SELECT 1");'))

    inventory = scratch_with_backend(sandbox, tmp_path, variant(tmp_path, "fails-later", fail_after_the_gate))
    good = {host: current_release(sandbox, host) for host in ("vps1", "vps2")}
    try:
        rolled_back_by_bad_deploy(sandbox, inventory, good)
    finally:
        # However it failed, the later modules find the session's hosts serving what they served.
        for host, release in good.items():
            if current_release(sandbox, host) != release:
                invoke("deploy.rollback", "--app=backend", f"--to={release}", f"--limit={host}", inventory=inventory,
                       timeout=900)


def rolled_back_by_bad_deploy(sandbox, inventory, good):
    deploy = invoke("deploy.backend", "--json", inventory=inventory, timeout=900)
    assert deploy.code == 0, deploy.stdout[-3000:] + deploy.stderr  # it passed its health gate
    bad = current_release(sandbox, "vps1")
    assert bad != good["vps1"] and current_release(sandbox, "vps2") == bad
    deadline = time.time() + 120
    while any(
        requests.get(f"https://{sandbox.addresses[host]}/api/health", verify=str(CA), timeout=10).status_code == 200
        for host in ("vps1", "vps2")
    ):
        assert time.time() < deadline, "the variant never started failing on both hosts"
        time.sleep(3)

    run = invoke("incident.run", "bad-deploy", "--yes", "--json", inventory=inventory, timeout=900)
    assert run.code == 0, run.stdout[-3000:] + run.stderr
    done = steps(run)
    assert run.json["outcome"] == "resolved" and done["rollback"]["outcome"] == "done"
    assert sorted(done["health"]["failing"]) == ["vps1 backend", "vps2 backend"]
    assert {host: current_release(sandbox, host) for host in ("vps1", "vps2")} == good
    for host in ("vps1", "vps2"):
        assert '"status": "bad"' in sandbox.ssh(host, f"cat /srv/together-pray/backend/releases/{bad}/.vigil-bad")

    again = invoke("incident.run", "bad-deploy", "--yes", "--json", inventory=inventory, timeout=600)
    assert again.code == 0 and list(steps(again)) == ["health"]
    assert {host: current_release(sandbox, host) for host in ("vps1", "vps2")} == good


def test_a_full_disk_is_reported_and_the_known_places_freed_on_that_host_only(deployed, sandbox):
    sandbox.ssh("vps2", "mkdir -p /var/log && mount -t tmpfs -o size=16m vigil-e2e-logs /var/log && "
                        "head -c 15000000 /dev/zero > /var/log/e2e-app.log.1 && echo kept > /var/log/e2e-app.log")
    try:
        check = invoke("incident.run", "disk-full", "--check", "--json", timeout=300)
        assert check.code == 0 and check.json["outcome"] == "checked"
        assert (
            steps(check)["disk"]["failing"] == ["vps2 filesystem /var/log"]
            and steps(check)["free"]["outcome"] == "would run"
        )
        assert sandbox.ssh("vps2", "ls /var/log").split() == ["e2e-app.log", "e2e-app.log.1"]  # --check changed nothing

        run = invoke("incident.run", "disk-full", "--yes", "--json", timeout=600)
        assert run.code == 0, run.stdout[-3000:] + run.stderr
        freed = steps(run)["free"]["detail"]
        assert freed.startswith("vps2: freed 15.0 MB on /var/log (rotated-logs 15.0 MB)") and "vps1" not in freed
        assert sandbox.ssh("vps2", "ls /var/log").split() == ["e2e-app.log"]  # the live log stays
        again = invoke("incident.run", "disk-full", "--yes", "--json", timeout=300)
        assert again.code == 0 and list(steps(again)) == ["disk"]
    finally:
        sandbox.ssh("vps2", "umount /var/log")


# (runbook, the fault, the host, what the first run must have done)
FAULTS = [
    ("frontend-down", "systemctl stop {frontend}", "vps2", "restart"),
    ("db-down", "systemctl stop postgresql.service", "vps1", "restart"),
    # A certificate with 5 days left where nginx's is: the nginx role puts the env's own back.
    ("cert-expiring", "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 5 -subj /CN=e2e "
                      "-keyout /tmp/e2e.key -out /etc/ssl/vigil/{address}.crt 2>/dev/null", "vps2", "renew"),
]


@pytest.mark.parametrize("runbook, fault, host, action", FAULTS, ids=[fault[0] for fault in FAULTS])
def test_each_runbook_mends_its_fault_and_a_second_run_changes_nothing(deployed, sandbox, runbook, fault, host, action):
    sandbox.ssh(host, fault.format(frontend=sandbox.live_unit(host, "frontend"), address=sandbox.addresses[host]))
    first = invoke("incident.run", runbook, "--yes", "--json", timeout=600)
    assert first.code == 0 and first.json["outcome"] == "resolved", first.stdout[-3000:] + first.stderr
    assert steps(first)[action]["outcome"] == "done"
    releases = {name: current_release(sandbox, name) for name in ("vps1", "vps2")}
    second = invoke("incident.run", runbook, "--yes", "--json", timeout=600)
    assert second.code == 0 and second.json["outcome"] == "resolved" and len(second.json["steps"]) == 1
    assert {name: current_release(sandbox, name) for name in ("vps1", "vps2")} == releases
    for web in ("vps1", "vps2"):
        answer = requests.get(f"https://{sandbox.addresses[web]}/api/prayers", verify=str(CA), timeout=10)
        assert answer.status_code == 200


def test_a_runbook_with_a_bad_step_is_refused_before_anything_runs_and_confirmation_is_required(
    deployed, sandbox, tmp_path
):
    broken = REPO / "playbooks" / "runbooks" / "e2e-broken.yml"
    broken.write_text("description: broken\nsteps:\n  - id: health\n    check: http\n    resolves: true\n"
                      "  - action: restart\n    on: nothing\n")
    try:
        refused = invoke("incident.run", "e2e-broken", "--yes")
    finally:
        broken.unlink()
    assert (
        refused.code == ExitCode.BAD_INPUT
        and "e2e-broken.yml:7: on: 'nothing' is not an earlier step" in refused.stderr
    )
    unit = sandbox.live_unit("vps2", "frontend")
    sandbox.ssh("vps2", f"systemctl stop {unit}")
    try:
        unconfirmed = invoke("incident.run", "frontend-down", timeout=600)
        assert unconfirmed.code == ExitCode.BAD_INPUT and "pass --yes" in unconfirmed.stderr
        assert sandbox.ssh("vps2", f"systemctl is-active {unit}", check=False).strip() == "inactive"
    finally:
        sandbox.ssh("vps2", f"systemctl start {unit}")


def test_a_snapshot_is_a_private_redacted_archive_of_every_host(deployed, sandbox):
    run = invoke("incident.snapshot", timeout=300)
    assert run.code == 0, run.stdout + run.stderr
    path = REPO / run.stdout.split("snapshot: ", 1)[1].split()[0]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(path) as archive:
        texts = {
            member.name.rsplit("/", 1)[1]: archive.extractfile(member).read().decode()
            for member in archive.getmembers()
        }
    assert set(texts) == {"vps1.txt", "vps2.txt", "vps3.txt", "vps4.txt"}
    for section in ("===== units", "===== disk", "===== top processes", "===== recent logs", "===== nginx error log"):
        assert section in texts["vps2.txt"]
    # The backup host's own: what its repository holds, read by pgBackRest.
    assert "===== backup repository" in texts["vps3.txt"] and '"together-pray"' in texts["vps3.txt"]
    # The monitor host's own: what Alertmanager sends now (the heartbeat, at least, always fires).
    assert "===== alerts firing (Alertmanager)" in texts["vps4.txt"] and '"Watchdog"' in texts["vps4.txt"]
    password = sandbox.ssh(
        "vps1", "sed -n 's/^DATABASE_URL=.*:\\(.*\\)@.*/\\1/p' /etc/together-pray/backend.env"
    ).strip()
    assert password and all(password not in text for text in texts.values())


def test_the_sentry_dsn_from_secrets_is_in_the_backend_and_frontend_environment(deployed, sandbox, tmp_path):
    dsn = "https://e2e0public0key@o42.ingest.sentry.example.org/42"
    extra = scratch_secrets(tmp_path, SENTRY_DSN=dsn)
    pushed = invoke("secrets.push", "--limit=vps1,vps2", extra_env=extra, timeout=600)
    try:
        assert pushed.code == 0, pushed.stdout[-3000:] + pushed.stderr
        assert dsn not in pushed.stdout + pushed.stderr
        for host in ("vps1", "vps2"):
            for service in ("backend", "frontend"):
                # The live color and, within the rollback window, the one a deploy left running: an instant
                # rollback to it must not bring the old secrets back.
                listing = sandbox.ssh(host, "systemctl list-units --state=active --plain --no-legend "
                                            f"'together-pray-{service}@*.service'")
                running = [line.split()[0] for line in listing.splitlines() if line.strip()]
                assert sandbox.live_unit(host, service) in running, (host, listing)
                for unit in running:
                    environment = sandbox.ssh(
                        host, f"tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value {unit})/environ"
                    )
                    assert f"SENTRY_DSN={dsn}" in environment.splitlines(), (host, unit)
    finally:
        restored = invoke("secrets.push", "--limit=vps1,vps2", timeout=600)
    assert restored.code == 0, restored.stdout[-3000:] + restored.stderr
