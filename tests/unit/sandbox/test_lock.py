"""The sandbox tasks' lock (vigil/sandbox/lock.py): a second task waits its turn, then gives up naming it."""

from __future__ import annotations

import re
import threading
import time

import pytest

from vigil.sandbox.lock import SandboxLock
from vigil.sandbox.paths import SandboxError, SandboxPaths


def test_a_second_task_waits_for_the_first_and_says_so(tmp_path):
    paths = SandboxPaths(repo=tmp_path, vps_base=tmp_path / "vps")
    order, said = [], []

    def first():
        with SandboxLock(paths):
            order.append("first holds")
            time.sleep(0.5)
            order.append("first done")

    holder = threading.Thread(target=first)
    holder.start()
    while not order:
        time.sleep(0.01)
    with SandboxLock(paths, echo=said.append, wait=10):
        order.append("second holds")
    holder.join()
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
