"""Benchmark: what visitors see during a backend deploy, vigil's blue/green switch against a naive restart.

Run as root from the repository: `.venv/bin/python bench/deploy_under_load.py [--rounds 5] [--requests 2000]`
(or `invoke bench`, which runs every benchmark). Uses the sandbox's vps1, booting, onboarding and
deploying it first when needed. Each load loop asks for the home page over HTTPS through nginx (the
frontend renders it from the backend's data, so a gap in either fails it) until at least --requests
answers, two clients at once. Each round measures, in an order rotated every round:

  steady    no deploy: latency baseline
  vigil     a warm redeploy: `deploy.backend` of release B, already on the host, over release A (the
            other color starts, passes the health gate and its watch, takes the traffic; A keeps running
            for the rollback window)
  rollback  right after it, `deploy.rollback` within the window: back to A, still running (a health
            check and the upstream switch)
  naive     the usual stop-and-start: `systemctl restart` of the serving unit

The warm redeploy and its rollback stay together, in that order, as one step of the rotation. Before
the rounds, once and without load: `deploy.backend` of B, not yet on the host (built beforehand; the
upload is measured), and `deploy.rollback` to A. Prints the medians with min and max. Leaves the sandbox
up, serving A.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    CA,
    INVENTORY,
    KEY,
    KNOWN_HOSTS,
    REPO,
    Spread,
    alternating,
    invoke,
    markdown_table,
    on_host,
    sandbox_hosts,
)
from tests.support.load import LoadLoop, LoadResult  # noqa: E402
from vigil.core.inventory import load_inventory  # noqa: E402
from vigil.core.yaml_loader import load_yaml  # noqa: E402
from vigil.deploy.settings import host_settings  # noqa: E402

PAGE_TEXT = "Welcome. May this be a place of peace"
KINDS = ["steady", "vigil", "rollback", "naive"]
# What the rounds rotate: the redeploy and the rollback it leaves a way back for, in that order, are one step.
STEPS = [["steady"], ["vigil", "rollback"], ["naive"]]
LABELS = {"steady": "steady (no deploy)", "vigil": "vigil deploy.backend, warm (B over A)",
          "rollback": "vigil deploy.rollback within the window (to A)", "naive": "naive systemctl restart"}
# Issue 24's targets, on medians: the warm redeploy's and the rollback's wall time, 0 failed requests in either.
TARGETS = {"vigil": 8.0, "rollback": 1.0}


def live_unit() -> str:
    """The serving backend unit on vps1, from deploy.status."""
    color = json.loads(invoke("deploy.status", "--json", "--limit=vps1").stdout)["hosts"]["vps1"]["backend"]["live"]
    return f"together-pray-backend@{color.split(':')[0]}.service"


def under_load(address: str, requests: int, action) -> tuple[LoadResult, float]:
    """`action` while the load loop runs; the loop goes on until `requests` answers.

    Returns (load, action's seconds).
    """
    with LoadLoop(f"https://{address}/", expect=PAGE_TEXT, verify=str(CA), min_requests=requests,
                  max_requests=requests * 20, max_seconds=600) as load:
        time.sleep(1)
        seconds = action()
    return load.result, seconds


def new_release_inventory(scratch: Path) -> Path:
    """A copy of the sandbox inventory whose backend is a copy of the sample with one comment added: a new release."""
    source = scratch / "backend"
    shutil.copytree(
        REPO / "examples" / "together-pray" / "backend", source, ignore=shutil.ignore_patterns("node_modules", "dist")
    )
    main = source / "src" / "main.ts"
    main.write_text(main.read_text() + f"// benchmark release {time.time_ns()}\n")
    data = load_yaml(INVENTORY)
    data["defaults"]["ssh_key"] = str(KEY)
    data["vars"]["app_services"] = {
        "backend": {"kind": "node", "source": str(source), "ref": ""},
        "frontend": {"kind": "next-standalone", "source": "examples/together-pray/frontend", "ref": ""},
    }
    inventory = scratch / "inventory"
    inventory.mkdir()
    (inventory / "sandbox.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(KNOWN_HOSTS, inventory / "sandbox.known_hosts")
    return inventory


@dataclass
class DeployResult:
    rounds: int
    requests: int
    loads: dict[str, list[LoadResult]]
    seconds: dict[str, list[float]]  # vigil, rollback and naive: the action's wall time in each round
    cold: float
    cold_rollback: float
    # The safety windows every deploy waits by design (app_min_healthy_seconds + app_watch_seconds).
    windows: int
    # The rollbacks under load: vps1's own seconds of each (its lock and state, the switch, `current`).
    rollback_on_host: list[float] = field(default_factory=list)
    # And of each step the deploy records, by its name: where a slow rollback's time on the host goes.
    rollback_steps: list[dict[str, float]] = field(default_factory=list)

    def table(self) -> str:
        rows = []
        for kind in KINDS:
            loads = self.loads[kind]
            rows.append([LABELS[kind], Spread.of([load.total for load in loads]).show("", 0),
                         Spread.of([load.failed for load in loads]).show("", 0),
                         Spread.of([load.percentile(0.5) for load in loads]).show("ms", 0),
                         Spread.of([load.percentile(0.99) for load in loads]).show("ms", 0),
                         Spread.of(self.seconds[kind]).show("s", 1) if kind in self.seconds else ""])
        rows += [["cold deploy of B (upload), no load", "", "", "", "", f"{self.cold:.1f} s"],
                 ["rollback to A, no load (after the first deploy of B)", "", "", "", "",
                  f"{self.cold_rollback:.1f} s"]]
        return markdown_table(["during", "requests", "failed", "p50 latency", "p99 latency", "wall time"], rows)

    def median(self, kind: str) -> float:
        return Spread.of(self.seconds[kind]).median

    def failed(self, kind: str) -> float:
        return Spread.of([load.failed for load in self.loads[kind]]).median

    def met(self, kind: str) -> bool:
        """`kind`'s median wall time within its target, and no round failed a request."""
        return self.median(kind) <= TARGETS[kind] and max(load.failed for load in self.loads[kind]) == 0

    def verdicts(self) -> list[str]:
        """Each target, met or missed, and why a miss is one."""
        redeploy = (f"warm redeploy under load: {self.median('vigil'):.1f} s, target {TARGETS['vigil']:g} s: "
                    + ("met" if self.met("vigil") else
                       f"missed; {self.windows} s of it are the safety windows the deploy waits by design (the new "
                       "color stays healthy with no restart before the switch, then is watched with the old one "
                       "still running, app_min_healthy_seconds and app_watch_seconds in the sandbox inventory), "
                       f"the rest, {self.median('vigil') - self.windows:.1f} s, is the deploy's own work"))
        host_part = Spread.of(self.rollback_on_host).median if self.rollback_on_host else None
        rollback = (f"rollback within the window under load: {self.median('rollback'):.2f} s, target "
                    f"{TARGETS['rollback']:g} s: " + ("met" if self.met("rollback") else "missed"))
        if host_part is not None and not self.met("rollback"):
            rollback += (f"; {host_part:.2f} s of it on the host (the lock and state, the health check and switch, "
                         f"`current` and the history), {self.median('rollback') - host_part:.2f} s in vigil's own "
                         "process (start-up, the preflight, the SSH handshake), on a machine whose 2 cores also run "
                         "the load loop and the VPS")
            if self.rollback_steps:
                rollback += f"; the host's steps, medians: {self.step_medians()}"
        return [redeploy, rollback]

    def step_medians(self) -> str:
        """Each step of the rollbacks under load with its median seconds over the rounds it ran in (a name
        holds a color and a release), in the order they ran."""
        names = list(dict.fromkeys(name for steps in self.rollback_steps for name in steps))
        medians = {name: Spread.of([steps[name] for steps in self.rollback_steps if name in steps]).median
                   for name in names}
        return ", ".join(f"{name.rstrip('.')} {seconds:.2f} s" for name, seconds in medians.items())

    def failures(self) -> str:
        """What the naive restarts' failed requests were."""
        failures = [kind for load in self.loads["naive"] for kind in load.failures]
        return ", ".join(f"{kind} x{failures.count(kind)}" for kind in sorted(set(failures)))


def measure(rounds: int, requests: int) -> DeployResult:
    """Deploy the sample on vps1 if needed, then alternate the loops, then the unloaded deploys."""
    if not INVENTORY.exists():
        invoke("sandbox.up", "--hosts=1")
    for step in (
        ("provision.server", "--limit=vps1"),
        ("secrets.push", "--limit=vps1"),
        ("deploy.all", "--limit=vps1"),
    ):
        invoke(*step)
    address = sandbox_hosts()["vps1"]["address"]

    scratch = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    env = {"VIGIL_INVENTORY": str(new_release_inventory(scratch))}

    def vigil() -> float:
        return invoke("deploy.backend", "--limit=vps1", env=env).seconds

    rollback_on_host: list[float] = []
    rollback_steps: list[dict[str, float]] = []

    def rollback() -> float:
        done = invoke("deploy.rollback", "--app=backend", "--limit=vps1", "--json", env=env)
        host = json.loads(done.stdout)["hosts"][0]
        rollback_on_host.append(host["seconds"])
        rollback_steps.append({step["name"]: step["seconds"] for step in host["operations"]})
        return done.seconds

    def naive() -> float:
        began = time.monotonic()
        on_host(address, f"systemctl restart {live_unit()}")
        return time.monotonic() - began

    try:
        invoke("deploy.build", "--app=backend", env=env)  # built beforehand: a deploy's time is shipping, not building
        cold = invoke("deploy.backend", "--limit=vps1", env=env).seconds
        cold_rollback = rollback()
        rollback_on_host.clear()  # only the rollbacks under load
        rollback_steps.clear()
        actions = {"steady": lambda: 0.0, "vigil": vigil, "rollback": rollback, "naive": naive}
        loads: dict[str, list[LoadResult]] = {kind: [] for kind in KINDS}
        seconds: dict[str, list[float]] = {kind: [] for kind in KINDS if kind != "steady"}
        for round_ in range(rounds):
            for kind in (kind for step in alternating(STEPS, round_) for kind in step):
                load, took = under_load(address, requests, actions[kind])
                loads[kind].append(load)
                if kind in seconds:
                    seconds[kind].append(took)
                print(f"round {round_ + 1}: {kind:8} {load.total} requests, {load.failed} failed, "
                      f"p50 {load.percentile(0.5):.0f} ms, p99 {load.percentile(0.99):.0f} ms, {took:.2f} s",
                      flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # As the deploy resolves them for vps1 (the inventory's vars over roles/app's defaults).
    inventory = load_inventory("sandbox")
    settings = host_settings(inventory, inventory.hosts["vps1"], ["backend"])[0]
    windows = settings.min_healthy + settings.watch
    return DeployResult(rounds, requests, loads, seconds, cold, cold_rollback, windows, rollback_on_host,
                        rollback_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="answers each load loop waits for (default 2000)")
    options = parser.parse_args()
    result = measure(options.rounds, options.requests)
    print(f"\n{options.requests}+ HTTPS page loads per loop through nginx on vps1, 2 clients, "
          f"{options.rounds} rounds: median (min to max)\n")
    print(result.table())
    print("\n".join(f"- {line}" for line in result.verdicts()))
    if result.failures():
        print(f"\nnaive restart failures: {result.failures()}")


if __name__ == "__main__":
    main()
