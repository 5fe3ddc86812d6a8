"""Visitor analytics on the session's deployed web hosts (roles/analytics): requests made from this machine
show in GoAccess's report that `invoke monitor.analytics` builds and fetches, with the client's address cut
to its network everywhere (report and log), no query string kept, and the monitor host's probes left out."""

from __future__ import annotations

import json
import uuid

import requests

from tests.support.sandbox_hosts import MONITOR_HOST, REPO, invoke
from vigil.monitor.analytics import LOG, local_directory
from vigil.sandbox.paths import Vps

CA = str(REPO / ".vigil" / "sandbox" / "ca" / "ca.crt")


def test_the_report_counts_visits_without_any_full_address_or_query(deployed, sandbox):
    site = f"https://{sandbox.addresses['vps1']}"
    client = Vps.from_name("vps1").gateway  # where this machine's requests come from, as vps1 sees them
    network = client.rsplit(".", 1)[0] + ".0"
    marker, token = f"/visited-{uuid.uuid4().hex[:8]}", f"leak{uuid.uuid4().hex}"
    logged_before = int(sandbox.ssh("vps1", f"touch {LOG} && wc -l < {LOG}").strip())
    for _ in range(3):
        requests.get(f"{site}/?token={token}", headers={"Referer": "https://parish.example/newsletter"}, verify=CA,
                     timeout=15)
        requests.get(f"{site}{marker}?token={token}", verify=CA, timeout=15)
    run = invoke("monitor.analytics", "--json", "--limit=vps1,vps2", timeout=600)
    assert run.code == 0, run.stdout + run.stderr
    reports = {report["host"]: report for report in json.loads(run.stdout[run.stdout.index("{"):])["reports"]}
    assert set(reports) == {"vps1", "vps2"}
    assert reports["vps1"]["requests"] >= 6 and reports["vps1"]["unique_visitors"] >= 1
    html = (local_directory("sandbox") / "vps1.html").read_text()
    data = (local_directory("sandbox") / "vps1.json").read_text()
    log = sandbox.ssh("vps1", f"tail -n +{logged_before + 1} {LOG}")  # what nginx logged while this test ran
    for text in (html, data, log):
        assert marker in text and "parish.example" in text
        assert network in text
        assert client not in text, "a full client address"
        assert token not in text, "a query string"
    # The monitor host probes every web host: its address is in nginx's own log, never in the visitors'.
    monitor = sandbox.addresses[MONITOR_HOST]
    assert monitor in sandbox.ssh("vps1", "cat /var/log/nginx/access.log")
    assert monitor.rsplit(".", 1)[0] + "." not in log
    # Built daily as well, and kept as a dated copy.
    assert sandbox.ssh("vps1", "systemctl is-enabled vigil-analytics.timer").strip() == "enabled"
    kept = set(sandbox.ssh("vps1", "ls /var/lib/vigil-analytics/").split())
    assert {"latest.html", "latest.json"} <= kept and any(name.startswith("report-20") for name in kept)
