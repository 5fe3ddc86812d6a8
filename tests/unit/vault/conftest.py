"""The vault's tests share a scratch secrets/ (the shipped schema) and, once initialised, the sandbox's key."""

import shutil

import pytest

from vigil.core.paths import REPO_ROOT
from vigil.vault.paths import SecretsPaths
from vigil.vault.schema import load_schema
from vigil.vault.store import init_env

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


@pytest.fixture
def schema(paths):
    return load_schema(paths)


@pytest.fixture
def initialised(paths, schema):
    init_env("sandbox", paths, schema, "unit test")
    return paths
