"""Benchmark: what the layout past one server costs and saves: a failover, a planned switchover, a web host
lost and a rolling deploy behind the balancer, and the balancer's own latency.

Run as root from the repository: `.venv/bin/python bench/ha.py [--rounds 5]`. Boots six VPSes (vps1 the
balancer, vps2 and vps3 the web hosts, vps4 to vps6 the database cluster), onboards them, pushes the app's
secrets and deploys it. Then, each `--rounds` times:

  failover    a writer on vps2 inserts a row per transaction through HAProxy; the leader's VPS is cut off
              (`sandbox.poweroff --hard`: nothing on it shuts down, its leader lock must expire): the seconds
              from the cut to the first acknowledged insert after it; the old leader is powered on again and
              waited for until it streams
  switchover  the same writer; `db.switchover` to the synchronous standby: the longest pause between two
              acknowledged inserts
  web host    a load loop through the balancer (2 clients, keep-alive); vps3 cut off: requests that failed
  rolling     the same load loop; `deploy.backend --serial=1`: requests that failed
  latency     from the balancer's host, 300 sequential GET /api/health on one kept-alive connection (8 a
              second, under the API's rate limit), through HAProxy and straight to a web host: p50 and
              p99, and the difference

Issue 23's targets: a replica leads within 30 s, writes pause at most 5 s in a switchover, 0 failed
requests in a rolling deploy (at most the ones in flight when a web host dies). Prints the figures and
writes bench/results/<date>-ha.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    SUMMARY_COLUMNS,
    BenchError,
    Spread,
    commit,
    invoke,
    machine,
    markdown_table,
    on_host,
    run_alone,
    sandbox_hosts,
)
from tests.support.app_database import APP_LOGIN, STOP_WRITER, logged_writes, longest_pause, writer  # noqa: E402
from tests.support.load import LoadLoop  # noqa: E402
from vigil.core.roles import load_role  # noqa: E402

BALANCER, WEB, OTHER_WEB = "vps1", "vps2", "vps3"
MEMBERS = ("vps4", "vps5", "vps6")
LAYOUT = [f"--group={BALANCER}:lb", f"--group={WEB}:web", f"--group={OTHER_WEB}:web",
          *(f"--group={name}:db" for name in MEMBERS)]
CA = str(Path(__file__).resolve().parents[1] / ".vigil" / "sandbox" / "ca" / "ca.crt")
HOME_PAGE = "Welcome. May this be a place of peace"
FAILOVER_TARGET, SWITCHOVER_TARGET = 30, 5
# The cluster's timings as roles/patroni sets them: a power-cut leader's lock outlives it by at most the ttl.
PATRONI = load_role("patroni").defaults
# At most this long a writer runs on the web host in a round (stopped earlier when the round is measured).
WRITER_SECONDS = 120
# 300 sequential GETs on one kept-alive connection to $1 (an address), checked against the CA in $2, paced
# under nginx's API rate limit (nginx_api_rate_per_second, 10): a 429 would be nginx's answer, not the app's.
LATENCY = r"""
python3 - "$1" "$2" <<'PY'
import http.client, json, ssl, sys, time
context = ssl.create_default_context(cafile=sys.argv[2])
context.check_hostname = False
connection = http.client.HTTPSConnection(sys.argv[1], 443, context=context, timeout=10)
took = []
for _ in range(300):
    began = time.perf_counter()
    connection.request("GET", "/api/health")
    answer = connection.getresponse()
    answer.read()
    took.append(time.perf_counter() - began)
    if answer.status != 200:
        raise SystemExit(f"HTTP {answer.status}")
    time.sleep(0.12)
