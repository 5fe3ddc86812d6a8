"""audit.security and audit.performance on the session's deployed hosts (vps1: web and database, vps2: web,
vps3: the backup host)."""

import re
import shlex
import subprocess

import pytest

from tests.support.sandbox_hosts import REPO, invoke
from vigil.audit.performance import CPU_SAMPLE, HEADROOM, cpu_idle
from vigil.core.errors import ExitCode

HEADERS = "/etc/nginx/snippets/vigil-security-headers.conf"
SITE = "/etc/nginx/sites-available/together-pray.conf"
# The items judged on a time this machine measures (the HTML's p95, a browser's LCP and load event against 2 s).
# The other tests keep its two cores busy (CI at ff17025: Chromium's home page on vps1 over 2 s while the other
# process ran), so here their verdict must follow their own figures rather than pass: how fast the pages are is
# bench/'s to record, and a page that is slow on purpose must fail (the next test).
TIMED = re.compile(r"page load")
PAGE_LOAD_TARGET_MS = 2000


def failing(run) -> set[tuple[str, str]]:
    return {(item["item"], item["host"]) for item in run.json["items"] if not item["ok"]}


def failures_shown(run) -> str:
    """Each failing item with its evidence, for an assertion's message: which item failed is not enough to act
    on when the figure behind it (a page's load time on a busy machine) is what went wrong."""
    return "\n".join(f"{item['host']}: {item['item']}: {item['evidence']}"
                     for item in run.json["items"] if not item["ok"])


@pytest.fixture(scope="module")
def verified_backup(deployed):
    """The checklist wants a recent backup in the backup host's repository, and a passing restore drill."""
    assert invoke("backup.create", "--label=audit").code == 0 and invoke("backup.verify", "latest").code == 0


# (what weakens a host, how it is undone, the host, the items that must fail then)
WEAKNESSES = [
    ("ufw allow 5432/tcp", "ufw delete allow 5432/tcp", "vps1",
     {("PostgreSQL not open to the world (firewall)", "vps1"), ("PostgreSQL not reachable from outside", "vps1")}),
    ("chmod 644 /etc/together-pray/backend.env", "chmod 600 /etc/together-pray/backend.env", "vps2",
     {("secrets files 0600, owned by the app user", "vps2")}),
    (f"cp {HEADERS} /root/headers.conf && sed -i '/Strict-Transport-Security/d' {HEADERS} && systemctl reload nginx",
     f"cp /root/headers.conf {HEADERS} && systemctl reload nginx", "vps2", {("HSTS", "vps2")}),
    # A drop-in that takes the backend's confinement away, as a hand-made "fix" might (the running
    # colors keep theirs until they restart; the audit rates the unit as it would start now).
    ("mkdir -p /etc/systemd/system/together-pray-backend@.service.d && printf '[Service]\\nProtectSystem=no\\n"
     "SystemCallFilter=\\nRestrictAddressFamilies=\\nRestrictNamespaces=no\\nProtectKernelModules=no\\n"
     "ProtectKernelLogs=no\\nProtectProc=default\\nProcSubset=all\\nPrivateDevices=no\\nCapabilityBoundingSet=\\n' "
     "> /etc/systemd/system/together-pray-backend@.service.d/weak.conf && systemctl daemon-reload",
     "rm -r /etc/systemd/system/together-pray-backend@.service.d && systemctl daemon-reload", "vps2",
     {("systemd units rated OK", "vps2")}),
    ("usermod -aG systemd-journal deploy", "gpasswd -d deploy systemd-journal", "vps2",
     {("deploy user reads only its app's logs", "vps2")}),
    ("chmod 755 /run/vigil", "chmod 700 /run/vigil", "vps1", {("lock directory root-only", "vps1")}),
    (f"sed -i 's/server_tokens off;/server_tokens on;/' {SITE} && systemctl reload nginx",
     f"sed -i 's/server_tokens on;/server_tokens off;/' {SITE} && systemctl reload nginx", "vps2",
     {("server hides its version", "vps2")}),
]


def test_the_security_checklist_passes_on_the_sandbox(verified_backup):
    run = invoke("audit.security", "--json", timeout=600)
    assert run.code == 0 and run.json["passed"], failures_shown(run) or run.stderr
    items = {item["item"] for item in run.json["items"]}
    assert {"HTTP redirects to HTTPS", "HSTS", "only TLS 1.2 and 1.3", "secrets files 0600, owned by the app user",
            "no plaintext secret in git", "CORS restricted to the configured origin", "rate limiting active",
            "PostgreSQL not reachable from outside", "security headers", "SSH hardened", "firewall active",
            "unattended upgrades on", "backups recent", "backups verified", "certificate not close to expiry",
            "systemd units rated OK", "deploy user reads only its app's logs", "lock directory root-only",
            "server hides its version", "authentication on protected routes"} <= items
    # The sample app's write route, asked for real without a token, on every web host.
    asked = {item["host"]: item["evidence"] for item in run.json["items"]
             if item["item"] == "authentication on protected routes"}
    assert asked == {"vps1": "POST /api/prayers -> 401", "vps2": "POST /api/prayers -> 401"}


@pytest.mark.parametrize("weaken, undo, host, expected", WEAKNESSES, ids=[
    "5432 open", "secrets file 644", "no HSTS", "unit unconfined", "deploy reads the journal", "lock dir 755",
    "server_tokens on"])
