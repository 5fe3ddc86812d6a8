"""Benchmark: the CLI's own start-up, before it asks any host anything.

Run from the repository: `.venv/bin/python bench/startup.py [--rounds 5]` (or `invoke bench`, which runs
every benchmark; this one needs no VPS). Each round times, in an order rotated every round, a fresh
process from start to exit, once this machine is quiet:

  import invoke     `python -c "import invoke"`: the least any Invoke task can cost
  --list            `invoke --list`: every task module imported, to list them all
  --help TASK       `invoke --help provision.server`: only that task's module (vigil/cli/namespace.py)

Each runs once unmeasured first: a clone's first run writes the modules' bytecode, as an install does.

Then once, `python -X importtime` of `invoke --help provision.server`: where its import time goes, the
heaviest top-level packages first.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Spread, alternating, markdown_table, run, wait_until_quiet  # noqa: E402

HELP_TASK = "provision.server"
COMMANDS = {
    "import invoke": [sys.executable, "-c", "import invoke"],
    "--list": [sys.executable, "-m", "invoke", "--list"],
    "--help TASK": [sys.executable, "-m", "invoke", "--help", HELP_TASK],
}
# Issue 24: `invoke --help TASK` within 0.35 s of wall time.
HELP_TARGET = 0.35
DESCRIPTION = ("Each a fresh process, timed from start to exit once this machine is quiet, in an order rotated "
               "every round, after one unmeasured run of each (a clone's first run writes the bytecode an install "
               "would have); then where `invoke --help provision.server` spends its import time (`python -X "
               "importtime`), the heaviest modules it imports itself first.")
# -X importtime's lines: "import time: self [us] | cumulative | imported package".
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def heaviest_imports(stderr: str, top: int = 8) -> list[tuple[str, float]]:
    """`python -X importtime`'s report -> the `top` heaviest modules imported at the top level (not by
    another module), with their cumulative milliseconds, heaviest first."""
    found = []
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match and len(match.group(3)) == 1:  # one space of indent: imported by the program itself
            found.append((match.group(4), int(match.group(2)) / 1000))
    return sorted(found, key=lambda item: item[1], reverse=True)[:top]


@dataclass
class StartupResult:
    seconds: dict[str, list[float]]
    imports: list[tuple[str, float]]

    def median(self, name: str) -> float:
        return Spread.of(self.seconds[name]).median

    @property
    def met(self) -> bool:
        return self.median("--help TASK") <= HELP_TARGET

    def table(self) -> str:
        rows = [[f"`{shlex.join(['python', *COMMANDS[name][1:]])}`",
                 Spread.of(self.seconds[name]).show("s", 3)] for name in COMMANDS]
        return markdown_table(["fresh process", "wall time: median (min to max)"], rows)

    def import_table(self) -> str:
        return markdown_table(["imported by `invoke --help provision.server`", "cumulative"],
                              [[name, f"{ms:.0f} ms"] for name, ms in self.imports])

    def summary_row(self) -> list[str]:
        return [f"`invoke --help {HELP_TASK}`", f"{self.median('--help TASK'):.2f} s",
                f"`python -c \"import invoke\"` {self.median('import invoke'):.2f} s",
                f"target at most {HELP_TARGET} s: {'met' if self.met else 'missed'}"]


def measure(rounds: int) -> StartupResult:
    # Once each, unmeasured: Python writes the modules' bytecode on a clone's first run, as installing a
    # program does; every timed run then starts as an installed one starts.
    for argv in COMMANDS.values():
        run(argv)
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for round_ in range(rounds):
        for name in alternating(list(COMMANDS), round_):
            wait_until_quiet()
            seconds[name].append(run(COMMANDS[name]).seconds)
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {values[-1]:.3f} s" for name, values in seconds.items()),
              flush=True)
    traced = run([sys.executable, "-X", "importtime", "-m", "invoke", "--help", HELP_TASK])
    return StartupResult(seconds, heaviest_imports(traced.stderr))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    result = measure(parser.parse_args().rounds)
    print(result.table())
    print()
    print(result.import_table())
    print(f"\n{result.summary_row()[0]}: {result.summary_row()[3]}")


if __name__ == "__main__":
    main()