print(json.dumps(took))
PY
"""


@dataclass
class HaResult:
    failover: list[float]
    switchover: list[float]
    web_host_failed: list[int]
    rolling_failed: list[int]
    requests: list[int]
    through: list[float]
    direct: list[float]

    def latency(self, which: str) -> tuple[float, float]:
        """p50 and p99 of GET /api/health in ms, "through" the balancer or "direct" to a web host."""
        ordered = sorted(self.through if which == "through" else self.direct)

        def at(fraction: float) -> float:
            return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))] * 1000
        return at(0.5), at(0.99)

    def summary_rows(self) -> list[list[str]]:
        """Rows of the summary table (what, vigil, compared with, result): this run's and `invoke bench`'s."""
        failover, switchover = Spread.of(self.failover), Spread.of(self.switchover)
        (through_50, through_99), (direct_50, direct_99) = self.latency("through"), self.latency("direct")

        def within(worst: float, target: float) -> str:
            return f"at most {target} s, worst {worst:.1f} s: {'met' if worst <= target else 'MISSED'}"

        def none_failed(failed: list[int]) -> str:
            return "0 (target 0): met" if not sum(failed) else f"{sum(failed)} (target 0): MISSED"
        return [
            ["database leader's power cut to the first acknowledged write", f"{failover.median:.1f} s",
             f"leader lock ttl {PATRONI['patroni_ttl']} s", within(failover.high, FAILOVER_TARGET)],
            ["planned switchover: longest pause between acknowledged writes", f"{switchover.median:.1f} s",
             "", within(switchover.high, SWITCHOVER_TARGET)],
            ["failed requests through the balancer, a web host's power cut", f"{max(self.web_host_failed)}",
             f"{len(self.web_host_failed)} rounds", none_failed(self.web_host_failed)],
            ["failed requests through the balancer, rolling deploy.backend --serial=1",
             f"{max(self.rolling_failed)}", f"{len(self.rolling_failed)} rounds", none_failed(self.rolling_failed)],
            ["GET /api/health through the balancer: p50 / p99", f"{through_50:.1f} ms / {through_99:.1f} ms",
             f"straight to a web host {direct_50:.1f} ms / {direct_99:.1f} ms",
             f"{through_50 - direct_50:+.1f} ms / {through_99 - direct_99:+.1f} ms"],
        ]

    def table(self) -> str:
        """Every round's figures."""
        (through_50, through_99), (direct_50, direct_99) = self.latency("through"), self.latency("direct")
        return markdown_table(["outgrowing one server", "figure"], [
            ["leader cut off -> first acknowledged write", Spread.of(self.failover).show("s", 1)],
            ["planned switchover: longest pause between acknowledged writes", Spread.of(self.switchover).show("s", 1)],
            ["web host cut off under load: failed requests", ", ".join(map(str, self.web_host_failed))],
            ["rolling deploy.backend --serial=1 under load: failed requests", ", ".join(map(str, self.rolling_failed))],
            ["requests through the balancer in those rounds", ", ".join(map(str, self.requests))],
            ["GET /api/health through the balancer: p50 / p99", f"{through_50:.1f} ms / {through_99:.1f} ms"],
            ["GET /api/health straight to a web host: p50 / p99", f"{direct_50:.1f} ms / {direct_99:.1f} ms"],
        ])


def prepare() -> dict[str, str]:
    invoke("sandbox.down")
    invoke("secrets.generate", "--env=sandbox")
    invoke("sandbox.up", "--hosts=6", *LAYOUT)
    invoke("provision.server")
    invoke("secrets.push", f"--limit={WEB},{OTHER_WEB}")
    invoke("deploy.all")
    return {name: host["address"] for name, host in sandbox_hosts().items()}


def status() -> dict:
    return json.loads(invoke("db.status", "--json").stdout)


