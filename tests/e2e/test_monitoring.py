"""Monitoring from outside, on the session's hosts: vps4 (the monitor host) watches vps1 (web and
database), vps2 (web) and vps3 (backup). Its Alertmanager posts to a local receiver (tests/support/alerts.py).

Faults are real: a web VPS powered off and booted again, its backend stopped, maintenance mode turned
on, the monitor host itself powered off. The sandbox's intervals are short (inventory/sandbox.yml: a
scrape every 5 s, alerts after 20 s down, a heartbeat every 20 s), so an alert arrives within a minute.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import requests

from tests.support.alerts import prometheus
from tests.support.sandbox_hosts import MONITOR_HOST, REPO, invoke, tcp_probe

CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
WEB, OTHER_WEB = "vps2", "vps1"
SCRAPE_INTERVAL = 5
# An alert: a failed probe (up to a 4 s timeout), 20 s down, an evaluation and Alertmanager's 5 s wait.
ALERT_WITHIN = 90
HEARTBEAT_EVERY = 20
# The alerts that say a host or its site is down.
AVAILABILITY = ("HostDown", "BackendDown", "FrontendDown")


def wait_until(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_every_target_is_scraped_and_the_exporters_answer_the_monitor_host_only(alerting, sandbox):
    def all_up():
        targets = prometheus(sandbox, "targets")["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_until(all_up, 60, "every target up")
    jobs = {(t["labels"]["job"], t["labels"]["host"]) for t in targets}
    assert {("node", name) for name in ("vps1", "vps2", "vps3", "vps4")} <= jobs
    assert {("postgres", "vps1"), ("mtail", "vps1"), ("mtail", "vps2"), ("ssh", "vps3")} <= jobs
    assert {t["labels"].get("service") for t in targets if t["labels"]["job"] == "site"} == {"frontend", "backend"}

    addresses = sandbox.addresses
    for port, host in ((9100, "vps1"), (9187, "vps1"), (3903, "vps2"), (9100, "vps3")):
        assert tcp_probe(addresses[MONITOR_HOST], addresses[host], port) == "open", (port, host)
        stranger = "vps2" if host != "vps2" else "vps1"
        assert tcp_probe(addresses[stranger], addresses[host], port) == "filtered", (port, host)
    # Prometheus, Alertmanager and the blackbox exporter: the monitor host's loopback only.
    for port in (9090, 9093, 9115):
        assert tcp_probe(addresses["vps1"], addresses[MONITOR_HOST], port) in ("filtered", "refused"), port


def test_the_heartbeat_arrives_and_stops_with_the_monitor_host(alerting, sandbox):
    start = time.time()
    wait_until(lambda: alerting.heartbeats(start), 2 * HEARTBEAT_EVERY, "a heartbeat")
    assert invoke("sandbox.poweroff", MONITOR_HOST).code == 0
    off = time.time()
    try:
        # Two beats' time: what a healthchecks-style service is told to wait, plus a grace.
        time.sleep(2 * HEARTBEAT_EVERY)
        # A post already on its way when the power went is all that may arrive.
        assert [at for at in alerting.heartbeats(off + 2)] == []
    finally:
        powered = invoke("sandbox.poweron", MONITOR_HOST, timeout=300)
        assert powered.code == 0, powered.stdout + powered.stderr
    on = time.time()
    # Prometheus evaluates at once, but Alertmanager takes about a minute after a boot to send again.
    wait_until(lambda: alerting.heartbeats(on), 120, "a heartbeat after the monitor host booted")
    beats = wait_until(lambda: len(alerting.heartbeats(on)) >= 2 and alerting.heartbeats(on), 2 * HEARTBEAT_EVERY,
                       "the heartbeat's pace again")
    assert all(abs((later - earlier) - HEARTBEAT_EVERY) <= 3 for earlier, later in zip(beats, beats[1:])), beats


class SitePoller:
    """Fetches a web host's site every half second from this machine: when it went down and came back."""

    TIMEOUT, PERIOD = 2, 0.5
    # How late it may see a change: a fetch that hangs on a host coming up waits out its timeout first.
    SLACK = TIMEOUT + PERIOD

    def __init__(self, address: str):
        self.url, self.results, self.stop = f"https://{address}/", [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            at = time.time()
            try:
                ok = requests.get(self.url, verify=str(CA), timeout=self.TIMEOUT).status_code == 200
            except requests.RequestException:
                ok = False
            self.results.append((at, ok))
            self.stop.wait(max(0.0, self.PERIOD - (time.time() - at)))

    def outage(self, since: float) -> tuple[float, float]:
        """(first failure from `since`, first success after it): a fetch that failed earlier, on a machine the
        other tests keep busy, is not the outage."""
        self.stop.set()
        self.thread.join()
        first = next((at for at, ok in self.results if not ok and at >= since), None)
        assert first is not None, f"no fetch of {self.url} failed from {since:.1f} on ({len(self.results)} fetches)"
        back = next((at for at, ok in self.results if ok and at > first), None)
        assert back is not None, f"{self.url} failed from {first:.1f} on and never answered again"
        return first, back


def test_a_powered_off_web_host_pages_host_down_only_then_resolved_and_uptime_measures_the_outage(
        alerting, sandbox):
    wait_until(lambda: all(t["health"] == "up" for t in prometheus(sandbox, "targets")["activeTargets"]),
               60, "every target up before the fault")
    # A target is "up" when the blackbox exporter answers, whatever its probe found: the site's own probe too.
    site_up = f'probe_success{{job="site", service="frontend", host="{WEB}"}} == 1'
    wait_until(lambda: prometheus(sandbox, "query", query=site_up)["result"], 60,
               f"the monitor host's probe of {WEB}'s site succeeding before the fault")
    poller = SitePoller(sandbox.addresses[WEB])
    # Its last words, in its journal: shipped to the monitor host as they are written.
    marker = f"vigil-e2e-last-words-{int(time.time())}"
    sandbox.ssh(WEB, f"logger -t vigil-e2e {marker}")
    time.sleep(3)
    off = time.time()
    assert invoke("sandbox.poweroff", WEB).code == 0
    try:
        # While it is off (as good as destroyed): its last lines are read from the monitor host's copy.
        archived = invoke("incident.logs", "--archive", f"--limit={WEB}", f"--grep={marker}", "--json")
        assert archived.code == 0, archived.stdout + archived.stderr
        assert [line for line in archived.json["lines"] if f" {WEB} " in line and line.endswith(marker)], archived.json
        assert alerting.wait_for("FIRING", "HostDown", WEB, off, ALERT_WITHIN + 30) <= ALERT_WITHIN
        # 100 s off, then its boot: more than a day's error budget at 99.9 % (86 s).
        time.sleep(max(0.0, off + 100 - time.time()))
    finally:
        powered = invoke("sandbox.poweron", WEB, timeout=300)
        assert powered.code == 0, powered.stdout + powered.stderr
    on = time.time()
    wait_until(lambda: any(ok and at > on for at, ok in poller.results), 120, f"{WEB}'s site serves again")
    # Its boot started one color of each service, the one nginx serves (roles/app's served-colors unit).
    running = sandbox.ssh(WEB, "systemctl is-active together-pray-backend@blue together-pray-backend@green "
                               "together-pray-frontend@blue together-pray-frontend@green", check=False).split()
    assert sorted(running[:2]) == sorted(running[2:]) == ["active", "inactive"], running
    down, back = poller.outage(since=off - SitePoller.SLACK)
    alerting.wait_for("RESOLVED", "HostDown", WEB, on, ALERT_WITHIN)

    # The other web host was never paged as down; the dead host's services were held behind its HostDown.
    # (An alert of an earlier test, such as an API error rate left by a bad deploy, may still resolve meanwhile.)
    paged = {(alert, host) for _, status, alert, host in alerting.alerts(off) if status == "FIRING"}
    assert paged & {(alert, OTHER_WEB) for alert in AVAILABILITY} == set()
    assert paged & {(alert, WEB) for alert in AVAILABILITY} == {("HostDown", WEB)}

    report = invoke("monitor.uptime", "--days=1", "--json", timeout=300)
    assert report.code in (0, 2), report.stdout + report.stderr
    services = {(s["service"], s["host"]): s for s in report.json["services"]}
    frontend = services[("frontend", WEB)]
    # The report's outage is the one that overlaps the poller's.
    overlapping = [o for o in frontend["outages"] if o["start"] < back and o["end"] > down]
    assert len(overlapping) == 1, (f"{WEB}'s frontend: one outage overlapping the poller's {down:.1f} to "
                                   f"{back:.1f} expected", frontend["outages"])
    outage, measured = overlapping[0], back - down
    # The probes' outage matches the one measured from here within one scrape interval and the poller's slack.
    assert abs(outage["seconds"] - measured) <= SCRAPE_INTERVAL + SitePoller.SLACK, (outage, measured)
    assert abs(outage["start"] - down) <= SCRAPE_INTERVAL + SitePoller.SLACK, (outage, down)
    assert not frontend["met"] and frontend["budget_left_seconds"] < 0
    # The other host's frontend was never down meanwhile.
    other = services[("frontend", OTHER_WEB)]
    assert [o for o in other["outages"] if o["end"] > down] == []


def test_maintenance_mode_holds_the_web_alerts_and_alerts_work_again_after_it(alerting, sandbox):
    unit = sandbox.live_unit(WEB, "backend")
    assert invoke("incident.maintenance", "on", f"--limit={WEB}").code == 0
    on = time.time()
    try:
        sandbox.ssh(WEB, f"systemctl stop {unit}")
        # Well past the time BackendDown needs to fire: it fires in Prometheus, Alertmanager holds it.
        wait_until(lambda: [a for a in prometheus(sandbox, "alerts")["alerts"]
                            if a["labels"]["alertname"] == "BackendDown" and a["labels"]["host"] == WEB
                            and a["state"] == "firing"], ALERT_WITHIN, "BackendDown firing in Prometheus")
        time.sleep(15)
        paged = {("FIRING", alert, WEB) for alert in AVAILABILITY}
        assert [line for line in alerting.alerts(on) if line[1:] in paged] == []
    finally:
        assert invoke("incident.maintenance", "off", f"--limit={WEB}").code == 0
    off = time.time()
    try:
        assert alerting.wait_for("FIRING", "BackendDown", WEB, off, ALERT_WITHIN) <= ALERT_WITHIN
    finally:
        sandbox.ssh(WEB, f"systemctl start {unit}")
    alerting.wait_for("RESOLVED", "BackendDown", WEB, off, ALERT_WITHIN + 30)
    assert [line for line in alerting.alerts(on)
            if line[1:] in {("FIRING", alert, OTHER_WEB) for alert in AVAILABILITY}] == []


def test_monitor_open_reaches_alertmanager_and_prometheus_through_ssh(alerting):
    opened = subprocess.Popen([sys.executable, "-m", "invoke", "monitor.open", "--seconds=30"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        ready = wait_until(lambda: _get("http://127.0.0.1:9093/-/ready"), 20, "Alertmanager through the tunnel")
        assert ready.status_code == 200
        watchdog = _get("http://127.0.0.1:9090/api/v1/alerts").json()["data"]["alerts"]
        assert any(alert["labels"]["alertname"] == "Watchdog" for alert in watchdog)
    finally:
        opened.terminate()
        opened.wait(timeout=30)


def _get(url: str):
    try:
        return requests.get(url, timeout=3)
    except requests.RequestException:
        return None
