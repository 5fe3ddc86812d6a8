"""roles/nodejs: the apps' engines ranges, read from their package.json."""

import os
import re

import pytest

from tests.support.inventories import role_vars
from vigil.core.errors import ConfigError
from vigil.core.paths import REPO_ROOT
from vigil.core.roles import load_role


@pytest.mark.parametrize("content, message", [
    (None, "nodejs_app_manifests[0]: {path} does not exist"),
    ("{not json", "not a readable package.json"),
    ('{"name": "x"}', "declares no engines.node"),
    ('{"engines": {"node": "latest"}}', "engines.node: not an npm engines range: 'latest'"),
])
def test_an_app_manifest_without_a_usable_engines_range_is_a_clear_error(tmp_path, content, message):

    nodejs_role = load_role("nodejs")
    manifest = tmp_path / "package.json"
    if content is not None:
        manifest.write_text(content)
    path = os.path.relpath(manifest, REPO_ROOT)
    with pytest.raises(ConfigError, match=re.escape(message.format(path=path))):
        nodejs_role.tasks(nodejs_role, role_vars(nodejs_role, nodejs_app_manifests=[path]))


def test_the_shipped_app_manifests_set_the_node_range():
    nodejs_role = load_role("nodejs")
    check = nodejs_role.tasks(nodejs_role, role_vars(nodejs_role))[-1]
    assert check.requirements == {"examples/together-pray/backend/package.json": ">=18.18",
                                  "examples/together-pray/frontend/package.json": ">=18.18"}
    assert not check.plan({"node:version": (18, 19, 0)}).changes  # Debian 12's Node.js


