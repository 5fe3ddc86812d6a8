"""`audit.performance`: page loads from here (time to first byte and full HTML, p50 and p95), compression
and caching as a visitor gets them, connection pooling against max_connections, and each host's CPU,
memory and disk headroom."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from vigil.audit.browser import browser_items, checked_pages, load_pages
from vigil.audit.checklist import Item, percentile
from vigil.core.commands import Command, script
from vigil.core.fanout import answered, on_hosts, unreachable
from vigil.core.inventory import Host, load_inventory
from vigil.core.paths import REPO_ROOT
from vigil.core.roles import load_role
from vigil.incident.endpoints import site_of
from vigil.incident.host_status import HostFacts, host_status_command, parse_host_status
from vigil.vault.schema import load_schema

PAGE_LOAD_TARGET = 2.0  # seconds: the plan's "< 2 s load time"
HEADROOM = {"cpu": 20, "memory": 20, "disk": 80}  # % CPU idle above, % memory available above, % disk used below
# Two samples of the CPU counters a second apart: how idle the CPUs are now (the load average lags by minutes).
# In a container /proc/stat counts the whole machine's CPUs, which other containers share: there the sample
# is the CPU time of the container's own processes (and of the children they reaped), against its cores.
CPU_SAMPLE = r'''
if systemd-detect-virt --container --quiet 2>/dev/null; then
    # A command name may hold spaces: the fields are counted after its closing parenthesis.
    ticks() {
        cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^.*) //' | awk '{ t += $12 + $13 + $14 + $15 } END { print t + 0 }'
    }
    echo "@container $(getconf CLK_TCK) $(nproc)"
    echo "$(cut -d' ' -f1 /proc/uptime) $(ticks)"; sleep 1; echo "$(cut -d' ' -f1 /proc/uptime) $(ticks)"
else
    head -n 1 /proc/stat; sleep 1; head -n 1 /proc/stat
fi
'''


def cpu_idle(stdout: str) -> float | None:
    """% idle over CPU_SAMPLE's second: between two `cpu ...` lines of /proc/stat (idle and iowait count as
    idle), or in a container, what its processes' CPU time left of its cores' time."""
    lines = stdout.splitlines()
    if lines and lines[0].startswith("@container "):
        try:
            hertz, cores = (int(value) for value in lines[0].split()[1:3])
            (began, before), (ended, after) = ((float(value) for value in line.split()) for line in lines[1:3])
        except ValueError:
            return None
        available = (ended - began) * cores * hertz
        return max(0.0, 100 * (1 - (after - before) / available)) if available > 0 else None
    samples = [[int(value) for value in line.split()[1:]] for line in lines if line.startswith("cpu ")]
    if len(samples) != 2 or len(samples[0]) < 5:
        return None
    deltas = [after - before for before, after in zip(*samples)]
    total = sum(deltas)
    return 100 * (deltas[3] + deltas[4]) / total if total > 0 else None


# The sample backend's pool (data-source.ts: DATABASE_POOL_SIZE, else 10); each web host may run two colors at once.
POOL_DEFAULT = 10


@dataclass(frozen=True)
class Timing:
    first_byte: float  # seconds to the response's headers
    full: float  # seconds to the whole HTML


def page_items(host: str, timings: list[Timing], target: float = PAGE_LOAD_TARGET) -> list[Item]:
    first = [timing.first_byte for timing in timings]
    full = [timing.full for timing in timings]
    return [Item("page load (p95 of the full HTML)", host, bool(full) and percentile(full, 0.95) < target,
                 f"{len(full)} loads: time to first byte p50 {percentile(first, 0.5) * 1000:.0f} ms, p95 "
                 f"{percentile(first, 0.95) * 1000:.0f} ms; full HTML p50 {percentile(full, 0.5) * 1000:.0f} ms, p95 "
                 f"{percentile(full, 0.95) * 1000:.0f} ms (target {target:.0f} s)" if full else "no page loaded")]


def measure_page(url: str, verify, count: int) -> tuple[list[Timing], dict]:
    """`count` sequential loads of the page (bounded: a few seconds each at most); and the last response's headers."""
    # requests on first use: every task imports this module, few ask a site anything (CLI start-up).
    import requests  # noqa: PLC0415

    timings, headers = [], {}
    with requests.Session() as session:
        for _ in range(count):
            began = time.perf_counter()
            with session.get(
                url, verify=verify, timeout=10, stream=True, headers={"Accept-Encoding": "gzip"}
            ) as response:
                first = time.perf_counter() - began
                response.content  # noqa: B018 - the whole body, to time the full HTML
                timings.append(Timing(first, time.perf_counter() - began))
                headers = dict(response.headers)
                html = response.text
    return timings, {"headers": headers, "html": html}


def delivery_items(host: str, page: dict, asset_headers: dict | None) -> list[Item]:
    encoding = page["headers"].get("Content-Encoding", "")
    items = [
        Item("compression on", host, encoding in ("gzip", "br", "zstd"), f"the page came {encoding or 'uncompressed'}")
    ]
    cache = (asset_headers or {}).get("Cache-Control", "")
    age = re.search(r"max-age=(\d+)", cache)
    items.append(Item("static assets cached", host, bool(age) and int(age.group(1)) >= 86400,
                      f"Cache-Control: {cache}" if cache else "no static asset, or no Cache-Control on it"))
    return items


