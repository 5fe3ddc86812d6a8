"""audit.performance: the figures and each rule, table by table (no hosts)."""

import pytest

from vigil.audit.performance import (
    Timing,
    cpu_idle,
    delivery_items,
    headroom_items,
    page_items,
    percentile,
    pool_item,
    static_asset,
)
from vigil.incident.host_status import HostFacts


def test_percentiles_are_nearest_rank():
    values = [0.1 * n for n in range(1, 21)]
    assert (percentile(values, 0.5), round(percentile(values, 0.95), 2)) == (1.0, 2.0)


# (full HTML seconds of each load, passes the 2 s target at p95)
LOADS = [([0.05] * 19 + [0.3], True), ([0.05] * 18 + [2.5, 2.6], False), ([], False)]


@pytest.mark.parametrize("full, ok", LOADS)
def test_the_page_passes_when_its_p95_is_under_two_seconds(full, ok):
    [item] = page_items("vps1", [Timing(value / 2, value) for value in full])
    assert item.ok == ok and (("full HTML p50" in item.evidence) == bool(full))


# (page headers, asset headers, failing items)
DELIVERY = [
    ({"Content-Encoding": "gzip"}, {"Cache-Control": "public, max-age=31536000, immutable"}, []),
    ({}, {"Cache-Control": "public, max-age=31536000, immutable"}, ["compression on"]),
    ({"Content-Encoding": "gzip"}, {"Cache-Control": "no-cache"}, ["static assets cached"]),
    ({"Content-Encoding": "gzip"}, None, ["static assets cached"]),
]


@pytest.mark.parametrize("page, asset, failing", DELIVERY)
def test_compression_and_asset_caching(page, asset, failing):
    items = delivery_items("vps1", {"headers": page, "html": ""}, asset)
    assert [item.name for item in items if not item.ok] == failing


def test_the_first_static_asset_is_found_in_the_page():
    html = '<link rel="stylesheet" href="/_next/static/css/a1b2.css"/><script src="/_next/static/chunks/main-9f.js">'
    assert static_asset(html) == "/_next/static/css/a1b2.css" and static_asset("<html></html>") is None


IDLE = "cpu  100 0 100 800 0 0 0 0 0 0\ncpu  110 0 110 880 0 0 0 0 0 0\n"  # 80 of 100 ticks idle
BUSY = "cpu  100 0 100 800 0 0 0 0 0 0\ncpu  190 0 105 805 0 0 0 0 0 0\n"  # 5 of 100 ticks idle


# In a container: clock ticks per second and cores, then (uptime, its processes' ticks) a second apart.
CONTAINER_IDLE = "@container 100 2\n500.00 1000\n501.00 1040\n"  # 40 of 200 ticks used
CONTAINER_BUSY = "@container 100 2\n500.00 1000\n501.00 1190\n"  # 190 of 200


@pytest.mark.parametrize("sample, idle", [
    (IDLE, 80.0), (BUSY, 5.0), ("cpu 1 2 3\n", None),
    (CONTAINER_IDLE, 80.0), (CONTAINER_BUSY, 5.0),
    # Its processes' time counted a little past the second it took: no headroom, never below 0.
    ("@container 100 2\n500.00 1000\n500.50 1150\n", 0.0),
    # A sample cut short, or no time between its two readings: no figure.
    ("@container 100 2\n500.00 1000\n", None), ("@container 100 2\n500.00 1000\n500.00 1000\n", None),
])
def test_cpu_idle_comes_from_two_samples(sample, idle):
    assert cpu_idle(sample) == (pytest.approx(idle) if idle is not None else None)


# (CPU sample, memory kB total/available, disks, failing items)
HEADROOM = [
    (IDLE, (2048000, 1024000), {"/": 40}, []),
    (BUSY, (2048000, 1024000), {"/": 40}, ["CPU headroom"]),
    (CONTAINER_BUSY, (2048000, 1024000), {"/": 40}, ["CPU headroom"]),
    (IDLE, (2048000, 204800), {"/": 40}, ["memory headroom"]),
    (IDLE, (2048000, 1024000), {"/": 40, "/var/lib/pgbackrest/repository": 85}, ["disk headroom"]),
]


@pytest.mark.parametrize("sample, memory, disks, failing", HEADROOM)
def test_headroom_per_host(sample, memory, disks, failing):
    items = headroom_items("vps1", HostFacts(load=(0.5, 2), memory=memory, disks=disks), cpu_idle(sample))
    assert [item.name for item in items if not item.ok] == failing


@pytest.mark.parametrize(
    "pool, hosts, max_connections, ok", [(10, 2, 100, True), (30, 2, 100, False), (0, 1, 100, False)]
)
def test_every_backend_pool_at_once_must_fit_the_servers_connections(pool, hosts, max_connections, ok):
    assert pool_item("vps1", pool, hosts, max_connections).ok == ok
