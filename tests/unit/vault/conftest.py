"""The vault's tests share, beside the scratch secrets/ of tests/unit/conftest.py, its schema and, once
initialised, the sandbox's key."""


import pytest

from vigil.core.paths import REPO_ROOT
from vigil.vault.schema import load_schema
from vigil.vault.store import init_env

REPO = REPO_ROOT


@pytest.fixture
def schema(paths):
    return load_schema(paths)


@pytest.fixture
def initialised(paths, schema):
    init_env("sandbox", paths, schema, "unit test")
    return paths
