"""End-to-end fixtures: real sandbox VPSes booted once per test session and shared: vps1 (database and
app), vps2 (app), vps3 (the backup host, whose pgBackRest repository keeps vps1's backups and WAL) and
vps4 (the monitor host, whose Prometheus and Alertmanager watch the others).

Tests drive vigil exactly as a person does (`invoke ...` in a subprocess) and
read the hosts back over plain OpenSSH with the pinned keys (tests/support/sandbox_hosts.py).
A sandbox that was already up before the session is left up; one the session booted is removed.
"""

from __future__ import annotations

import os
import shutil

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
)
from tests.support.suite_times import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401  (hooks)
from vigil.core.yaml_loader import load_yaml

# Modules that boot more VPSes into the sandbox (listed in its inventory from then on) run last, in this
# order, so that no other module meets hosts it did not onboard.
RUN_LAST = ("test_split_database_on_debian12.py", "test_moving_in.py", "test_database_cluster.py")
# Error tracking's runs after the modules that read incident.status's verdict or every alert (the errors it
# throws on purpose are the API's 5xx, and ApiErrorRate fires for minutes after) and before the recovery
# module, which reads only the backup alerts it causes and leaves vps1 rebuilt without its app; and the
# sandbox's own module after that takes the sandbox down and brings back two hosts only.
RUN_BEFORE = {"test_error_tracking.py": "test_recovery_repository.py"}


def pytest_collection_modifyitems(items):
    def position(item) -> int:
        name = item.path.name
        return RUN_LAST.index(name) + 1 if name in RUN_LAST else 0

    items.sort(key=position)  # stable: every other test keeps its order
    for module, before in RUN_BEFORE.items():
        moved = [item for item in items if item.path.name == module]
        rest = [item for item in items if item.path.name != module]
        # Without that module in the run, still before the modules that boot more VPSes.
        index = next((n for n, item in enumerate(rest) if item.path.name == before or item.path.name in RUN_LAST),
                     len(rest))
        items[:] = rest[:index] + moved + rest[index:]


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    if os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        pytest.fail("e2e tests boot sandbox VPSes: run them as root after scripts/bootstrap")
    was_up = (INVENTORY / "sandbox.yml").exists()
    started = invoke("sandbox.up", f"--hosts={HOSTS}", f"--group={BACKUP_HOST}:backup",
                     f"--group={MONITOR_HOST}:monitor", timeout=1200)
    assert started.code == 0, started.stdout + started.stderr
    data = load_yaml(INVENTORY / "sandbox.yml")
    # Only the hosts the session asked for: a module may add more (Debian 12 ones) to the same sandbox.
    yield Sandbox({name: data["hosts"][name]["address"] for name in SESSION_HOSTS})
    if not was_up and not os.environ.get("VIGIL_KEEP_SANDBOX"):
        invoke("sandbox.down", timeout=300)


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