def test_each_weakness_fails_the_right_item(verified_backup, sandbox, weaken, undo, host, expected):
    sandbox.ssh(host, weaken)
    try:
        run = invoke("audit.security", "--json", timeout=600)
    finally:
        sandbox.ssh(host, undo)
    assert run.code == ExitCode.HOST_FAILED and failing(run) == expected, failures_shown(run)


def judged_by_its_figures(item) -> bool:
    """What a timed item's verdict must be, read off its evidence: every p95 it shows under the target, and the
    page painted, not empty and nothing blocked. An item whose evidence holds no figure (an error) fails here."""
    p95s = [int(ms) for ms in re.findall(r"p95 (\d+) ms", item["evidence"])]
    assert p95s, f"{item['host']}: {item['item']}: no figure in its evidence: {item['evidence']}"
    if max(p95s) == PAGE_LOAD_TARGET_MS:  # shown rounded: the verdict was taken on the unrounded figure
        return item["ok"]
    flawed = any(mark in item["evidence"] for mark in ("nothing contentful", "EMPTY", "blocked"))
    return max(p95s) < PAGE_LOAD_TARGET_MS and not flawed


def test_the_performance_checklist_reports_the_figures_and_judges_them_by_its_targets(deployed):
    run = invoke("audit.performance", "--json", "--requests=20", timeout=600)
    assert run.code in (0, ExitCode.HOST_FAILED), run.stdout + run.stderr
    timed = [item for item in run.json["items"] if TIMED.match(item["item"])]
    untimed = [item for item in run.json["items"] if item not in timed]
    assert all(item["ok"] for item in untimed), failures_shown(run)
    misjudged = [item for item in timed if item["ok"] != judged_by_its_figures(item)]
    assert not misjudged, misjudged
    everything = all(item["ok"] for item in run.json["items"])
    assert run.json["passed"] is everything and (run.code == 0) is everything, failures_shown(run)
    items = {(item["item"], item["host"]): item for item in run.json["items"]}
    for host in ("vps1", "vps2"):
        assert "20 loads: time to first byte p50" in items[("page load (p95 of the full HTML)", host)]["evidence"]
        assert items[("compression on", host)]["evidence"] == "the page came gzip"
        assert "max-age=31536000" in items[("static assets cached", host)]["evidence"]
        for headroom in ("CPU headroom", "memory headroom", "disk headroom"):
            assert (headroom, host) in items
    assert "x 2 web hosts x 2 colors = 40" in items[("database connection pooling", "vps1")]["evidence"]
    # In a real browser too: the home page and the seeded prayer's page, each host, each with a screenshot.
    for host in ("vps1", "vps2"):
        for page in ("/", "/prayers/1"):
            evidence = items[(f"page load in a browser ({page})", host)]["evidence"]
            assert "5 first visits in Chromium: LCP p50" in evidence and "transferred p50" in evidence, evidence
    for shot in ("vps1-home.png", "vps2-prayers-1.png"):
        # Read off the picture itself: what a visitor saw (one block of text, so the prayer's link is read too).
        seen = subprocess.run(["tesseract", str(REPO / ".vigil" / "audit" / "sandbox" / shot), "-", "--psm", "6"],
                              capture_output=True, text=True, timeout=120).stdout
        assert "a place of peace for everyone who prays here" in " ".join(seen.split()), seen


def test_a_page_slower_than_two_seconds_fails_its_browser_item_with_the_figure(deployed):
    slow = "/slow?ms=2500"  # the sandbox-only page (SANDBOX_TEST_ROUTES), 2.5 s on purpose
    run = invoke("audit.performance", "--json", "--requests=1", "--loads=2", f"--pages={slow}", "--limit=vps1",
                 timeout=600)
    assert run.code == ExitCode.HOST_FAILED, run.stdout + run.stderr
    item = next(item for item in run.json["items"] if item["item"] == f"page load in a browser ({slow})")
    # The page answers after 2.5 s, so its load event comes no sooner (later on a machine the other tests keep busy).
    found = re.search(r"load event p50 (\d+) ms", item["evidence"])
    assert not item["ok"] and found and int(found.group(1)) >= 2500, item


def test_a_host_is_not_blamed_for_the_cpu_its_neighbours_take(deployed, sandbox):
    # The VPSes share this machine's cores. Busy loops on vps2, always runnable, leave the machine no idle time
    # (ended by systemd within 15 s, stopped once sampled): read from /proc/stat, vps1 too would have no
    # headroom. Its sample is its own processes' CPU time (a container's), so it keeps it.
    sandbox.ssh("vps2", "systemd-run --quiet --unit=vigil-test-burn --property=RuntimeMaxSec=15 "
                        "sh -c 'for i in $(seq 16); do (while :; do :; done) & done; wait'")
    machine = "head -n 1 /proc/stat; sleep 1; head -n 1 /proc/stat"
    try:
        # audit.performance's own sample (what its CPU headroom item is judged on), and the machine's.
        idle = {host: cpu_idle(sandbox.ssh(host, f"sh -c {shlex.quote(CPU_SAMPLE)}")) for host in ("vps2", "vps1")}
        idle["machine"] = cpu_idle(sandbox.ssh("vps1", machine))
    finally:
        sandbox.ssh("vps2", "systemctl stop vigil-test-burn.service", check=False)
    assert idle["machine"] <= HEADROOM["cpu"] < idle["vps1"], idle
    assert idle["vps2"] < 95, idle  # vps2's own loops are counted on vps2 (how much they get depends on the machine)
