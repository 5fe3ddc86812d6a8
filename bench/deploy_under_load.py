"""Benchmark: what visitors see during a backend deploy, vigil's blue/green switch against a naive restart.

Run as root from the repository: `.venv/bin/python bench/deploy_under_load.py [--requests 2000]`.
Uses the sandbox's vps1, booting, onboarding and deploying it first when needed.
Each load loop asks for the home page over HTTPS through nginx (the frontend
renders it from the backend's data, so a gap in either fails it) until at least
--requests answers, two clients at once. Measured, in this order:

  steady    no deploy: latency baseline
  vigil     `deploy.backend` of the serving release (the other color starts,
            passes the health gate, takes the traffic; the old one drains)
  naive     the usual stop-and-start: `systemctl restart` of the serving unit
  cold      `deploy.backend` of a new release not yet on the host (built
            beforehand; the upload is measured), no load
  warm      the same release again (already on the host), no load
  rollback  `deploy.rollback` to the release before it, no load

Prints one table (failed requests, resends, p50/p99 latency, wall time).
Leaves the sandbox up, serving the release it served before the rollback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vigil.load import LoadLoop, LoadResult  # noqa: E402

CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
KEY = REPO / ".vigil" / "sandbox" / "id_ed25519"
PAGE_TEXT = "Welcome. May this be a place of peace"


def invoke(*args: str, env: dict | None = None) -> float:
    """Run an invoke task (its output hidden unless it fails); returns its wall time."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"invoke {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return time.monotonic() - began


def as_root(address: str, command: str) -> None:
    """A command as root on the VPS: the admin user ops, through sudo."""
    subprocess.run(["ssh", "-i", str(KEY), "-o", f"UserKnownHostsFile={REPO / 'inventory' / 'sandbox.known_hosts'}",
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"ops@{address}", f"sudo -n {command}"],
                   check=True, timeout=120)


def live_unit() -> str:
    """The serving backend unit on vps1, from deploy.status."""
    done = subprocess.run([sys.executable, "-m", "invoke", "deploy.status", "--json", "--limit=vps1"], cwd=REPO,
                          capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    color = json.loads(done.stdout)["hosts"]["vps1"]["backend"]["live"].split(":")[0]
    return f"together-pray-backend@{color}.service"


def under_load(address: str, requests: int, action) -> tuple[LoadResult, float]:
    """`action` while the load loop runs; the loop goes on until `requests` answers. Returns (load, action's seconds)."""
    with LoadLoop(f"https://{address}/", expect=PAGE_TEXT, verify=str(CA), min_requests=requests,
                  max_requests=requests * 20, max_seconds=600) as load:
        time.sleep(1)
        seconds = action()
    return load.result, seconds


def new_release_inventory(scratch: Path) -> Path:
    """A copy of the sandbox inventory whose backend is a copy of the sample with one comment added: a new release."""
    source = scratch / "backend"
    shutil.copytree(REPO / "examples" / "together-pray" / "backend", source, ignore=shutil.ignore_patterns("node_modules", "dist"))
    main = source / "src" / "main.ts"
    main.write_text(main.read_text() + f"// benchmark release {time.time_ns()}\n")
    data = yaml.safe_load((REPO / "inventory" / "sandbox.yml").read_text())
    data["defaults"]["ssh_key"] = str(KEY)
    data["vars"]["app_services"] = {"backend": {"kind": "node", "source": str(source), "ref": ""},
                                    "frontend": {"kind": "next-standalone", "source": "examples/together-pray/frontend", "ref": ""}}
    inventory = scratch / "inventory"
    inventory.mkdir()
    (inventory / "sandbox.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(REPO / "inventory" / "sandbox.known_hosts", inventory / "sandbox.known_hosts")
    return inventory


def row(name: str, load: LoadResult | None, seconds: float) -> str:
    figures = [str(load.total), str(load.failed), str(load.resent), f"{load.percentile(0.5):.0f} ms",
               f"{load.percentile(0.99):.0f} ms"] if load else [""] * 5
    return "| " + " | ".join([name, *figures, f"{seconds:.1f} s" if seconds else ""]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="answers each load loop waits for (default 2000)")
    requests = parser.parse_args().requests
    if not (REPO / "inventory" / "sandbox.yml").exists():
        invoke("sandbox.up", "--hosts=1")
    for step in (("provision.server", "--limit=vps1"), ("secrets.push", "--limit=vps1"), ("deploy.all", "--limit=vps1")):
        invoke(*step)
    address = yaml.safe_load((REPO / "inventory" / "sandbox.yml").read_text())["hosts"]["vps1"]["address"]

    steady, _ = under_load(address, requests, lambda: 0.0)
    vigil, vigil_seconds = under_load(address, requests, lambda: invoke("deploy.backend", "--limit=vps1"))

    def naive() -> float:
        began = time.monotonic()
        as_root(address, f"systemctl restart {live_unit()}")
        return time.monotonic() - began

    restarted, naive_seconds = under_load(address, requests, naive)

    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as scratch:
        env = {"VIGIL_INVENTORY": str(new_release_inventory(Path(scratch)))}
        invoke("deploy.build", "--app=backend", env=env)  # built beforehand: a deploy's time is shipping, not building
        cold = invoke("deploy.backend", "--limit=vps1", env=env)
        warm = invoke("deploy.backend", "--limit=vps1", env=env)
        rollback = invoke("deploy.rollback", "--app=backend", "--limit=vps1", env=env)

    print(f"\n{requests}+ HTTPS page loads per loop through nginx on vps1, 2 clients\n")
    print("| what | requests | failed | resent | p50 | p99 | wall time |")
    print("|---|---|---|---|---|---|---|")
    for line in (row("steady (no deploy)", steady, 0), row("vigil deploy.backend", vigil, vigil_seconds),
                 row("naive systemctl restart", restarted, naive_seconds), row("cold deploy (upload)", None, cold),
                 row("warm deploy (on the host)", None, warm), row("rollback", None, rollback)):
        print(line)
    if restarted.failures:
        kinds = sorted(set(restarted.failures))
        print(f"\nnaive restart failures: {', '.join(f'{kind} x{restarted.failures.count(kind)}' for kind in kinds)}")


if __name__ == "__main__":
    main()
