"""The stall watch: a connection that stops answering is closed after stall_timeout seconds, so whatever
waits on it fails at once; one that answers is left alone (a fake transport stands for paramiko's)."""

import threading
import time

import pytest

from vigil.core.connectors.stall import StallWatch


class FakeTransport:
    """Answers global requests after `delay` seconds (None: never, a black-holed network)."""

    def __init__(self, delay: float | None):
        self.delay, self.active, self.closed = delay, True, threading.Event()
        self.requests = 0

    def is_active(self) -> bool:
        return self.active

    def global_request(self, kind, data=None, wait=True):
        self.requests += 1
        if self.delay is None:
            self.closed.wait()  # paramiko's wait ends only when the transport goes
            return None
        time.sleep(self.delay)
        return None

    def close(self):
        self.active = False
        self.closed.set()


@pytest.mark.parametrize("delay, stalled", [(None, True), (0.01, False)])
def test_a_silent_connection_is_closed_and_an_answering_one_kept(delay, stalled):
    transport = FakeTransport(delay)
    watch = StallWatch(transport, stall=0.3, interval=0.05).start()
    time.sleep(1.0)
    watch.stop()
    assert watch.stalled is stalled and transport.active is not stalled
    assert transport.requests >= 1


def test_a_watch_stopped_with_its_connection_does_not_close_it():
    transport = FakeTransport(None)
    watch = StallWatch(transport, stall=5, interval=0.05).start()
    time.sleep(0.1)
    watch.stop()
    transport.close()  # the connection closed by its owner: the pending probe ends, nothing stalled
    time.sleep(0.1)
    assert watch.stalled is False
