"""vigil.monitor.uptime: the questions asked of Prometheus, and the availability, budget and outages made
of its answers (no host: the answers are written here as Prometheus gives them)."""

from __future__ import annotations

import pytest

from vigil.core.errors import ConfigError
from vigil.monitor import uptime as module
from vigil.monitor.prometheus import MonitorError, parse_answers
from vigil.monitor.uptime import Outage, ServiceUptime, failing_spans, first_questions, outages_in, raw_question

NOW = 1_800_000_000.0


def series(metric: dict, values: list[tuple[float, str]]) -> dict:
    return {"metric": metric, "values": [[t, v] for t, v in values]}


def test_the_failing_steps_are_asked_in_windows_prometheus_accepts():
    questions = first_questions(30, 15, NOW)
    counts, sums, *ranges = questions
    assert counts == ("api/v1/query", {"query": 'count_over_time(probe_success{job=~"site|ssh"}[2592000s])',
                                       "time": f"{NOW:.3f}"})
    assert sums[1]["query"].startswith("sum_over_time(")
    # 30 days of 15 s steps is 172,800 steps: 18 windows of at most 10,000 each, back to back.
    assert len(ranges) == 18
    starts = [float(q[1]["start"]) for q in ranges]
    ends = [float(q[1]["end"]) for q in ranges]
    assert starts[0] == NOW - 30 * 86400 and ends[-1] == NOW and starts[1:] == ends[:-1]
    assert all((end - start) / 15 <= 10_000 for start, end in zip(starts, ends))
    assert {q[1]["query"] for q in ranges} == {'probe_success{job=~"site|ssh"} == 0'}


# (raw samples (time, value), interval, outages as (start, end))
OUTAGES = [
    ("none", [(0, 1), (5, 1), (10, 1)], 5, []),
    ("one, from the first failure to the first success", [(0, 1), (5, 0), (10, 0), (15, 1)], 5, [(5, 15)]),
    ("two", [(0, 0), (5, 1), (10, 0), (15, 0), (20, 1)], 5, [(0, 5), (10, 20)]),
    ("still down at the last sample", [(0, 1), (5, 0), (10, 0)], 5, [(5, 10)]),
    # The monitor host itself was down from 10 to 60: not an outage of the service, and it ends one.
    ("a gap in the samples ends a run where the gap begins", [(0, 0), (5, 0), (60, 1)], 5, [(0, 5)]),
    ("a gap between successes is no outage", [(0, 1), (5, 1), (60, 1)], 5, []),
]


@pytest.mark.parametrize("name, samples, interval, expected", OUTAGES, ids=[case[0] for case in OUTAGES])
def test_outages_from_raw_samples(name, samples, interval, expected):
    assert [(o.start, o.end) for o in outages_in(samples, interval)] == expected


def test_failing_steps_group_into_spans_per_service_and_host():
    answers = [{"result": [
        series({"job": "site", "service": "frontend", "host": "web2"}, [(100, "0"), (105, "0"), (110, "0")]),
        series({"job": "ssh", "host": "web2"}, [(105, "0"), (200, "0")]),
    ]}, {"result": [series({"job": "site", "service": "frontend", "host": "web2"}, [(115, "0")])]}]
    assert failing_spans(answers, 5) == {("frontend", "web2"): [(100, 115)], ("ssh", "web2"): [(105, 105), (200, 200)]}


def test_the_raw_samples_are_asked_around_a_span():
    path, params = raw_question("backend", "web1", (100.0, 160.0), 5)
    assert path == "api/v1/query"
    assert params == {"query": 'probe_success{job="site", service="backend", host="web1"}[85s]', "time": "175.000"}
    assert raw_question("ssh", "db1", (0.0, 0.0), 15)[1]["query"] == 'probe_success{job="ssh", host="db1"}[75s]'


def test_availability_budget_and_target():
    # A day of 15 s probes (5,760), 12 failed: 3 minutes down, against 99.9 % (86.4 s allowed).
    day = ServiceUptime("frontend", "web1", 5760, 5748, 15, 99.9, [Outage(1000, 1180)])
    assert round(day.availability, 3) == 99.792 and day.down_seconds == 180 and not day.met
    assert round(day.budget_seconds, 1) == 86.4 and round(day.budget_left_seconds, 1) == -93.6
    assert ServiceUptime("ssh", "web1", 5760, 5760, 15, 99.9).met
    assert ServiceUptime("ssh", "web1", 0, 0, 15, 99.9).availability == 100.0


def test_uptime_asks_twice_and_reports_each_service(monkeypatch):
    asked = []
    counts = {"result": [{"metric": {"job": "site", "service": "frontend", "host": "web1"}, "value": [NOW, "100"]},
                         {"metric": {"job": "ssh", "host": "web1"}, "value": [NOW, "100"]}]}
    sums = {"result": [{"metric": {"job": "site", "service": "frontend", "host": "web1"}, "value": [NOW, "97"]},
                       {"metric": {"job": "ssh", "host": "web1"}, "value": [NOW, "100"]}]}
    failing = {"result": [series({"job": "site", "service": "frontend", "host": "web1"}, [(NOW - 50, "0"),
                                                                                          (NOW - 45, "0")])]}
    raw = {"result": [series({"job": "site"}, [(NOW - 62, "1"), (NOW - 57, "1"), (NOW - 52, "0"), (NOW - 47, "0"),
                                               (NOW - 42, "0"), (NOW - 37, "1")])]}

    def ask(env, questions, task):
        asked.append(questions)
        return [counts, sums, failing] if len(asked) == 1 else [raw]

    monkeypatch.setattr(module, "ask_monitor", ask)
    found = module.uptime("production", 1, 99.9, 5, NOW)
    assert [(s.service, s.host, s.probes, s.succeeded) for s in found] == [("frontend", "web1", 100, 97),
                                                                          ("ssh", "web1", 100, 100)]
    assert found[0].outages == [Outage(NOW - 52, NOW - 37)] and found[1].outages == []
    assert len(asked) == 2 and len(asked[1]) == 1


@pytest.mark.parametrize("days, target, message", [(0, 99.9, "--days"), (1, 100, "--target"), (1, 0, "--target")])
def test_bad_flags_are_refused_before_anything_is_asked(monkeypatch, days, target, message):
    monkeypatch.setattr(module, "ask_monitor", lambda *args: pytest.fail("asked the monitor host"))
    with pytest.raises(ConfigError, match=message):
        module.uptime("production", days, target, 15, NOW)


def test_answers_are_split_and_a_broken_one_is_an_error_answer():
    stdout = '@@vigil-answer\n{"status": "success", "data": 1}\n@@vigil-answer\n<html>oops\n'
    assert parse_answers(stdout, 2) == [{"status": "success", "data": 1},
                                        {"status": "error", "error": "not JSON: '<html>oops'"}]
    with pytest.raises(MonitorError, match="answered 1 of 2"):
        parse_answers('@@vigil-answer\n{}\n', 2)
