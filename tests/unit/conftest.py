"""What unit tests of several concerns share: a scratch secrets/ with the shipped schema."""

import shutil

import pytest

from vigil.core.paths import REPO_ROOT
from vigil.vault.paths import SecretsPaths

REPO = REPO_ROOT


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
