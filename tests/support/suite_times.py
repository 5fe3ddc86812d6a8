"""The time each e2e module takes, so the slowest can be seen against the suite's budget (README: under 45
minutes on 2 cores). A module's time is what its tests' setup, call and teardown took, its module fixtures
included; the session's shared VPSes are booted in the first test's setup, so the first module carries
them. At the end of a run the table is printed, slowest first, and written to .vigil/suite-times.json.

tests/e2e/conftest.py takes the two hooks:
    from tests.support.suite_times import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.sandbox_hosts import REPO

REPORT = REPO / ".vigil" / "suite-times.json"


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
        """The table as JSON, with the commit it ran at and when (the benchmark's results file carries it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        path.write_text(json.dumps({
            "commit": head.stdout.strip() or "unknown",
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "modules": {module: {"seconds": round(seconds, 1), "tests": self.tests[module],
                                 "failed": self.failed[module]} for module, seconds in self.seconds.items()},
        }, indent=2) + "\n")


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
