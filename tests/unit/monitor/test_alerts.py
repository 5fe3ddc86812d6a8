"""vigil.monitor.alerts: Prometheus's ALERTS history as the post-mortem's events, and what Alertmanager
sends now as incident.status's lines."""

from __future__ import annotations

import json

import pytest

from vigil.incident.status_rules import FAIL, OK, WARN, alert_checks
from vigil.monitor.alerts import history_events, history_questions, parse_firing

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def alerts_series(name: str, host: str, times: list[float]) -> dict:
    return {"metric": {"__name__": "ALERTS", "alertname": name, "host": host, "alertstate": "firing"},
            "values": [[t, "1"] for t in times]}


def test_a_firing_span_becomes_down_then_recovered_and_one_still_firing_has_no_recovery():
    answers = [{"result": [alerts_series("BackendDown", "vps1", [T0, T0 + 15, T0 + 30]),
                           alerts_series("HostDown", "vps2", [T0 + 600, T0 + 615])]}]
    events = history_events(answers, 15, end=T0 + 615)
    assert [(e["at"], e["host"], e["check"], e["alert"], e["event"]) for e in events] == [
        ("2027-01-15T08:00:00Z", "vps1", "backend", "BackendDown", "down"),
        ("2027-01-15T08:00:45Z", "vps1", "backend", "BackendDown", "recovered"),
        ("2027-01-15T08:10:00Z", "vps2", "HostDown", "HostDown", "down"),
    ]


def test_two_outages_of_one_alert_are_two_spans_even_across_answers():
    answers = [{"result": [alerts_series("FrontendDown", "web1", [T0, T0 + 15])]},
               {"result": [alerts_series("FrontendDown", "web1", [T0 + 30, T0 + 300])]}]
    events = [(e["event"], e["at"][11:]) for e in history_events(answers, 15, end=T0 + 3600)]
    assert events == [("down", "08:00:00Z"), ("recovered", "08:00:45Z"), ("down", "08:05:00Z"),
                      ("recovered", "08:05:15Z")]


def test_history_is_asked_in_windows():
    questions = history_questions(T0, T0 + 3 * 86400, 15)
    assert len(questions) == 2 and questions[0][1]["query"] == 'ALERTS{alertstate="firing", severity!~"none|heartbeat"}'
    assert float(questions[-1][1]["end"]) == T0 + 3 * 86400


def test_what_fires_now_leaves_out_the_heartbeat_and_maintenance():
    answer = [
        {"labels": {"alertname": "Watchdog", "severity": "heartbeat", "host": "monitor"},
         "startsAt": "2027-01-15T07:00:00Z"},
        {"labels": {"alertname": "MaintenanceMode", "severity": "none", "host": "web1"},
         "startsAt": "2027-01-15T07:00:00Z"},
        {"labels": {"alertname": "HostDown", "severity": "page", "host": "web2"}, "startsAt": "2027-01-15T07:59:10.5Z",
         "annotations": {"summary": "web2 answers neither SSH nor its node exporter."}},
        {"labels": {"alertname": "MemoryPressure", "severity": "warning", "host": "db1"},
         "startsAt": "2027-01-15T06:00:00Z", "annotations": {"summary": "db1 has 8 % of its memory available."}},
    ]
    firing = parse_firing("@@vigil-answer\n" + json.dumps(answer) + "\n")
    assert [(a.name, a.host, a.since) for a in firing] == [("MemoryPressure", "db1", "2027-01-15T06:00:00Z"),
                                                          ("HostDown", "web2", "2027-01-15T07:59:10Z")]
    assert [(c.name, c.state) for c in alert_checks(firing)] == [("alert MemoryPressure", WARN),
                                                                 ("alert HostDown", FAIL)]
    assert [(c.name, c.state, c.detail) for c in alert_checks([])] == [("alerts", OK, "none firing")]


def test_an_answer_that_is_not_alertmanagers_is_an_error():
    with pytest.raises(ValueError, match="Alertmanager answered"):
        parse_firing('@@vigil-answer\n{"status": "error", "error": "curl could not reach"}\n')
