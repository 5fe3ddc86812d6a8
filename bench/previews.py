"""Benchmark: a preview put up beside an env whose database holds a million rows, from `preview.up` to
serving, with its database copy and its deploy reported apart; and the memory a running preview takes.

Run as root from the repository: `.venv/bin/python bench/previews.py [--rounds 5]`. Boots vps1, onboards
it with previews on (previews_domain, group preview: vps1, written into the sandbox inventory this run
owns), deploys the sample app, adds a million prayers to its database, then in each round puts a preview
of a new branch up (`--worktree`: the env's own artifacts, so no build is timed), reads its memory from
`preview.list` once it has served a page, and takes it down.

Issue 21 sets no target; the figures are recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    CA,
    INVENTORY,
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
from tests.support.named_https import session_for  # noqa: E402

ROWS = 1_000_000
DOMAIN = "preview.together-pray.test"
MORE_ROWS = f"""runuser -u postgres -- psql -X -q -d together_pray -c "INSERT INTO prayers (author, body, created_at)
  SELECT 'member ' || g, 'prayer number ' || g || ' for peace and patience', now() - g * interval '30 seconds'
  FROM generate_series(1, {ROWS}) g; ANALYZE prayers;"
"""


DESCRIPTION = (f"vps1 runs the sandbox env (web and database, no backup host: each preview's database a live copy) "
               f"with {ROWS:,} prayers more than the sample's; each round puts a new branch's preview up on it and "
               "takes it down. The memory is the two services' resident memory (the sandbox's containers keep no "
               "per-unit accounting), read after the preview served a page.")


@dataclass
class PreviewResult:
    total: list[float]  # preview.up, start to exit, as a person runs it
    database: list[float]  # of which the database's copy
    deploy: list[float]  # and the deploy (archives, install, migrations, units, health gate, site)
    memory_mib: list[float]  # both services of one preview, once it served a page

    def table(self) -> str:
        return markdown_table(["a preview of a branch, the env's database holding a million rows", "value"], [
            ["`preview.up` to serving (no build: the env's artifacts)", Spread.of(self.total).show("s")],
            ["of which the database copied (`pg_dump` into `pg_restore`, one snapshot)",
             Spread.of(self.database).show("s")],
            ["of which the deploy (archives, migrations, units, health gate, site)", Spread.of(self.deploy).show("s")],
            ["memory of a running preview (backend and frontend)", Spread.of(self.memory_mib).show("MiB", digits=0)],
        ])


def measure(rounds: int) -> PreviewResult:
    invoke("sandbox.down")
    invoke("sandbox.up", "--hosts=1")
    data = yaml.safe_load(INVENTORY.read_text())
    data["vars"]["previews_domain"] = DOMAIN
    data["groups"]["preview"] = {"hosts": ["vps1"]}
    INVENTORY.write_text(yaml.safe_dump(data, sort_keys=False))
    invoke("secrets.generate", "--env=sandbox")
    invoke("provision.server")
    invoke("secrets.push")
    invoke("deploy.all")
    address = sandbox_hosts()["vps1"]["address"]
    on_host(address, MORE_ROWS)
    result = PreviewResult([], [], [], [])
    for round_ in range(rounds):
        branch = f"bench/round-{round_}"
        started = time.monotonic()
        ran = invoke("preview.up", f"--branch={branch}", "--worktree", "--json")
        result.total.append(time.monotonic() - started)
        made = json.loads(ran.stdout[ran.stdout.index("{"):])
        result.database.append(made["seconds"]["database"])
        result.deploy.append(made["seconds"]["deploy"])
        name = made["url"].removeprefix("https://")
        page = session_for(name, address).get(made["url"] + "/", verify=str(CA), timeout=30)
        if page.status_code != 200:
            raise BenchError(f"{made['url']} answered {page.status_code}")
        listed = json.loads(invoke("preview.list", "--json").stdout)
        result.memory_mib.append(next(p["memory"] for p in listed["vps1"] if p["slug"] == made["slug"]) / 1048576)
        invoke("preview.down", made["slug"])
    return result


def report(result: PreviewResult, rounds: int, minutes: float) -> str:
    return "\n".join([
        f"# Preview benchmark, {time.strftime('%Y-%m-%d', time.gmtime())}",
        "",
        f"`.venv/bin/python bench/previews.py --rounds {rounds}` at commit {commit()}, on its own (not a full",
        f"`invoke bench`). The run took {minutes:.0f} minutes.",
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in machine()],
        "",
        "## A preview beside an env with a million rows (issue 21)",
        "",
        DESCRIPTION,
        "",
        result.table(),
        "",
        "Issue 21 sets no target for these; they are recorded.",
        "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    run_alone("previews", measure, report, parser.parse_args().rounds)
