"""Node.js: npm engines ranges, the version check, and the version fact on a real shell."""

import shutil
import subprocess

import pytest

from vigil.core.operations import OperationError
from vigil.facts.nodejs import node_version_fact, parse_node_version
from vigil.operations.nodejs import NodeVersion, satisfies


@pytest.mark.parametrize(
    "version, engines, ok",
    [
        ((20, 19, 2), ">=20", True),
        ((18, 19, 0), ">=20", False),
        ((20, 1, 0), "^20.11", False),
        ((20, 12, 0), "^20.11", True),
        ((22, 0, 0), "18.x || >=20 <23", True),
        ((23, 0, 0), "18.x || >=20 <23", False),
        ((18, 5, 0), "18.x || >=20 <23", True),
        ((20, 0, 0), "20", True),
        ((21, 0, 0), "20", False),
        ((20, 9, 9), "~20.9", True),
        ((20, 10, 0), "~20.9", False),
        ((5, 0, 0), "*", True),
    ],
)
def test_engines_ranges(version, engines, ok):
    assert satisfies(version, engines) is ok


def test_node_version_check():
    assert parse_node_version("v20.19.2\n", 0) == (20, 19, 2)
    assert parse_node_version("", 127) is None
    apps = {"backend/package.json": ">=18.18", "frontend/package.json": ">=20"}
    assert not NodeVersion(apps).plan({"node:version": (20, 19, 2)}).changes
    # The first range the version misses is named with the file that declares it.
    with pytest.raises(
        OperationError, match=r"Node.js v18.19.0 does not satisfy engines.node '>=20' of frontend/package.json"
    ):
        NodeVersion(apps).plan({"node:version": (18, 19, 0)})
    with pytest.raises(ValueError):
        NodeVersion({"x": "latest please"})


@pytest.mark.parametrize("node, version", [
    # A node that is not Debian's /usr/bin/node is asked itself.
    ("#!/bin/sh\necho v22.3.1\n", (22, 3, 1)),
    (None, None),  # none on PATH
])
def test_the_node_version_fact_asks_a_node_that_dpkg_does_not_own(tmp_path, node, version):

    if node:
        (tmp_path / "node").write_text(node)
        (tmp_path / "node").chmod(0o755)
    fact = node_version_fact()
    (tmp_path / "sh").symlink_to(shutil.which("sh"))
    done = subprocess.run([str(tmp_path / "sh"), *fact.command.argv[1:]], capture_output=True, text=True,
                          env={"PATH": str(tmp_path)}, timeout=10)
    assert fact.parse(done.stdout, done.returncode) == version


@pytest.mark.parametrize("stdout, version", [
    ("v20.19.2\n", (20, 19, 2)),  # Debian's 20.19.2+dfsg-1~deb13u1, as the fact words it
    ("v18.19.0\n", (18, 19, 0)),
])
def test_node_versions_parse(stdout, version):
    assert parse_node_version(stdout, 0) == version
