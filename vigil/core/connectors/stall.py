"""A stalled SSH connection is noticed within seconds, not the quarter of an hour TCP takes.

A network that drops packets (a firewall that DROPs rather than refuses, a cut link) leaves a
connection that neither fails nor answers: a send waits for window space, a read for data, an exec
for its reply. paramiko's keepalive only sends. So a watch asks the server for a reply every few
seconds (an OpenSSH global request, answered even when refused); when none comes back for
`stall_timeout` seconds, it closes the connection, which ends every wait on it at once, and the
command that was running fails with a sentence that says so.
"""

from __future__ import annotations

import threading
import time

import paramiko

# How often the server is asked for a sign of life while the connection is open.
PROBE_INTERVAL = 5


class StallWatch:
    """Watches one paramiko transport from its own thread until stop() or the connection ends.

    Example: watch = StallWatch(transport, 30).start(); ...; watch.stalled -> True once it gave up
    """

    def __init__(self, transport: paramiko.Transport, stall: float, interval: float = PROBE_INTERVAL):
        self.transport, self.stall, self.interval = transport, stall, interval
        self.stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="ssh stall watch")

    def start(self) -> "StallWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        # Not joined: a probe may be waiting on a dead connection, which closing it ends.
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.transport.is_active():
                return
            replied = threading.Event()

            def probe() -> None:
                try:
                    self.transport.global_request("keepalive@openssh.com", wait=True)
                finally:
                    replied.set()

            began = time.monotonic()
            threading.Thread(target=probe, daemon=True, name="ssh stall probe").start()
            if replied.wait(self.stall) and self.transport.is_active():
                continue
            if self._stop.is_set() or not self.transport.is_active():
                return
            self.stalled = time.monotonic() - began >= self.stall
            self.transport.close()
            return
