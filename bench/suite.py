"""The test suite's time, for the results file: the time per e2e module the last e2e run on this clone wrote
(tests/support/suite_times.py, .vigil/suite-times.json), against the suite's budget (README: the whole suite
within 45 minutes on 2 cores). The benchmark runs no test itself: it reports the last run, naming its commit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, markdown_table
from tests.support.suite_times import REPORT

BUDGET_MINUTES = 45


@dataclass
class SuiteTimes:
    commit: str
    written: str
    modules: dict[str, dict]
    # The whole suite's wall-clock time, which scripts/test records: its two pytest processes run e2e
    # modules at once, so the modules' times add up to more. None from a run of pytest alone.
    wall_seconds: float | None = None

    @classmethod
    def read(cls, path: Path = REPORT) -> SuiteTimes | None:
        """The last e2e run's report, or None when this clone has run none."""
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        # A report from before it named its commit holds the modules alone.
        modules = data["modules"] if "modules" in data else data
        return cls(data.get("commit", "not recorded"), data.get("written", "not recorded"), modules,
                   data.get("wall_seconds"))

    @property
    def module_minutes(self) -> float:
        return sum(module["seconds"] for module in self.modules.values()) / 60

    @property
    def minutes(self) -> float:
        """What the budget is held to: the whole suite's wall-clock time, else its e2e modules' sum."""
        return self.wall_seconds / 60 if self.wall_seconds is not None else self.module_minutes

    def table(self) -> str:
        rows = [[module.removeprefix("tests/e2e/"), str(found["tests"]), f"{found['seconds'] / 60:.1f}"]
                for module, found in sorted(self.modules.items(), key=lambda item: -item[1]["seconds"])]
        rows.append(["all e2e modules", str(sum(found["tests"] for found in self.modules.values())),
                     f"{self.module_minutes:.1f}"])
        return markdown_table(["e2e module", "tests", "minutes"], rows)


def section(times: SuiteTimes | None) -> list[str]:
    """The results file's section on the suite's time."""
    if times is None:
        return [f"No e2e run on this clone yet: the suite (`scripts/test`) writes {REPORT.relative_to(REPO)}, and",
                "the next benchmark run reports it here."]
    verdict = "within" if times.minutes <= BUDGET_MINUTES else "OVER"
    if times.wall_seconds is None:
        measured = [f"{REPORT.relative_to(REPO)}: {times.minutes:.1f} minutes of e2e modules, {verdict} the whole "
                    f"suite's budget of {BUDGET_MINUTES} minutes (the unit tests add a minute or two)."]
    else:
        measured = [f"{REPORT.relative_to(REPO)}: the whole suite (scripts/test) took {times.minutes:.1f} minutes, "
                    f"{verdict} its budget of {BUDGET_MINUTES} minutes. Its e2e modules add up to "
                    f"{times.module_minutes:.1f} minutes:",
                    "the unit tests, then the modules marked `apart` (VPSes of their own), run in a second pytest "
                    "process beside the others."]
    return [f"The last e2e run on this clone, at commit {times.commit} (written {times.written}), from",
            *measured, "Slowest first; the first module of the session carries the boot and onboarding of its shared",
            "VPSes.", "", times.table()]


def summary_row(times: SuiteTimes | None) -> list[str]:
    if times is None:
        return ["the test suite's e2e modules", "no run on this clone", f"budget {BUDGET_MINUTES} min", ""]
    if times.wall_seconds is not None:
        return ["the whole test suite (scripts/test)", f"{times.minutes:.1f} min",
                f"at commit {times.commit}; e2e modules {times.module_minutes:.1f} min in two processes",
                f"budget {BUDGET_MINUTES} min: " + ("met" if times.minutes <= BUDGET_MINUTES else "missed")]
    return ["the test suite's e2e modules", f"{times.minutes:.1f} min", f"at commit {times.commit}",
            f"budget {BUDGET_MINUTES} min for the whole suite: "
            + ("met" if times.minutes <= BUDGET_MINUTES else "missed")]
