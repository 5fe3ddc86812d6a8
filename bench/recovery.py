"""Benchmark: what losing the database host costs with a pgBackRest repository (RPO and RTO), and a
full backup through vigil against raw pgbackrest and pg_dump -Fc of the same database.

Run as root from the repository: `.venv/bin/python bench/recovery.py [--rows 1000000] [--rounds 5]`
(or `invoke bench`, which runs every benchmark). Boots vps1 (database and web), vps2 (web) and vps3
(the backup host) as needed, onboards them, pushes the secrets and deploys the sample app, then adds
a --rows-row table to the app's database. In order:

  backups   each round, alternating: `invoke backup.create --type=full` (a fresh process, start to
            exit), raw `pgbackrest backup --type=full` on the backup host, and `pg_dump -Fc` on the
            database host (both over one SSH session); vigil / raw pgbackrest is the wrapper's cost
  drill     `invoke backup.verify latest`: the restore drill's RTO for that database
  loss      a writer on the database host commits a numbered row every 100 ms and prints each
            acknowledged number, read here as it arrives; after --write-seconds the database VPS is
            killed (SIGKILL to its container: a power cut). A new VPS replaces it, onboarded with the
            backup host, the secrets pushed, `backup.restore latest`; vps2 serving /api/health again
            ends the recovery.
  RPO       the time between the last acknowledged row and the newest row the restore brought back
            (as this machine received them), and how many rows that was
  RTO       from the power cut to serving again, and the restore step alone

Prints the figures; `run.py` puts them in the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    CA,
    REPO,
    BenchError,
    Spread,
    alternating,
    invoke,
    markdown_table,
    on_host,
    sandbox_hosts,
    ssh_argv,
    wait_until_quiet,
)

STANZA = "together-pray"
STATE = REPO / ".vigil" / "sandbox" / "state.json"
# vigil's wrapper may cost at most this much over the raw pgbackrest command (issue 18).
WRAPPER_TARGET = 1.1
# The writer: one session, a numbered row committed and printed every 100 ms until it is cut off.
WRITER = r"""
cd / && runuser -u postgres -- psql -XAtq -d together_pray -v ON_ERROR_STOP=1 <<'SQL'
insert into bench_rpo default values returning n \watch 0.1
SQL
"""
# The writer's table, made and archived before it starts: the loss measured is of rows, not of the table.
WRITER_TABLE = (
    "cd / && runuser -u postgres -- psql -XAtq -d together_pray -c 'drop table if exists bench_rpo; create table "
    "bench_rpo (n bigserial primary key, at timestamptz not null default clock_timestamp())' "
    f"&& runuser -u postgres -- pgbackrest --stanza={STANZA} check"
)
RAW_BACKUP = (f"cd / && runuser -u pgbackrest -- pgbackrest --stanza={STANZA} --type=full --log-level-console=warn "
              "backup")
PG_DUMP = ("cd / && runuser -u postgres -- pg_dump -Fc -d together_pray -f /var/lib/postgresql/bench.dump "
           "&& rm -f /var/lib/postgresql/bench.dump")


@dataclass
class RecoveryResult:
    rows: int
    size: str
    archive_timeout: int
    backups: dict[str, list[float]]
    drill_rto: float
    acknowledged: int = 0
    recovered: int = 0
    rpo_seconds: float = 0.0
    rto_seconds: float = 0.0
    restore_seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def wrapper_ratio(self) -> float:
        return Spread.of(self.backups["vigil"]).median / Spread.of(self.backups["pgbackrest"]).median

    def backup_table(self) -> str:
        labels = {"vigil": "vigil backup.create --type=full", "pgbackrest": "raw pgbackrest backup --type=full",
                  "pg_dump": "pg_dump -Fc (on the database host)"}
        return markdown_table(["full backup of the app's database", "wall time: median (min to max)"],
                              [[label, Spread.of(self.backups[name]).show()] for name, label in labels.items()])

    def loss_table(self) -> str:
        return markdown_table(["after the database host's power cut", "figure"], [
            ["last acknowledged row / newest restored row", f"{self.acknowledged} / {self.recovered}"],
            ["RPO: commits lost", f"{self.rpo_seconds:.1f} s ({self.acknowledged - self.recovered} rows)"],
            ["RTO: power cut to serving again", f"{self.rto_seconds:.0f} s"],
            *[[f"... of which {step}", f"{seconds:.0f} s"] for step, seconds in self.steps.items()],
            ["restore step alone (backup.restore latest)", f"{self.restore_seconds:.1f} s"],
            ["restore drill's RTO (backup.verify)", f"{self.drill_rto:.1f} s"],
        ])

    def verdicts(self) -> list[str]:
        ratio = self.wrapper_ratio
        within = self.rpo_seconds <= 60
        return [
            f"vigil / raw pgbackrest: {ratio:.2f} (target at most {WRAPPER_TARGET}): "
            f"{'met' if ratio <= WRAPPER_TARGET else 'MISSED'}",
            f"RPO {self.rpo_seconds:.1f} s with archive_timeout {self.archive_timeout} s (target at most 60 s, "
            f"15 s where the host allows): {'met' if within else 'MISSED'}",
        ]


class Writer(threading.Thread):
    """The writer's output read as it arrives: each acknowledged row with the time it got here."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.process = subprocess.Popen([*ssh_argv(address), "sudo -n sh -s"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.process.stdin.write(WRITER)
        self.process.stdin.close()
        self.received: dict[int, float] = {}

    def run(self) -> None:
        for line in self.process.stdout:
            if line.strip().isdigit():
                self.received[int(line)] = time.time()

    def last(self) -> int:
        return max(self.received, default=0)


