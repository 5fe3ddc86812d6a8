"""Benchmark: vigil's backup create + verify against raw pg_dump -Fc + pg_restore of the same database.

Run as root from the repository: `.venv/bin/python bench/backup_vs_raw.py [--rows 1000000] [--rounds 5]`
(or `invoke bench`, which runs every benchmark).
Uses the sandbox's vps1 (booting and onboarding it when needed). A table of
--rows rows is added to the app's database for the run and dropped after.
Each round, alternating which goes first, measured on the host (no SSH in
the figures):

  vigil  vigil-backup create (snapshot, row counts, pg_dump -Fc, fsync,
         sha256, metadata) + vigil-backup verify (sha256, pg_restore --list,
         restore into a scratch database, row counts compared, drop)
  raw    pg_dump -Fc + createdb + pg_restore + dropdb

Prints each round, the medians with min and max, and the ratio (target: at most 1.2).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    INVENTORY,
    Spread,
    alternating,
    invoke,
    markdown_table,
    on_host,
    sandbox_hosts,
    wait_until_quiet,
)

VIGIL = (
    "id=$(/usr/local/sbin/vigil-backup create bench "
    "| python3 -c \"import json,sys; print(json.load(sys.stdin)['id'])\") "
    '&& /usr/local/sbin/vigil-backup verify "$id" && rm -f /var/backups/vigil/"$id".dump /var/backups/vigil/"$id".json'
)
RAW = (
    "cd / && runuser -u postgres -- pg_dump -Fc -d together_pray -f /var/lib/postgresql/bench-raw.dump "
    "&& runuser -u postgres -- createdb -T template0 bench_raw "
    "&& runuser -u postgres -- pg_restore --no-owner --no-acl --exit-on-error "
    "-d bench_raw /var/lib/postgresql/bench-raw.dump "
    "&& runuser -u postgres -- dropdb bench_raw && rm -f /var/lib/postgresql/bench-raw.dump"
)
BODIES = {"vigil": VIGIL, "raw": RAW}
TARGET = 1.2


def timed(address: str, body: str) -> float:
    """`body`'s wall time measured on the host, in seconds (SSH is not in the figure)."""
    script = f"began=$(date +%s%N)\n( {body} ) >/dev/null\nend=$(date +%s%N)\necho $(( (end - began) / 1000000 ))\n"
    return int(on_host(address, script).strip().splitlines()[-1]) / 1000


@dataclass
class BackupResult:
    rows: int
    size: str
    seconds: dict[str, list[float]]

    @property
    def ratio(self) -> float:
        return Spread.of(self.seconds["vigil"]).median / Spread.of(self.seconds["raw"]).median

    def table(self) -> str:
        labels = {"vigil": "vigil create + verify", "raw": "raw pg_dump + pg_restore"}
        return markdown_table(["backup of the app's database", "wall time: median (min to max)"],
                              [[labels[name], Spread.of(self.seconds[name]).show()] for name in ("vigil", "raw")])

    def verdict(self) -> str:
        return f"vigil / raw: {self.ratio:.2f} (target at most {TARGET}): {'met' if self.ratio <= TARGET else 'MISSED'}"


def measure(rows: int, rounds: int) -> BackupResult:
    """Add a `rows`-row table to the app's database on vps1, alternate the two, drop the table."""
    if not INVENTORY.exists():
        invoke("sandbox.up", "--hosts=1")
    invoke("provision.server", "--limit=vps1")
    address = sandbox_hosts()["vps1"]["address"]
    table = ("DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows AS SELECT g AS id, md5(g::text) AS payload, "
             f"now() - g * interval '1 second' AS at FROM generate_series(1, {int(rows)}) g; ANALYZE bench_rows;")
    on_host(address, f"cd / && runuser -u postgres -- psql -X -q -d together_pray -c {shlex.quote(table)}")
    size = on_host(address, "cd / && runuser -u postgres -- psql -X -tA -d together_pray "
                            "-c \"select pg_size_pretty(pg_database_size('together_pray'))\"").strip()
    seconds: dict[str, list[float]] = {"vigil": [], "raw": []}
    try:
        for round_ in range(rounds):
            for name in alternating(list(BODIES), round_):
                wait_until_quiet()
                seconds[name].append(timed(address, BODIES[name]))
            print(f"round {round_ + 1}: vigil {seconds['vigil'][-1]:.2f} s, raw {seconds['raw'][-1]:.2f} s", flush=True)
    finally:
        on_host(
            address, "cd / && runuser -u postgres -- psql -X -q -d together_pray -c 'DROP TABLE IF EXISTS bench_rows'"
        )
    return BackupResult(rows, size, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    result = measure(options.rows, options.rounds)
    print(f"\n{options.rows} rows (database {result.size}), {options.rounds} rounds, alternating\n")
    print(result.table())
    print(f"\n{result.verdict()}")


if __name__ == "__main__":
    main()
