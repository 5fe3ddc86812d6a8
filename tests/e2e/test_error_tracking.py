"""Error tracking on the session's hosts: Bugsink on vps4 (the monitor host, roles/errors) and the sample app
on vps1 and vps2, whose backend, frontend server and pages report through the Sentry SDKs to the DSN
secrets.push derived. Errors are thrown for real by the sandbox-only routes; Bugsink is read back through
its API with vigil's read-only token. Faults are real: Bugsink's web process stopped, and its port dropped
by vps4's firewall for a web host (the SDK then waits on a black hole, not a refusal).

Latencies are printed, not asserted: the event's way to Bugsink is measured in bench/ (never a timed test).
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from playwright.sync_api import sync_playwright

from tests.support.sandbox_hosts import MONITOR_HOST, REPO, invoke
from vigil.audit.browser import chromium
from vigil.core.inventory import load_inventory
from vigil.incident import records
from vigil.vault.error_tracking import PROJECT_ID, api_token, dsn, errors_site
from vigil.vault.store import load

CA = str(REPO / ".vigil" / "sandbox" / "ca" / "ca.crt")
WEB, OTHER_WEB = "vps1", "vps2"
# Generous: an event is digested in about a second; a deadline only ends a test that would never pass.
EVENT_DEADLINE = 60
# As inventory/sandbox.yml's monitoring intervals make an alert arrive (test_monitoring.py).
ALERT_WITHIN = 90


@pytest.fixture(scope="module", autouse=True)
def own_secrets(deployed, sandbox):
    """The repository's sandbox secrets on both web hosts (a module before may have pushed scratch ones),
    the app answering again after the restart a push makes."""
    pushed = invoke("secrets.push", "--limit=vps1,vps2", timeout=600)
    assert pushed.code == 0, pushed.stdout[-3000:] + pushed.stderr
    for host in (WEB, OTHER_WEB):
        deadline = time.time() + 120
        while requests.get(f"https://{sandbox.addresses[host]}/api/health", verify=CA, timeout=15).status_code != 200:
            assert time.time() < deadline, f"{host}'s API did not answer after the push"
            time.sleep(1)


def site():
    return errors_site(load_inventory("sandbox"))


def issues(kind_marker: str) -> list[dict]:
    """Bugsink's issues whose message holds `kind_marker`, read as incident.status reads them."""
    tracker = site()
    token = api_token(load("sandbox")["BUGSINK_SECRET_KEY"])
    answer = requests.get(f"{tracker.origin}/api/canonical/0/issues/?project={PROJECT_ID}&sort=digest_order"
                          "&order=desc", headers={"Authorization": f"Bearer {token}"}, verify=CA, timeout=15)
    assert answer.status_code == 200, answer.text[:300]
    return [issue for issue in answer.json()["results"] if kind_marker in (issue.get("calculated_value") or "")]


def wait_for_issue(kind_marker: str, events: int = 1) -> tuple[dict, float]:
    """The issue of `kind_marker` once it holds `events` events, and the seconds that took."""
    start = time.time()
    while time.time() - start < EVENT_DEADLINE:
        found = issues(kind_marker)
        if found and found[0]["digested_event_count"] >= events:
            return found[0], time.time() - start
        time.sleep(0.5)
    raise AssertionError(f"no issue with {events} event(s) for {kind_marker!r} in Bugsink within {EVENT_DEADLINE} s")


def live_release(sandbox, host: str, service: str = "backend") -> str:
    """The release `service`'s live color runs on `host` (each service has its own releases)."""
    written = sandbox.ssh(host, f"cat /run/together-pray/{service}-{sandbox.live_color(host, service)}.release.env")
    return written.strip().removeprefix("RELEASE_ID=")


def kind() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


def test_bugsink_serves_over_https_and_every_web_host_has_its_dsn(deployed, sandbox):
    tracker = site()
    assert tracker.host == MONITOR_HOST
    assert requests.get(f"{tracker.origin}/health/ready", verify=CA, timeout=15).status_code == 200
    expected = dsn(tracker, load("sandbox")["BUGSINK_SECRET_KEY"])
    for host in (WEB, OTHER_WEB):
        backend = sandbox.ssh(host, "cat /etc/together-pray/backend.env")
        frontend = sandbox.ssh(host, "cat /etc/together-pray/frontend.env")
        assert f"SENTRY_DSN={expected}" in backend.splitlines()
        assert {f"SENTRY_DSN={expected}", f"NEXT_PUBLIC_SENTRY_DSN={expected}"} <= set(frontend.splitlines())
    # Its pages and API need a login or a token: nothing of it is public but the ingest endpoints.
    assert requests.get(f"{tracker.origin}/api/canonical/0/issues/?project=1", verify=CA,
                        timeout=15).status_code in (401, 403)
    # The pages may send their errors there.
    policy = requests.get(f"https://{sandbox.addresses[WEB]}/", verify=CA, timeout=15).headers[
        "content-security-policy"]
    assert f"connect-src 'self' {tracker.origin}" in policy


