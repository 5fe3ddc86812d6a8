"""What unit tests of several concerns share: a scratch secrets/ with the shipped schema; and the `unit`
mark on each of them, by which scripts/test runs them in the process beside the session's e2e modules."""

import shutil
from pathlib import Path

import pytest

from vigil.core.paths import REPO_ROOT
from vigil.vault.paths import SecretsPaths

REPO = REPO_ROOT
UNIT_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    # A conftest's hook sees every collected test, the e2e ones too: only those under tests/unit are marked.
    for item in items:
        if UNIT_TESTS in item.path.parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def paths(tmp_path, monkeypatch):
    """A scratch secrets/ with the shipped schema; the sandbox identity lands in tmp_path/.vigil."""
    root = tmp_path / "secrets"
    root.mkdir()
    shutil.copy(REPO / "secrets" / "schema.yml", root / "schema.yml")
    monkeypatch.setenv("VIGIL_SECRETS", str(root))
    for name in ("VIGIL_AGE_IDENTITY", "VIGIL_AGE_IDENTITY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return SecretsPaths(root)