def static_asset(html: str) -> str | None:
    """The first Next.js static asset the page links to."""
    match = re.search(r'(/_next/static/[A-Za-z0-9_./-]+\.(?:js|css))', html)
    return match.group(1) if match else None


def headroom_items(host: str, facts: HostFacts, idle: float | None) -> list[Item]:
    """From incident.status's answer (HostFacts) and a CPU sample: CPU, memory and disk to spare."""
    one, cores = facts.load
    total, available = facts.memory
    free = round(100 * available / total) if total else 0
    fullest = max(facts.disks.items(), key=lambda pair: pair[1], default=("/", 0))
    return [
        Item(
            "CPU headroom",
            host,
            idle is not None and idle > HEADROOM["cpu"],
            f"{idle:.0f}% idle over a second; load {one:.2f} on {cores} cores" if idle is not None else "no CPU sample",
        ),
        Item("memory headroom", host, free > HEADROOM["memory"], f"{free}% available of {total // 1024} MiB"),
        Item("disk headroom", host, fullest[1] < HEADROOM["disk"], f"{fullest[0]} {fullest[1]}% used"),
    ]


def pool_item(host: str, pool_size: int, web_hosts: int, max_connections: int, reserved: int = 3) -> Item:
    """Each backend pools its connections; all of them at once (two colors per host mid-deploy) must fit."""
    wanted = pool_size * web_hosts * 2
    return Item("database connection pooling", host, 0 < pool_size and wanted <= max_connections - reserved,
                f"pool of {pool_size} per backend x {web_hosts} web hosts x 2 colors = {wanted}, "
                f"max_connections {max_connections} ({reserved} reserved)")


POOL_FACTS = r'''
grep -h '^DATABASE_POOL_SIZE=' "$1"/backend.env 2>/dev/null | tail -n 1 | cut -d= -f2 | tr -d "'\""
'''
MAX_CONNECTIONS = "runuser -u postgres -- psql -X -Atc 'show max_connections'"


def performance(env: str, limit: str | None, count: int, loads: int = 5, pages: str | None = None) -> list[Item]:
    """The performance checklist: page loads from here (the HTML, and `loads` first visits of each page in a
    browser: app_pages, or `pages`), delivery, pooling, and each host's headroom."""
    import requests  # noqa: PLC0415 (as in measure_page)

    inventory = load_inventory(env)
    schema = load_schema()
    topology = schema.topology(inventory)
    database = topology.database_or_none()
    roles = [load_role("nginx"), load_role("app")]
    shots = REPO_ROOT / ".vigil" / "audit" / env
    hosts = inventory.select(limit)

    def ask(transport, host: Host) -> dict:
        answer = {"facts": parse_host_status(transport.run(host_status_command([], "", [])).stdout),
                  "idle": cpu_idle(transport.run(Command(("sh", "-c", CPU_SAMPLE), sudo=False)).stdout)}
        if topology.runs_app(host.name):
            size = transport.run(script(POOL_FACTS, schema.config_dir)).stdout.strip()
            answer["pool"] = int(size) if size.isdigit() else POOL_DEFAULT
        if database is not None and host.name == database.name:
            found = transport.run(Command(("sh", "-c", MAX_CONNECTIONS), sudo=True)).stdout.strip()
            answer["max_connections"] = int(found) if found.isdigit() else 0
        return answer

    answers = on_hosts(inventory, hosts, ask)
    items = [Item("reachable over SSH", host, False, reason) for host, reason in unreachable(answers).items()]
    facts_by_host = answered(answers)
    for host in hosts:
        if topology.runs_app(host.name):
            server_name, _, verify = site_of(inventory.vars_for(host, roles))
            try:
                timings, page = measure_page(f"https://{server_name}/", verify, count)
                asset = static_asset(page["html"])
                asset_headers = (
                    dict(requests.get(f"https://{server_name}{asset}", verify=verify, timeout=10).headers)
                    if asset
                    else None
                )
                items += page_items(host.name, timings) + delivery_items(host.name, page, asset_headers)
            except requests.RequestException as error:
                items.append(Item("page load (p95 of the full HTML)", host.name, False, type(error).__name__))
            settings = inventory.vars_for(host, roles)
            wanted = checked_pages(pages, "--pages") if pages else checked_pages(settings["app_pages"],
                                                                                  settings.where("app_pages"))
            shots.mkdir(parents=True, exist_ok=True)
            found = load_pages(f"https://{server_name}", wanted, loads, verify is True, shots, host.name)
            items += browser_items(host.name, found, PAGE_LOAD_TARGET, shots)
        if host.name in facts_by_host:
            items += headroom_items(host.name, facts_by_host[host.name]["facts"], facts_by_host[host.name]["idle"])
    if database is not None and database.name in facts_by_host:
        pools = [answer["pool"] for answer in facts_by_host.values() if "pool" in answer]
        if pools:
            web_hosts = len(topology.app_hosts())
            max_connections = facts_by_host[database.name]["max_connections"]
            items.append(pool_item(database.name, max(pools), web_hosts, max_connections))
    return items
