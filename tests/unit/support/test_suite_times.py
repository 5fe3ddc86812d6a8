"""The time per e2e module the suite reports at its end (tests/support/suite_times.py)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from tests.support import suite_times
from tests.support.suite_times import ModuleTimes

pytest_plugins = ["pytester"]


def report(nodeid: str, when: str, duration: float, failed: bool = False) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, when=when, duration=duration, failed=failed)


@pytest.mark.parametrize("phases, slowest, tests, minutes", [
    # A module fixture's time lands in its first test's setup: it counts for the module.
    ([("tests/e2e/test_a.py::test_one", "setup", 300.0), ("tests/e2e/test_a.py::test_one", "call", 60.0),
      ("tests/e2e/test_b.py::test_two", "call", 30.0), ("tests/e2e/test_a.py::test_three", "call", 0.0)],
     "tests/e2e/test_a.py", {"tests/e2e/test_a.py": 2, "tests/e2e/test_b.py": 1}, 6.0),
    ([("tests/e2e/test_b.py::test_two[x-1]", "call", 90.0), ("tests/e2e/test_b.py::test_two[x-2]", "call", 30.0),
      ("tests/e2e/test_a.py::test_one", "teardown", 60.0)],
     "tests/e2e/test_b.py", {"tests/e2e/test_b.py": 2}, 2.0),
])
def test_each_module_adds_up_its_tests_phases_and_the_slowest_comes_first(phases, slowest, tests, minutes):
    times = ModuleTimes()
    for nodeid, when, duration in phases:
        times.add(report(nodeid, when, duration))
    assert dict(times.tests) == tests
    header, first, *_, total = times.lines()
    assert first.startswith(slowest) and f"{minutes:.1f}" in first.split()
    assert total.startswith("all e2e modules")


def test_a_failed_phase_is_counted_against_its_module():
    times = ModuleTimes()
    times.add(report("tests/e2e/test_a.py::test_one", "call", 5.0, failed=True))
    assert times.lines()[1].endswith("(1 failed)")


def test_a_run_prints_the_table_and_writes_it(pytester, monkeypatch, tmp_path):
    monkeypatch.setattr(suite_times, "TIMES", ModuleTimes())
    monkeypatch.setattr(suite_times, "REPORT", tmp_path / "suite-times.json")
    pytester.makepyfile(**{
        "tests/e2e/conftest": "from tests.support.suite_times import pytest_runtest_logreport, "
                              "pytest_terminal_summary  # noqa: F401\n",
        "tests/e2e/test_slow": "import time\n\ndef test_slow():\n    time.sleep(0.2)\n",
        "tests/e2e/test_fast": "def test_fast():\n    pass\n\ndef test_also_fast():\n    pass\n",
        "tests/unit/test_other": "def test_unit():\n    pass\n",
    })
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "tests")
    result.assert_outcomes(passed=4)
    output = result.stdout.str()
    assert "time per e2e module (slowest first)" in output
    lines = output.split("time per e2e module (slowest first)", 1)[1].splitlines()
    modules = [line.split()[0] for line in lines if line.startswith("tests/")]
    assert modules == ["tests/e2e/test_slow.py", "tests/e2e/test_fast.py"]  # never the unit module
    written = json.loads((tmp_path / "suite-times.json").read_text())
    modules = written["modules"]
    assert modules["tests/e2e/test_fast.py"]["tests"] == 2 and modules["tests/e2e/test_slow.py"]["seconds"] >= 0.2
    assert re.fullmatch(r"[0-9a-f]{7,}", written["commit"]) and written["written"].endswith("Z")


def times_of(*modules: str) -> ModuleTimes:
    times = ModuleTimes()
    for module in modules:
        times.add(report(f"{module}::test_one", "call", 60.0))
    return times


@pytest.mark.parametrize("first_run, second_run, modules", [
    # The two processes of one scripts/test run: the second adds its modules to the first's.
    ("suite-1", "suite-1", ["tests/e2e/test_a.py", "tests/e2e/test_b.py"]),
    # A later run replaces the report.
    ("suite-1", "suite-2", ["tests/e2e/test_b.py"]),
    # pytest alone names no run: its report is its own.
    ("", "", ["tests/e2e/test_b.py"]),
])
def test_the_two_processes_of_one_run_share_one_report(monkeypatch, tmp_path, first_run, second_run, modules):
    path = tmp_path / "suite-times.json"
    monkeypatch.setenv(suite_times.RUN_VARIABLE, first_run)
    times_of("tests/e2e/test_a.py").write(path)
    monkeypatch.setenv(suite_times.RUN_VARIABLE, second_run)
    times_of("tests/e2e/test_b.py").write(path)
    assert sorted(json.loads(path.read_text())["modules"]) == modules


def test_the_whole_suites_wall_time_is_recorded_for_its_own_run_only(monkeypatch, tmp_path):
    path = tmp_path / "suite-times.json"
    monkeypatch.setenv(suite_times.RUN_VARIABLE, "suite-1")
    times_of("tests/e2e/test_a.py").write(path)
    suite_times.record_wall(2500.0, path)
    assert json.loads(path.read_text())["wall_seconds"] == 2500.0
    # A run whose e2e processes wrote nothing (all deselected) leaves the last report's time alone.
    monkeypatch.setenv(suite_times.RUN_VARIABLE, "suite-2")
    suite_times.record_wall(60.0, path)
    assert json.loads(path.read_text())["wall_seconds"] == 2500.0
