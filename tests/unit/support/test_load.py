"""The load loop: bounded, and counting exactly what failed (against a local HTTP server on loopback)."""

import pytest

from tests.support.load import LoadLoop, LoadResult
from tests.support.loopback import LoopbackServer


@pytest.fixture
def server():
    with LoopbackServer(answer=(200, b"Welcome")) as page:
        yield page


@pytest.mark.parametrize("answers, failed, kinds", [
    ([], 0, []),
    ([(502, b"Bad Gateway"), (200, b"an error page")], 2, ["HTTP 502", "HTTP 200 without the expected text"]),
])
def test_the_loop_counts_what_failed_and_stops_at_its_request_budget(server, answers, failed, kinds):
    server.queue = list(answers)
    with LoadLoop(server.url + "/", expect="Welcome", threads=1, min_requests=40, max_requests=40) as load:
        pass
    assert load.result.total == 40 and load.result.failed == failed and load.result.failures == kinds
    assert len(load.result.latencies) == 40 - failed


def test_stopping_waits_for_the_minimum_requests(server):
    with LoadLoop(server.url + "/", expect="Welcome", threads=2, min_requests=30, max_requests=1000) as load:
        pass  # stopped at once, but only after 30 requests
    assert 30 <= load.result.total < 1000


def test_a_refused_connection_is_a_failure_and_time_bounds_the_loop():
    with LoadLoop("http://127.0.0.1:9/", expect="x", threads=1, max_seconds=0.5, min_requests=10**6) as load:
        pass
    assert load.result.ok == 0 and load.result.failed > 0 and load.result.failures[0] == "ConnectionError"


@pytest.mark.parametrize("latencies, p50, p99", [
    ([], 0.0, 0.0), ([0.010], 10.0, 10.0), ([i / 1000 for i in range(1, 101)], 50.5, 99.01),
])
def test_percentiles_in_milliseconds(latencies, p50, p99):
    result = LoadResult(latencies=latencies)
    assert result.percentile(0.5) == pytest.approx(p50) and result.percentile(0.99) == pytest.approx(p99)
