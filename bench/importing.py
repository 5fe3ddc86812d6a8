"""Benchmark: `backup.import` of a million-row PaaS database against a bare `pg_dump | pg_restore`
between the same two servers, in the same rounds.

Run as root from the repository: `.venv/bin/python bench/importing.py [--rounds 3]`. Boots vps1 and
onboards it (the env's database host; no backup host, so no backup follows the import: the figure is the
copy with its checks), starts the stand-in PaaS database of tests/support/paas.py on vps1's gateway
(Debian's PostgreSQL on this machine, TLS from the sandbox CA, the app's schema and a million rows), then
alternates in each round:

  bare     `ssh vps1`, there a fresh database and `pg_dump -Fc | pg_restore` from the source into it, over
           the same TLS (timed from here, as a person runs it, and the pipe alone on vps1)
  vigil    `invoke backup.import --from-url=... --ca=...`: inspect, the copy from an exported snapshot,
           every table and sequence counted and checksummed on both sides, compared, swapped in

Target (issue 20): vigil at most 1.3 times the bare copy, checks included.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    REPO,
    BenchError,
    Spread,
    alternating,
    commit,
    invoke,
    machine,
    markdown_table,
    on_host,
    run_alone,
    sandbox_hosts,
)
from tests.support.paas import DATABASE, OWNER, PORT, paas_database  # noqa: E402
from vigil.sandbox.paths import Vps  # noqa: E402

ROWS = 1_000_000
TARGET_RATIO = 1.3
DESCRIPTION = (f"A stand-in PaaS database on this machine ({ROWS:,} prayers and the app's schema, TLS), copied into\n"
               "vps1's PostgreSQL 17 by each way in turn, in the same rounds:")
CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
# The bare copy, as a person would type it on the database host: the password in a 0600 file (the
# script travels on ssh's stdin, never in a command line). Its values are appended as sh variables.
BARE = r"""
set -e
secret=$(mktemp) && chmod 600 "$secret" && chown postgres "$secret"
printf '%s:%s:%s:%s:%s\n' "$host" "$port" "$database" "$user" "$password" > "$secret"
runuser -u postgres -- dropdb --if-exists bare_copy
runuser -u postgres -- createdb bare_copy
start=$(date +%s.%N)
runuser -u postgres -- env PGPASSFILE="$secret" pg_dump --format=custom --no-owner --no-acl \
  --dbname="host=$host port=$port dbname=$database user=$user sslmode=require" \
  | runuser -u postgres -- pg_restore --no-owner --no-acl --exit-on-error --dbname=bare_copy
end=$(date +%s.%N)
rm -f "$secret"
echo "seconds $(awk -v start="$start" -v end="$end" 'BEGIN { print end - start }')"
"""
# Back to an empty app database before each vigil round (the import refuses one that holds rows), and
# no copy of the bare round left.
EMPTY = r"""
set -e
runuser -u postgres -- psql -X -q -c "DROP DATABASE IF EXISTS together_pray WITH (FORCE)" \
  -c "CREATE DATABASE together_pray OWNER together_pray" -c "DROP DATABASE IF EXISTS bare_copy"
"""


@dataclass
class ImportResult:
    bare: list[float]  # from this machine, as a person runs it: ssh, a fresh database, the pipe
    bare_pipe: list[float]  # the pipe alone, timed on vps1
    vigil: list[float]
    phases: dict[str, float]  # where the last round of backup.import spent its time

    @property
    def ratio(self) -> float:
        return Spread.of(self.vigil).median / Spread.of(self.bare).median

    def table(self) -> str:
        return markdown_table(["a million-row PaaS database into vps1", "seconds"], [
            ["bare: `ssh vps1`, createdb, `pg_dump -Fc | pg_restore`", Spread.of(self.bare).show("s")],
            ["(of which the pipe alone, timed on vps1)", Spread.of(self.bare_pipe).show("s")],
            ["`backup.import` (snapshot, copy, both sides counted and checksummed, swap)",
             Spread.of(self.vigil).show("s")],
            ["ratio of the medians", f"{self.ratio:.2f}"],
        ])

    def where_the_time_went(self) -> str:
        return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.phases.items())

    def verdicts(self) -> list[str]:
        return [f"backup.import {self.ratio:.2f} times the bare copy (target at most {TARGET_RATIO}): "
                f"{'met' if self.ratio <= TARGET_RATIO else 'MISSED'}"]


def measure(rounds: int) -> ImportResult:
    invoke("sandbox.down")
    invoke("sandbox.up", "--hosts=1")
    invoke("secrets.generate", "--env=sandbox")
    invoke("provision.server")
    address, gateway = sandbox_hosts()["vps1"]["address"], Vps.from_name("vps1").gateway
    directory = Path(tempfile.mkdtemp(prefix="vigil-paas-"))
    times: dict[str, list[float]] = {"bare": [], "bare_pipe": [], "vigil": []}
    phases: dict[str, float] = {}
    try:
        with paas_database(gateway, directory, ROWS) as paas:
            for round_ in range(rounds):
                for way in alternating(["bare", "vigil"], round_):
                    if way == "bare":
                        values = {"host": gateway, "port": PORT, "database": DATABASE, "user": OWNER,
                                  "password": paas.password}
                        started = time.monotonic()
                        said = on_host(address, "".join(f"{name}={shlex.quote(str(value))}\n"
                                                        for name, value in values.items()) + BARE)
                        times["bare"].append(time.monotonic() - started)
                        times["bare_pipe"].append(float(said.split()[-1]))
                        continue
                    on_host(address, EMPTY)
                    started = time.monotonic()
                    ran = subprocess.run([sys.executable, "-m", "invoke", "backup.import", "--json",
                                          f"--from-url=postgresql://{OWNER}@{gateway}:{PORT}/{DATABASE}",
                                          f"--ca={CA}"], cwd=REPO, input=paas.password + "\n", capture_output=True,
                                         text=True, timeout=1800)
                    times["vigil"].append(time.monotonic() - started)
                    if ran.returncode != 0:
                        raise BenchError(f"backup.import failed: {ran.stdout[-2000:]}{ran.stderr[-2000:]}")
                    said = json.loads(ran.stdout[ran.stdout.index("{"):])
                    phases = {"the CLI starting, before the import": times["vigil"][-1] - said["seconds"],
                              **said["phases"]}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return ImportResult(times["bare"], times["bare_pipe"], times["vigil"], phases)


def report(result: ImportResult, rounds: int, minutes: float) -> str:
    return "\n".join([
        f"# Import benchmark, {time.strftime('%Y-%m-%d', time.gmtime())}",
        "",
        f"`.venv/bin/python bench/importing.py --rounds {rounds}` at commit {commit()}, on its own (not a full",
        f"`invoke bench`). The run took {minutes:.0f} minutes.",
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in machine()],
        "",
        "## Moving a database in (issue 20)",
        "",
        DESCRIPTION,
        "",
        result.table(),
        "",
        "Where backup.import's last round spent its time (the import's steps as seconds from its start;",
        "then the copy's own: the pipe, the source's checks in the same snapshot, the copy's checks):",
        result.where_the_time_went() + ".",
        "",
        *[f"- {line}" for line in result.verdicts()],
        "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    run_alone("import", measure, report, parser.parse_args().rounds)
