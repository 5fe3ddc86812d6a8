"""End-to-end fixtures: real sandbox VPSes booted once per test session and shared: vps1 (database and
app), vps2 (app), vps3 (the backup host, whose pgBackRest repository keeps vps1's backups and WAL) and
vps4 (the monitor host, whose Prometheus and Alertmanager watch the others).

Tests drive vigil exactly as a person does (`invoke ...` in a subprocess) and
read the hosts back over plain OpenSSH with the pinned keys (tests/support/sandbox_hosts.py).
A sandbox that was already up before the session is left up; one the session booted is removed.
"""

from __future__ import annotations

import fcntl
import os

import pytest

from tests.support.alerts import AlertReceiver, scratch_secrets
from tests.support.sandbox_hosts import (
    BACKUP_HOST,
    HOSTS,
    INVENTORY,
    MONITOR_HOST,
    SESSION_HOSTS,
    Run,
    Sandbox,
    invoke,
    require_root,
)
from tests.support.suite_times import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401  (hooks)
from vigil.core.yaml_loader import load_yaml

# Error tracking's runs after the modules that read incident.status's verdict or every alert (the errors it
# throws on purpose are the API's 5xx, and ApiErrorRate fires for minutes after) and before the recovery
# module, which reads only the backup alerts it causes and leaves vps1 rebuilt without its app; and the
# sandbox's own module after that takes the sandbox down and brings back two hosts only.
RUN_BEFORE = {"test_error_tracking.py": "test_recovery_repository.py"}
# scripts/test runs the modules marked `apart` (their VPSes booted apart: tests/support/sandbox_hosts.py's
# apart_layout) in a second pytest process beside this one. That process holds this file's lock while it
# runs; a module that takes the whole sandbox down waits for it (apart_stream_done).
APART_LOCK_VARIABLE = "VIGIL_E2E_APART_LOCK"


def pytest_collection_modifyitems(items):
    for module, before in RUN_BEFORE.items():
        moved = [item for item in items if item.path.name == module]
        rest = [item for item in items if item.path.name != module]
        index = next((n for n, item in enumerate(rest) if item.path.name == before), len(rest))
        items[:] = rest[:index] + moved + rest[index:]


@pytest.fixture(scope="module")
def apart_stream_done():
    """Wait until the `apart` modules' process (scripts/test) is done: for a module that takes down every VPS."""
    path = os.environ.get(APART_LOCK_VARIABLE)
    if not path:
        return
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    require_root()
    was_up = (INVENTORY / "sandbox.yml").exists()
    started = invoke("sandbox.up", f"--hosts={HOSTS}", f"--group={BACKUP_HOST}:backup",
                     f"--group={MONITOR_HOST}:monitor", timeout=1200)
    assert started.code == 0, started.stdout + started.stderr
    data = load_yaml(INVENTORY / "sandbox.yml")
    # Only the hosts the session asked for: a developer's sandbox may list more.
    yield Sandbox({name: data["hosts"][name]["address"] for name in SESSION_HOSTS})
    if not was_up and not os.environ.get("VIGIL_KEEP_SANDBOX"):
        # The session's VPSes alone: an `apart` module's may still be running beside them.
        invoke("sandbox.down", f"--inventory={INVENTORY}", timeout=300)


@pytest.fixture(scope="session")
def provisioned(sandbox: Sandbox) -> tuple[Run, Run]:
    """provision.server run twice on every session host: the first converges, the second must change nothing."""
    generated = invoke("secrets.generate", "--env=sandbox")  # the repository's passphrase and SSH seed, if new
    assert generated.code == 0, generated.stdout + generated.stderr
    first = invoke("provision.server", "--json", f"--limit={','.join(SESSION_HOSTS)}", timeout=1800)
    second = invoke("provision.server", "--json", f"--limit={','.join(SESSION_HOSTS)}", timeout=1800)
    return first, second


@pytest.fixture(scope="session")
def deployed(provisioned, sandbox: Sandbox) -> Run:
    """The sample app deployed on vps1 and vps2 (its secrets pushed first): the first deploy.all's run."""
    pushed = invoke("secrets.push", "--limit=vps1,vps2")
    assert pushed.code == 0, pushed.stdout + pushed.stderr
    first = invoke("deploy.all", "--json", timeout=1800)
    assert first.code == 0, first.stdout[-4000:] + first.stderr
    return first


@pytest.fixture(scope="session")
def alerting(deployed, tmp_path_factory):
    """The monitor host's Alertmanager posts to a local receiver: alerts to its Slack URL, the heartbeat
    to its heartbeat URL (both set in scratch secrets, so the developer's are never touched)."""
    receiver = AlertReceiver()
    extra = scratch_secrets(tmp_path_factory.mktemp("alert-secrets"), ALERT_WEBHOOK_URL=receiver.slack_url,
                            ALERT_HEARTBEAT_URL=receiver.heartbeat_url)
    applied = invoke("provision.server", f"--limit={MONITOR_HOST}", extra_env=extra)
    assert applied.code == 0, applied.stdout[-3000:] + applied.stderr
    # The URLs are secrets: never printed.
    assert receiver.slack_url not in applied.stdout + applied.stderr
    assert receiver.heartbeat_url not in applied.stdout + applied.stderr
    yield receiver
    receiver.close()
    # Back to the developer's secrets: Alertmanager stops posting to a receiver that is gone.
    invoke("provision.server", f"--limit={MONITOR_HOST}")
