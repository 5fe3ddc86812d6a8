"""A bounded HTTPS load loop: what a deploy looks like to visitors (failed requests, latency).

Used by the deploy e2e tests and bench/deploy_under_load.py. A few threads ask
for one page over keep-alive connections until stopped, or until their request
or time budget runs out (never unbounded). A request counts as ok only with
status 200 and the expected text in the body.

nginx's graceful reload closes idle keep-alive connections; a request sent on
one at that instant sees the connection close before any answer. Browsers
resend such an idempotent request on a new connection (RFC 9112, 9.3.1.1), and
so does this loop, once, counting it under `resent`. Anything else is a failure.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import requests


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    resent: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, of every answered request

    @property
    def total(self) -> int:
        return self.ok + self.failed

    def percentile(self, fraction: float) -> float:
        """The latency at `fraction` (0.5, 0.99) in milliseconds; 0 without data."""
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else 0.0
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(fraction * 100) - 1] * 1000


class LoadLoop:
    """`threads` clients asking for `url` until `stop()`, `max_requests` in all, or `max_seconds`.

    Example:
        with LoadLoop("https://10.213.1.2/", expect="Welcome", verify=ca) as load:
            deploy()
        assert load.result.failed == 0
    """

    def __init__(self, url: str, expect: str, verify: str | bool = True, threads: int = 2,
                 max_requests: int = 20000, max_seconds: float = 300, min_requests: int = 0):
        self.url, self.expect, self.verify, self.threads = url, expect, verify, threads
        self.max_requests, self.max_seconds, self.min_requests = max_requests, max_seconds, min_requests
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "LoadLoop":
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop once at least `min_requests` were made (or the time budget ran out), and wait for the clients."""
        while self.result.total < self.min_requests and time.monotonic() < self._deadline:
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _get(self, session: requests.Session) -> requests.Response:
        try:
            return session.get(self.url, verify=self.verify, timeout=10)
        except requests.ConnectionError as error:
            if "RemoteDisconnected" not in repr(error):
                raise
            with self._lock:
                self.result.resent += 1
            return session.get(self.url, verify=self.verify, timeout=10)

    def _client(self) -> None:
        session = requests.Session()
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._lock:
                if self.result.total >= self.max_requests:
                    return
            began = time.monotonic()
            try:
                response = self._get(session)
                outcome = (
                    "ok"
                    if response.status_code == 200 and self.expect in response.text
                    else f"HTTP {response.status_code}"
                    + ("" if response.status_code != 200 else " without the expected text")
                )
            except requests.RequestException as error:
                outcome = type(error).__name__
            elapsed = time.monotonic() - began
            with self._lock:
                if outcome == "ok":
                    self.result.ok += 1
                    self.result.latencies.append(elapsed)
                else:
                    self.result.failed += 1
                    self.result.failures.append(outcome)