def test_a_backend_error_reaches_bugsink_with_its_release_and_groups_with_itself(deployed, sandbox):
    name = kind()
    url = f"https://{sandbox.addresses[WEB]}/api/test/error?kind={name}"
    thrown = time.time()
    answer = requests.get(url, verify=CA, timeout=15)
    assert answer.status_code == 500 and name not in answer.text  # the visitor sees no detail
    issue, took = wait_for_issue(f"vigil test error: {name}")
    print(f"backend error in Bugsink {took:.1f} s after the request ({time.time() - thrown:.1f} s in all)")
    assert issue["calculated_type"] == "Error"
    assert live_release(sandbox, WEB) in issue["events_at"]
    # The same error again, from the other web host: the same group, two events.
    assert requests.get(f"https://{sandbox.addresses[OTHER_WEB]}/api/test/error?kind={name}", verify=CA,
                        timeout=15).status_code == 500
    again, _ = wait_for_issue(f"vigil test error: {name}", events=2)
    assert again["id"] == issue["id"]
    # Another error is another group.
    other = kind()
    requests.get(f"https://{sandbox.addresses[WEB]}/api/test/error?kind={other}", verify=CA, timeout=15)
    assert wait_for_issue(f"vigil test error: {other}")[0]["id"] != issue["id"]
    # A 4xx the app chose is no error: an anonymous post is refused, and nothing is reported for it.
    assert requests.post(f"https://{sandbox.addresses[WEB]}/api/prayers", json={"body": name}, verify=CA,
                         timeout=15).status_code == 401


def test_the_frontends_server_and_browser_errors_reach_bugsink(deployed, sandbox):
    release = live_release(sandbox, WEB, "frontend")
    server_error = kind()
    page = f"https://{sandbox.addresses[WEB]}/test/error?kind={server_error}"
    assert requests.get(page, verify=CA, timeout=15).status_code == 500
    issue, took = wait_for_issue(f"vigil test frontend error: {server_error}")
    print(f"frontend server error in Bugsink {took:.1f} s after the request")
    assert release in issue["events_at"]

    browser_error = kind()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
        try:
            # Chromium does not know the sandbox's CA: certificates are not checked here (audit.security does).
            context = browser.new_context(ignore_https_errors=True)
            violations = []
            tab = context.new_page()
            tab.on("console", lambda message: violations.append(message.text)
                   if "Content Security Policy" in message.text else None)
            tab.goto(f"https://{sandbox.addresses[WEB]}/test/client-error?kind={browser_error}", wait_until="load")
            issue, took = wait_for_issue(f"vigil test browser error: {browser_error}")
        finally:
            browser.close()
    print(f"browser error in Bugsink {took:.1f} s after the page loaded")
    assert violations == []  # the page's policy let the SDK post to Bugsink
    assert release in issue["events_at"]


def test_incident_status_and_the_post_mortem_show_the_new_error_groups(deployed, sandbox):
    # An incident open (as a runbook opens one when its check fails), then an error thrown while it lasts.
    incident = records.open_incident("sandbox", "e2e: errors during an incident")
    name = kind()
    requests.get(f"https://{sandbox.addresses[WEB]}/api/test/error?kind={name}", verify=CA, timeout=15)
    wait_for_issue(f"vigil test error: {name}")
    run = invoke("incident.status", "--json", timeout=300)
    report = json.loads(run.stdout[run.stdout.index("{"):])
    monitor = next(host for host in report["hosts"] if host["host"] == MONITOR_HOST)
    check = next(check for check in monitor["checks"] if check["name"] == "new errors")
    assert check["state"] == "warn" and f"vigil test error: {name}" in check["detail"], check
    assert "since the last deploy" in check["detail"]
    token = api_token(load("sandbox")["BUGSINK_SECRET_KEY"])
    assert token not in run.stdout + run.stderr
    report = invoke("incident.report", incident.id, timeout=300)
    assert report.code == 0, report.stdout[-3000:] + report.stderr
    section = report.stdout.split("## New errors (error tracker)", 1)[1].split("\n## ", 1)[0]
    release = live_release(sandbox, WEB)
    assert f"vigil test error: {name} (GET /test/error): 1 event(s), in {release}" in section, section
    assert token not in report.stdout + report.stderr


def test_with_bugsink_down_the_app_serves_every_request_and_the_alert_fires(alerting, sandbox):
    """Bugsink's web process stopped (the probe fails: ErrorTrackingDown) and its port dropped for vps1 (the
    SDK's sends go into a black hole): every request to the app still gets its answer, errors included."""
    drop = f"INPUT -s {sandbox.addresses[WEB]} -p tcp --dport 443 -j DROP"
    off = time.time()
    sandbox.ssh(MONITOR_HOST, f"systemctl stop bugsink-web.service && iptables -I {drop}")
    try:
        assert requests.get(f"{site().origin}/health/ready", verify=CA, timeout=15).status_code == 502

        def ask(number: int) -> tuple[str, int, float]:
            path = f"/api/test/error?kind=down-{number}" if number % 2 else "/api/health"
            started = time.time()
            answer = requests.get(f"https://{sandbox.addresses[WEB]}{path}", verify=CA, timeout=20)
            took = time.time() - started
            time.sleep(0.25)
            return path, answer.status_code, took

        # Two at a time, under the API's rate limit (nginx_api_rate_per_second): each answer is the app's.
        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(ask, range(24)))
        assert [(path, code) for path, code, _ in answers if code != (500 if "error" in path else 200)] == []
        print(f"slowest answer while Bugsink was down: {max(took for *_, took in answers):.2f} s")
        alerting.wait_for("FIRING", "ErrorTrackingDown", MONITOR_HOST, off, ALERT_WITHIN)
    finally:
        sandbox.ssh(MONITOR_HOST, f"iptables -D {drop}; systemctl start bugsink-web.service")
    # Back: a new error is tracked again (the alert resolves a probe later; the modules after this one
    # read no alerts, so the suite does not wait for it).
    name = kind()
    requests.get(f"https://{sandbox.addresses[WEB]}/api/test/error?kind={name}", verify=CA, timeout=15)
    wait_for_issue(f"vigil test error: {name}")
