"""Deploys cut off for real: vps2's firewall dropping SSH mid-deploy, and a deployer killed right after
its switch. Nothing is unlocked by hand: each time the next deploy (or the cut-off one, once the host
answers again) leaves the host serving one release, recorded as such.

One variant of the sample backend is built once for the module; the black-holed deploys ship it to
vps2, the killed one to vps1, which has never served it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.e2e.test_deploy import current_release, health, variant
from tests.support.sandbox_hosts import REPO, invoke
from vigil.core.errors import ExitCode

LOCK = "/srv/together-pray/backend/.deploy-lock"
HISTORY = "/srv/together-pray/backend/deploys.jsonl"


@pytest.fixture(scope="module")
def source(deployed, tmp_path_factory):
    """A new backend release (a comment added to main.ts), built once."""
    where = tmp_path_factory.mktemp("interrupted")
    path = variant(where, "interrupted", lambda source: (source / "src" / "main.ts").write_text(
        (source / "src" / "main.ts").read_text() + f"// interrupted {time.time_ns()}\n"))
    built = invoke("deploy.build", "--app=backend", f"--source={path}", timeout=900)
    assert built.code == 0, built.stdout + built.stderr
    return path


def short_lease(sandbox, tmp_path):
    """A scratch inventory whose lock lease is 20 s, so a takeover need not wait the default two minutes."""
    (tmp_path / "envs").mkdir(exist_ok=True)
    return sandbox.scratch_inventory(tmp_path / "envs", lambda data: data["vars"].update(app_lock_lease_seconds=20))


def black_holed_deploy(sandbox, source: str, inventory, open_after: float | None):
    """deploy.backend on vps2 whose firewall drops SSH the moment the deploy holds its lock; the drop is
    lifted `open_after` seconds later (None: once the deploy has given up). Returns the run."""
    drop = ["ip", "netns", "exec", "vigil-vps2", "iptables", "-w", "{}", "INPUT", "-p", "tcp", "--dport", "22",
            "-j", "DROP"]
    result = {}
    deploying = threading.Thread(target=lambda: result.setdefault("run", invoke(
        "deploy.backend", "--json", "--limit=vps2", f"--source={source}", inventory=inventory, timeout=300)))
    started = int(time.time())
    deploying.start()
    try:
        # This deploy's lock (not one an earlier test left behind): its owner.json is younger than the run.
        taken = f"[ \"$(stat -c %Y {LOCK}/owner.json 2>/dev/null || echo 0)\" -ge {started} ] && echo locked || true"
        for _ in range(600):
            if sandbox.ssh("vps2", taken).strip() == "locked":
                break
            time.sleep(0.1)
        time.sleep(1)  # the lock's round trip (it reads the host's state too) has ended: the next step is cut
        subprocess.run([part.replace("{}", "-I") for part in drop], check=True)
        deploying.join(timeout=open_after)
    finally:
        subprocess.run([part.replace("{}", "-D") for part in drop], check=False)
    deploying.join(timeout=300)
    return result["run"]  # it returned: no hang (the old behaviour waited a quarter of an hour)


def last_history(sandbox, host: str) -> dict:
    return json.loads(sandbox.ssh(host, f"tail -n 1 {HISTORY}"))


def test_a_black_holed_connection_fails_the_deploy_and_the_next_one_takes_over_the_lock(sandbox, source, tmp_path):
    inventory = short_lease(sandbox, tmp_path)
    before = health(sandbox.addresses["vps2"])["release"]
    run = black_holed_deploy(sandbox, source, inventory, open_after=None)
    assert run.code in (ExitCode.HOST_FAILED, ExitCode.UNREACHABLE), run.stdout[-2000:] + run.stderr
    reason = run.host("vps2")["error"] or run.host("vps2")["unreachable"]
    # Cut off mid-command (the stall watch, after 30 s) or asking for the next one (no channel within 10 s).
    assert f"nothing came back from {sandbox.addresses['vps2']} for " in reason, reason
    assert "the connection stalled" in reason, reason
    assert "EOFError" not in reason
    # It tried to connect again for half the 20 s lease, then left the lock to the lease.
    assert "the deploy lock stays until its lease (20 s) runs out" in reason, reason
    assert health(sandbox.addresses["vps2"])["release"] == before  # the old release served throughout
    # The lock the cut-off deploy left is taken over once its heartbeat is older than the lease.
    again = invoke("deploy.backend", "--json", "--limit=vps2", f"--source={source}", "--lock-wait=90",
                   inventory=inventory, timeout=900)
    assert again.code == 0, again.stdout[-2000:] + again.stderr
    taking = next(op for op in again.host("vps2")["operations"] if op["name"] == "Take the deploy lock.")
    assert "took over the lock of" in taking["summary"], taking


def test_a_deploy_whose_host_answers_again_notes_its_failure_and_releases_the_lock(sandbox, source):
    # The default lease (120 s): the deploy tries to connect again for 60 s; SSH is back after 45 s.
    run = black_holed_deploy(sandbox, source, None, open_after=45)
    assert run.code in (ExitCode.HOST_FAILED, ExitCode.UNREACHABLE), run.stdout[-2000:] + run.stderr
    host = run.host("vps2")
    assert "the connection stalled" in host["error"], host
    again = next(op for op in host["operations"] if op["name"] == "Connect again.")
    assert again["status"] == "ok", again
    assert host["operations"][-1]["name"] == "Release the deploy lock." and host["operations"][-1]["status"] == "ok"
    assert sandbox.ssh("vps2", f"test -d {LOCK} && echo locked || echo free").strip() == "free"
    noted = last_history(sandbox, "vps2")
    assert noted["result"] == "failed" and noted["step"].startswith("Deploy (after "), noted
    status = invoke("deploy.status", "--json", "--limit=vps2")
    assert status.code == 0 and status.json["hosts"]["vps2"]["backend"]["problems"] == [], status.stdout


def test_a_deploy_killed_right_after_its_switch_converges_on_rerun_without_an_unlock(sandbox, source, tmp_path):
    inventory = short_lease(sandbox, tmp_path)
    before = current_release(sandbox, "vps1")
    env = {**os.environ, "VIGIL_INVENTORY": str(inventory)}
    deployer = subprocess.Popen([sys.executable, "-m", "invoke", "deploy.backend", "--limit=vps1",
                                 f"--source={source}"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Killed once nginx sends traffic to the new release: the deploy is in its watch, `current` not yet moved.
        deadline = time.monotonic() + 600
        while (release := health(sandbox.addresses["vps1"]).get("release")) in (before, None):
            assert deployer.poll() is None and time.monotonic() < deadline, "the deploy ended before its switch"
            time.sleep(0.2)
    finally:
        deployer.send_signal(signal.SIGKILL)  # our own deployer, by its handle
        deployer.wait()

    # Traffic is on the new release, `current` names the old one, the lock is held: each said in one line.
    assert current_release(sandbox, "vps1") == before
    assert sandbox.ssh("vps1", f"test -d {LOCK} && echo locked || echo free").strip() == "locked"
    status = invoke("deploy.status", "--json", "--limit=vps1", inventory=inventory)
    assert status.code == ExitCode.HOST_FAILED
    assert any(problem.startswith("vps1 backend: the live color") and problem.endswith(f"runs {release}, not current "
                                                                                       f"{before}")
               for problem in status.json["problems"]), status.json["problems"]

    rerun = invoke("deploy.backend", "--json", "--limit=vps1", f"--source={source}", "--lock-wait=90",
                   inventory=inventory, timeout=900)
    assert rerun.code == 0, rerun.stdout[-3000:] + rerun.stderr
    steps = {op["name"]: op for op in rerun.host("vps1")["operations"]}
    assert "took over the lock of" in steps["Take the deploy lock."]["summary"]
    assert "cut off after its switch" in steps["Find an interrupted deploy."]["summary"]
    assert current_release(sandbox, "vps1") == release == health(sandbox.addresses["vps1"])["release"]
    assert last_history(sandbox, "vps1")["result"] == "live"
    assert invoke("deploy.status", "--json", "--limit=vps1").code == 0
