"""End-to-end fixtures: real sandbox VPSes booted once per test session and shared.

Tests drive vigil exactly as a person does (`invoke ...` in a subprocess) and
read the hosts back over plain OpenSSH with the pinned keys (tests/support/sandbox_hosts.py).
A sandbox that was already up before the session is left up; one the session booted is removed.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.sandbox_hosts import HOSTS, INVENTORY, Run, Sandbox, invoke
from vigil.core.yaml_loader import load_yaml


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    if os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        pytest.fail("e2e tests boot sandbox VPSes: run them as root after scripts/bootstrap")
    was_up = (INVENTORY / "sandbox.yml").exists()
    started = invoke("sandbox.up", f"--hosts={HOSTS}", timeout=1200)
    assert started.code == 0, started.stdout + started.stderr
    data = load_yaml(INVENTORY / "sandbox.yml")
    # Only the hosts the session asked for: a module may add more (Debian 12 ones) to the same sandbox.
    session_hosts = [f"vps{index}" for index in range(1, HOSTS + 1)]
    yield Sandbox({name: data["hosts"][name]["address"] for name in session_hosts})
    if not was_up and not os.environ.get("VIGIL_KEEP_SANDBOX"):
        invoke("sandbox.down", timeout=300)


@pytest.fixture(scope="session")
def provisioned(sandbox: Sandbox) -> tuple[Run, Run]:
    """provision.server run twice on every sandbox host: the first converges, the second must change nothing."""
    first = invoke("provision.server", "--json", "--limit=vps1,vps2")
    second = invoke("provision.server", "--json", "--limit=vps1,vps2")
    return first, second


@pytest.fixture(scope="session")
def deployed(provisioned, sandbox: Sandbox) -> Run:
    """The sample app deployed on vps1 and vps2 (its secrets pushed first): the first deploy.all's run."""
    pushed = invoke("secrets.push", "--limit=vps1,vps2")
    assert pushed.code == 0, pushed.stdout + pushed.stderr
    first = invoke("deploy.all", "--json", timeout=1800)
    assert first.code == 0, first.stdout[-4000:] + first.stderr
    return first