def pid_of(name: str) -> int:
    return next(host["pid"] for host in json.loads(STATE.read_text())["hosts"] if host["name"] == name)


def serving(address: str) -> bool:
    try:
        return requests.get(f"https://{address}/api/health", verify=str(CA), timeout=5).status_code == 200
    except requests.RequestException:
        return False


def timed_on_controller(address: str, script: str) -> float:
    began = time.monotonic()
    on_host(address, script)
    return time.monotonic() - began


def prepare(rows: int) -> tuple[dict, str]:
    """A fresh three-host layout serving the app, its database grown by `rows` rows; the addresses and size."""
    invoke("sandbox.down")
    invoke("secrets.generate", "--env=sandbox")
    invoke("sandbox.up", "--hosts=3", "--group=vps3:backup")
    invoke("provision.server", "--limit=vps1,vps2,vps3")
    invoke("secrets.push")
    invoke("deploy.all")
    hosts = {name: host["address"] for name, host in sandbox_hosts().items()}
    table = ("DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows AS SELECT g AS id, md5(g::text) AS payload, "
             f"now() - g * interval '1 second' AS at FROM generate_series(1, {int(rows)}) g; ANALYZE bench_rows;")
    on_host(hosts["vps1"], f"cd / && runuser -u postgres -- psql -X -q -d together_pray -c {shlex.quote(table)}")
    size = on_host(hosts["vps1"], "cd / && runuser -u postgres -- psql -X -tA -d together_pray "
                                  "-c \"select pg_size_pretty(pg_database_size('together_pray'))\"").strip()
    return hosts, size


def measure(rows: int, rounds: int, write_seconds: float = 40) -> RecoveryResult:
    hosts, size = prepare(rows)
    timeout = int(on_host(hosts["vps1"], "cd / && runuser -u postgres -- psql -XAtq -c 'show archive_timeout'")
                  .strip().rstrip("s") or 0)
    backups: dict[str, list[float]] = {"vigil": [], "pgbackrest": [], "pg_dump": []}
    bodies = {
        "vigil": lambda: invoke("backup.create", "--type=full", "--label=bench").seconds,
        "pgbackrest": lambda: timed_on_controller(hosts["vps3"], RAW_BACKUP),
        "pg_dump": lambda: timed_on_controller(hosts["vps1"], PG_DUMP),
    }
    for round_ in range(rounds):
        for name in alternating(list(bodies), round_):
            wait_until_quiet()
            backups[name].append(bodies[name]())
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in backups.items()),
              flush=True)
    drilled = json.loads(invoke("backup.verify", "latest", "--json").stdout)
    result = RecoveryResult(rows, size, timeout, backups, float(drilled["rto_seconds"]))

    on_host(hosts["vps1"], WRITER_TABLE)
    writer = Writer(hosts["vps1"])
    writer.start()
    time.sleep(write_seconds)
    result.acknowledged = writer.last()
    if not result.acknowledged:
        raise BenchError("the writer on vps1 acknowledged no row")
    cut = time.time()
    os.kill(pid_of("vps1"), signal.SIGKILL)  # the power cut
    # A dead host sends nothing more, not even the end of the session: what arrived is all that was
    # acknowledged, so the session is ended here.
    time.sleep(1)
    writer.process.kill()
    writer.join(timeout=10)
    result.acknowledged = writer.last()

    for step, args in (("a new VPS booted", ("sandbox.up", "--hosts=3", "--replace=vps1")),
                       ("onboarding it and the backup host", ("provision.server", "--limit=vps1,vps3")),
                       ("pushing the secrets", ("secrets.push",))):
        result.steps[step] = invoke(*args).seconds
    began = time.monotonic()
    restored = subprocess.run([sys.executable, "-m", "invoke", "backup.restore", "latest", "--yes", "--json"],
                              cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=3600)
    result.steps["the restore"] = time.monotonic() - began
    # The new vps1 runs no app yet (the runbook deploys it next), so the restore exits 2 for its health;
    # vps2, which serves, must be healthy.
    try:
        report = json.loads(restored.stdout)
    except ValueError:
        raise BenchError(f"backup.restore exited {restored.returncode}: {restored.stderr[-2000:]}") from None
    if not report.get("health", {}).get("vps2"):
        raise BenchError(f"backup.restore left vps2 unhealthy: {restored.stdout[-2000:]}")
    result.restore_seconds = float(report["seconds"])
    hosts = {name: host["address"] for name, host in sandbox_hosts().items()}
    deadline = time.monotonic() + 600
    while not serving(hosts["vps2"]):
        if time.monotonic() > deadline:
            raise BenchError("vps2 did not serve /api/health within 10 minutes of the restore")
        time.sleep(0.5)
    result.rto_seconds = time.time() - cut
    result.recovered = int(on_host(hosts["vps1"], "cd / && runuser -u postgres -- psql -XAtq -d together_pray "
                                                  "-c 'select coalesce(max(n), 0) from bench_rpo'").strip())
    newest = writer.received.get(result.recovered)
    last = writer.received[result.acknowledged]
    result.rpo_seconds = last - newest if newest else last - min(writer.received.values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write-seconds", type=float, default=40)
    options = parser.parse_args()
    result = measure(options.rows, options.rounds, options.write_seconds)
    print(f"\n{options.rows} rows (database {result.size}), {options.rounds} rounds, alternating\n")
    print(result.backup_table())
    print()
    print(result.loss_table())
    print()
    print("\n".join(result.verdicts()))


if __name__ == "__main__":
    main()
