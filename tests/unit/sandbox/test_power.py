"""sandbox.poweroff --hard finds the container's init as its systemd-nspawn's child: children_of reads them
from /proc, every thread's."""

from __future__ import annotations

import os
import subprocess

from vigil.sandbox.power import children_of


def test_a_process_children_are_found_and_only_they():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in children_of(os.getpid())
        assert os.getpid() not in children_of(os.getpid())
        assert children_of(child.pid) == []
    finally:
        child.kill()
        child.wait()
