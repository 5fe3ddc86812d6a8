"""The CLI's start-up: `invoke` imports every task module for its list, so a heavy dependency that only a
few tasks use is imported by those tasks when they run, never by every start."""

import json
import subprocess
import sys

import pytest

from vigil.core.paths import REPO_ROOT

# What each is for: the tasks that need it import it on first use.
ONLY_WHEN_USED = {
    "requests": "audit.* and incident.* asking a site over HTTPS, and posting an alert",
    "dns.resolver": "env.check looking up the domain",
    "jinja2": "rendering a role's template",
    "cryptography.x509": "the sandbox's certificate authority issuing a certificate",
}


@pytest.fixture(scope="module")
def imported_by_the_cli() -> set[str]:
    done = subprocess.run([sys.executable, "-c", "import json, sys, tasks; print(json.dumps(sorted(sys.modules)))"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("module", sorted(ONLY_WHEN_USED))
def test_the_cli_starts_without_a_dependency_only_some_tasks_need(imported_by_the_cli, module):
    assert module not in imported_by_the_cli, f"{module} (for {ONLY_WHEN_USED[module]}) is imported at start-up"


def test_the_cli_still_lists_every_collection(imported_by_the_cli):
    assert {"vigil.cli.backup", "vigil.cli.env", "vigil.cli.audit", "vigil.cli.incident"} <= imported_by_the_cli
