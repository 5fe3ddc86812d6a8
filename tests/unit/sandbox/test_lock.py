"""The sandbox tasks' lock (vigil/sandbox/lock.py): a second task waits its turn, then gives up naming it."""

from __future__ import annotations

import re

import pytest

from tests.support.locks import turns
from vigil.sandbox.lock import SandboxLock
from vigil.sandbox.paths import SandboxError, SandboxPaths


def test_a_second_task_waits_for_the_first_and_says_so(tmp_path):
    paths = SandboxPaths(repo=tmp_path, vps_base=tmp_path / "vps")
    said = []
    order = turns(lambda: SandboxLock(paths), lambda: SandboxLock(paths, echo=said.append, wait=10))
    assert order == ["first holds", "first done", "second holds"]
    assert said == [f"waiting for another sandbox.up, sandbox.down or power task (it holds {paths.lock_file})"]


def test_a_second_task_gives_up_once_its_wait_ends(tmp_path):
    paths = SandboxPaths(repo=tmp_path, vps_base=tmp_path / "vps")
    with SandboxLock(paths):
        message = f"another sandbox.up, sandbox.down or power task still runs after 0.3 s (it holds {paths.lock_file})"
        with pytest.raises(SandboxError, match=re.escape(message)):
            with SandboxLock(paths, wait=0.3):
                pass
    with SandboxLock(paths, wait=0):  # released
        pass