def wait(condition, seconds: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = condition()
        if answer:
            return answer
        time.sleep(every)
    raise BenchError(f"{what} not within {seconds:.0f} s")


def healthy() -> dict | None:
    try:
        found = status()
    except BenchError:
        return None
    return found if not found["problems"] else None


def failover_round(hosts: dict[str, str]) -> float:
    leader = wait(healthy, 300, "a healthy cluster")["leader"]
    on_host(hosts[WEB], APP_LOGIN + writer(WRITER_SECONDS))
    time.sleep(5)
    invoke("sandbox.poweroff", leader, "--hard")
    cut = time.time()
    time.sleep(45)
    writes = logged_writes(on_host(hosts[WEB], STOP_WRITER))
    after = [write.at for write in writes if write.acknowledged and write.at > cut]
    if not after:
        raise BenchError(f"no write acknowledged within 45 s of cutting {leader} off")
    invoke("sandbox.poweron", leader)
    wait(healthy, 300, f"{leader} streaming again")
    return after[0] - cut


def switchover_round(hosts: dict[str, str]) -> float:
    found = wait(healthy, 300, "a healthy cluster")
    target = next(member["name"] for member in found["members"] if member["role"] == "Sync Standby")
    on_host(hosts[WEB], APP_LOGIN + writer(WRITER_SECONDS))
    time.sleep(5)
    invoke("db.switchover", f"--to={target}", "--yes")
    time.sleep(10)
    return longest_pause(logged_writes(on_host(hosts[WEB], STOP_WRITER)))


def web_host_round(hosts: dict[str, str]) -> tuple[int, int]:
    with LoadLoop(f"https://{hosts[BALANCER]}/", expect=HOME_PAGE, verify=CA, max_seconds=120) as load:
        time.sleep(5)
        invoke("sandbox.poweroff", OTHER_WEB, "--hard")
        time.sleep(15)
    invoke("sandbox.poweron", OTHER_WEB)
    up = f'echo "show stat" | socat stdio /run/haproxy/admin.sock | grep -c "^web,{OTHER_WEB},.*,UP,"'
    wait(lambda: on_host(hosts[BALANCER], up + " || true").strip() == "1", 300, f"{OTHER_WEB} back in the rotation")
    return load.result.failed, load.result.total


def rolling_round(hosts: dict[str, str]) -> tuple[int, int]:
    with LoadLoop(f"https://{hosts[BALANCER]}/", expect=HOME_PAGE, verify=CA, max_seconds=900) as load:
        time.sleep(2)
        invoke("deploy.backend", "--serial=1")
        time.sleep(2)
    return load.result.failed, load.result.total


def latency(hosts: dict[str, str]) -> tuple[list[float], list[float]]:
    on_host(hosts[BALANCER], f"cat > /root/bench-ca.crt <<'PEM'\n{Path(CA).read_text()}PEM\n")
    measured = {}
    for name, target in (("through", hosts[BALANCER]), ("direct", hosts[WEB])):
        measured[name] = json.loads(on_host(hosts[BALANCER], f"set -- {target} /root/bench-ca.crt\n{LATENCY}"))
    return measured["through"], measured["direct"]


def measure(rounds: int) -> HaResult:
    hosts = prepare()
    result = HaResult([], [], [], [], [], [], [])
    for _ in range(rounds):
        result.failover.append(failover_round(hosts))
        result.switchover.append(switchover_round(hosts))
    for _ in range(max(1, rounds // 2)):
        failed, total = web_host_round(hosts)
        result.web_host_failed.append(failed)
        result.requests.append(total)
        failed, total = rolling_round(hosts)
        result.rolling_failed.append(failed)
        result.requests.append(total)
    result.through, result.direct = latency(hosts)
    return result


def layout() -> list[str]:
    """What the rounds ran on, for this run's results file and `invoke bench`'s."""
    return [
        f"{BALANCER} the balancer (roles/balancer), {WEB} and {OTHER_WEB} the web hosts (HAProxy on each to the",
        f"database's leader, roles/haproxy), {', '.join(MEMBERS)} the database cluster (Patroni and etcd; ttl",
        f"{PATRONI['patroni_ttl']} s, loop {PATRONI['patroni_loop_wait']} s, synchronous mode on).",
        "A writer on a web host inserts one row per transaction, one psql each, through HAProxy; a cut-off",
        "host is `sandbox.poweroff --hard` (every process killed at once: its leader lock is left to expire).",
        "The load loop is two clients asking for the home page through the balancer, over kept-alive connections.",
    ]


def report(result: HaResult, rounds: int, minutes: float) -> str:
    return "\n".join([
        f"# Outgrowing one server: failover, switchover, balancer, {time.strftime('%Y-%m-%d', time.gmtime())}",
        "",
        f"`.venv/bin/python bench/ha.py --rounds {rounds}` at commit {commit()}, on its own (not a full",
        f"`invoke bench`). The run took {minutes:.0f} minutes.",
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in machine()],
        "",
        "## The layout",
        "",
        *layout(),
        "",
        "## Summary",
        "",
        markdown_table(SUMMARY_COLUMNS, result.summary_rows()),
        "",
        "## Every round",
        "",
        result.table(),
        "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    run_alone("ha", measure, report, parser.parse_args().rounds)
