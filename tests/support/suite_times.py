"""The time each e2e module takes, so the slowest can be seen against the suite's budget (README: under 45
minutes on 2 cores). A module's time is what its tests' setup, call and teardown took, its module fixtures
included; the session's shared VPSes are booted in the first test's setup, so the first module carries
them. At the end of a run the table is printed, slowest first, and written to .vigil/suite-times.json.

tests/e2e/conftest.py takes the two hooks:
    from tests.support.suite_times import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.sandbox_hosts import REPO

REPORT = REPO / ".vigil" / "suite-times.json"
# Set by scripts/test: one name for the run, shared by its two pytest processes.
RUN_VARIABLE = "VIGIL_SUITE_RUN"


@dataclass
class ModuleTimes:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    tests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, report) -> None:
        """One phase (setup, call or teardown) of one test, from pytest's report of it."""
        module = report.nodeid.split("::", 1)[0]
        self.seconds[module] += report.duration
        if report.when == "call":
            self.tests[module] += 1
        if report.failed:
            self.failed[module] += 1

    def lines(self) -> list[str]:
        """The table, slowest module first, with each one's share of the whole."""
        total = sum(self.seconds.values())
        rows = [f"{'module':<52} {'tests':>5} {'minutes':>8} {'share':>6}"]
        for module, seconds in sorted(self.seconds.items(), key=lambda item: -item[1]):
            failed = f"  ({self.failed[module]} failed)" if self.failed[module] else ""
            rows.append(f"{module:<52} {self.tests[module]:>5} {seconds / 60:>8.1f} {seconds / total:>6.0%}{failed}")
        rows.append(f"{'all e2e modules':<52} {sum(self.tests.values()):>5} {total / 60:>8.1f}")
        return rows

    def write(self, path: Path) -> None:
        """The table as JSON, with the commit it ran at and when (the benchmark's results file carries it).

        scripts/test runs the e2e modules in two pytest processes at once and names the run in
        $VIGIL_SUITE_RUN: the second process to finish adds its modules to the first's report of that run.
        """
        modules = {module: {"seconds": round(seconds, 1), "tests": self.tests[module], "failed": self.failed[module]}
                   for module, seconds in self.seconds.items()}
        run = os.environ.get(RUN_VARIABLE, "")
        with updating(path) as report:
            if run and report.get("run") == run:
                modules = {**report.get("modules", {}), **modules}
            head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
            report.clear()
            report.update({"commit": head.stdout.strip() or "unknown", "run": run,
                           "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "modules": modules})


@contextlib.contextmanager
def updating(path: Path):
    """The report at `path` as a dict, to change in place: read, then written back, under a lock, so the two
    processes of one run never lose each other's rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            report = {}
        yield report
        path.write_text(json.dumps(report, indent=2) + "\n")


def record_wall(seconds: float, path: Path | None = None) -> None:
    """The whole suite's wall-clock time (scripts/test: unit tests and both e2e processes), added to this
    run's report: what the budget is about, while the modules' times add up across the two processes."""
    with updating(path or REPORT) as report:
        if report.get("run") == os.environ.get(RUN_VARIABLE, ""):
            report["wall_seconds"] = round(seconds, 1)


TIMES = ModuleTimes()


def pytest_runtest_logreport(report) -> None:
    # A conftest's runtest hooks see only the items below it; the prefix keeps that true if this moves.
    if report.nodeid.startswith("tests/e2e/"):
        TIMES.add(report)


def pytest_terminal_summary(terminalreporter) -> None:
    if not TIMES.seconds:
        return
    terminalreporter.write_sep("-", "time per e2e module (slowest first)")
    for line in TIMES.lines():
        terminalreporter.write_line(line)
    TIMES.write(REPORT)
    terminalreporter.write_line(f"written: {REPORT}")


if __name__ == "__main__":
    # scripts/test, at the end: python -m tests.support.suite_times --wall SECONDS
    if len(sys.argv) != 3 or sys.argv[1] != "--wall":
        sys.exit("usage: python -m tests.support.suite_times --wall SECONDS")
    record_wall(float(sys.argv[2]))
