"""Benchmark: vigil's backup create + verify against raw pg_dump -Fc + pg_restore of the same database.

Run as root from the repository: `.venv/bin/python bench/backup_vs_raw.py [--rows 1000000] [--rounds 5]`.
Uses the sandbox's vps1 (booting and onboarding it when needed). A table of
--rows rows is added to the app's database for the run and dropped after.
Each round, alternating which goes first, measured on the host (no SSH in
the figures):

  vigil  vigil-backup create (snapshot, row counts, pg_dump -Fc, fsync,
         sha256, metadata) + vigil-backup verify (sha256, pg_restore --list,
         restore into a scratch database, row counts compared, drop)
  raw    pg_dump -Fc + createdb + pg_restore + dropdb

Prints each round, the medians and the ratio (target: at most 1.2).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
KEY = REPO / ".vigil" / "sandbox" / "id_ed25519"


def invoke(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"invoke {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")


def on_host(address: str, script: str) -> str:
    """A shell script as root on the VPS (the admin user ops, through sudo); its stdout."""
    done = subprocess.run(["ssh", "-i", str(KEY), "-o", f"UserKnownHostsFile={REPO / 'inventory' / 'sandbox.known_hosts'}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"ops@{address}", "sudo -n sh -s"],
                          input=script, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"on {address}: exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


VIGIL = ('id=$(/usr/local/sbin/vigil-backup create bench | python3 -c "import json,sys; print(json.load(sys.stdin)[\'id\'])") '
         '&& /usr/local/sbin/vigil-backup verify "$id" && rm -f /var/backups/vigil/"$id".dump /var/backups/vigil/"$id".json')
RAW = ('cd / && runuser -u postgres -- pg_dump -Fc -d together_pray -f /var/lib/postgresql/bench-raw.dump '
       '&& runuser -u postgres -- createdb -T template0 bench_raw '
       '&& runuser -u postgres -- pg_restore --no-owner --no-acl --exit-on-error -d bench_raw /var/lib/postgresql/bench-raw.dump '
       '&& runuser -u postgres -- dropdb bench_raw && rm -f /var/lib/postgresql/bench-raw.dump')


def timed(address: str, body: str) -> float:
    script = f"began=$(date +%s%N)\n( {body} ) >/dev/null\nend=$(date +%s%N)\necho $(( (end - began) / 1000000 ))\n"
    return int(on_host(address, script).strip().splitlines()[-1]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    if not (REPO / "inventory" / "sandbox.yml").exists():
        invoke("sandbox.up", "--hosts=1")
    invoke("provision.server", "--limit=vps1")
    address = yaml.safe_load((REPO / "inventory" / "sandbox.yml").read_text())["hosts"]["vps1"]["address"]
    table = ("DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows AS SELECT g AS id, md5(g::text) AS payload, "
             f"now() - g * interval '1 second' AS at FROM generate_series(1, {int(options.rows)}) g; ANALYZE bench_rows;")
    on_host(address, f"cd / && runuser -u postgres -- psql -X -q -d together_pray -c {shlex.quote(table)}")
    size = on_host(address, "cd / && runuser -u postgres -- psql -X -tA -d together_pray "
                            "-c \"select pg_size_pretty(pg_database_size('together_pray'))\"").strip()
    vigil, raw = [], []
    try:
        for round_ in range(options.rounds):
            order = [("vigil", VIGIL), ("raw", RAW)] if round_ % 2 == 0 else [("raw", RAW), ("vigil", VIGIL)]
            for name, body in order:
                (vigil if name == "vigil" else raw).append(timed(address, body))
            print(f"round {round_ + 1}: vigil {vigil[-1]:.2f}s, raw {raw[-1]:.2f}s", flush=True)
    finally:
        on_host(address, "cd / && runuser -u postgres -- psql -X -q -d together_pray -c 'DROP TABLE IF EXISTS bench_rows'")
    ratio = statistics.median(vigil) / statistics.median(raw)
    print(f"\n{options.rows} rows (database {size}), {options.rounds} rounds, alternating\n")
    print("| what | median | min | max |")
    print("|---|---|---|---|")
    for name, times in (("vigil create + verify", vigil), ("raw pg_dump + pg_restore", raw)):
        print(f"| {name} | {statistics.median(times):.2f} s | {min(times):.2f} s | {max(times):.2f} s |")
    print(f"\nvigil / raw: {ratio:.2f} (target at most 1.20)")
    print(json.dumps({"rows": options.rows, "vigil": vigil, "raw": raw, "ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
