"""Benchmark: onboarding two fresh sandbox VPSes in parallel against one alone.

Run as root from the repository: `.venv/bin/python bench/onboard_parallel.py [--rounds N]`.
Each round boots fresh VPSes (sandbox.down, sandbox.up), so every run installs
and configures everything; the apt archive cache is warm after the first round.
Prints each round's wall time and the ratio two/one (2.0 would mean no
parallelism at all). Leaves the sandbox down.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def onboard(hosts: int) -> float:
    invoke("sandbox.down")
    invoke("sandbox.up", f"--hosts={hosts}")
    began = time.monotonic()
    invoke("provision.server")
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    rounds = parser.parse_args().rounds
    onboard(1)  # warm the apt archive cache; not measured
    one = [onboard(1) for _ in range(rounds)]
    two = [onboard(2) for _ in range(rounds)]
    invoke("sandbox.down")
    print(f"one host : {', '.join(f'{t:.1f}s' for t in one)} (median {statistics.median(one):.1f}s)")
    print(f"two hosts: {', '.join(f'{t:.1f}s' for t in two)} (median {statistics.median(two):.1f}s)")
    print(f"two/one  : {statistics.median(two) / statistics.median(one):.2f} (2.00 = no parallelism)")


if __name__ == "__main__":
    main()
