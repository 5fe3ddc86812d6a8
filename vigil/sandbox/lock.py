"""The lock every sandbox task that changes VPSes holds (`up`, `down`, the power tasks)."""

from __future__ import annotations

from typing import Callable

from vigil.core.local_files import lock_within
from vigil.sandbox.paths import IMAGE_BUILD_TIMEOUT, SandboxError, SandboxPaths

# How long a sandbox task waits for another's lock: an image built from scratch, then its boots.
LOCK_WAIT_SECONDS = IMAGE_BUILD_TIMEOUT + 300


class SandboxLock:
    """An exclusive lock so two `up`/`down`/power runs never interleave. A second one waits its turn (two
    layouts booted side by side, sandbox/scope.py), for as long as the longest holder may take: an image
    built from scratch."""

    def __init__(self, paths: SandboxPaths, echo: Callable[[str], None] = lambda line: None,
                 wait: float = LOCK_WAIT_SECONDS):
        self.path = paths.lock_file
        self.stream = None
        self.echo = echo
        self.wait = wait

    def __enter__(self) -> "SandboxLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = open(self.path, "w")
        waiting = f"waiting for another sandbox.up, sandbox.down or power task (it holds {self.path})"
        if not lock_within(self.stream, self.wait, on_wait=lambda: self.echo(waiting)):
            self.stream.close()
            raise SandboxError(f"another sandbox.up, sandbox.down or power task still runs after "
                               f"{self.wait:g} s (it holds {self.path})")
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()
