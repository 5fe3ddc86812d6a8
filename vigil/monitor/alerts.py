"""The monitor host's alerts, for the incident tasks: what fires now (Alertmanager, as the person paged
sees it: neither silenced nor held by an inhibition), and what fired over a window (Prometheus's ALERTS
series), as the down and recovered events a post-mortem's timeline and impact window are made of.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from vigil.core.commands import Command, script
from vigil.core.inventory import load_inventory
from vigil.core.roles import load_role
from vigil.core.topology import monitor_host
from vigil.monitor.prometheus import ALERTMANAGER, ASK, api_url, ask_monitor, parse_answers

# Alerts that page or warn; the heartbeat and the ones that only hold others (maintenance) are not news.
NEWS = 'ALERTS{alertstate="firing", severity!~"none|heartbeat"}'
# The incident runbooks name what they find failing "HOST CHECK" (vps1 backend): the alert behind each.
ALERT_CHECKS = {"BackendDown": "backend", "FrontendDown": "frontend", "DatabaseDown": "postgresql"}
MAX_STEPS = 10_000


@dataclass(frozen=True)
class FiringAlert:
    name: str
    host: str
    severity: str
    since: str  # UTC, ISO 8601
    summary: str


def firing_command() -> Command:
    """Ask Alertmanager, on the monitor host, for the alerts it sends now (one round trip with the rest)."""
    params = {"active": "true", "silenced": "false", "inhibited": "false"}
    return script(ASK, api_url(ALERTMANAGER, "api/v2/alerts", params), sudo=False)


def parse_firing(stdout: str) -> list[FiringAlert]:
    """Alertmanager's answer to firing_command, news only, oldest first; ValueError when it is not one."""
    answer = parse_answers(stdout, 1)[0]
    if not isinstance(answer, list):
        raise ValueError(f"Alertmanager answered {str(answer)[:200]}")
    alerts = [FiringAlert(alert["labels"].get("alertname", "?"), alert["labels"].get("host", "?"),
                          alert["labels"].get("severity", "?"), alert.get("startsAt", "")[:19] + "Z",
                          alert.get("annotations", {}).get("summary", ""))
              for alert in answer if alert.get("labels", {}).get("severity") not in ("none", "heartbeat")]
    return sorted(alerts, key=lambda alert: alert.since)


def utc(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def history_questions(start: float, end: float, step: float) -> list[tuple[str, dict[str, str]]]:
    """query_range of the news alerts from `start` to `end`, in windows Prometheus accepts."""
    questions, span = [], MAX_STEPS * step
    while start < end:
        stop = min(start + span, end)
        questions.append(("api/v1/query_range", {"query": NEWS, "start": f"{start:.3f}", "end": f"{stop:.3f}",
                                                 "step": f"{step:g}s"}))
        start = stop
    return questions


def history_events(answers: list[dict], step: float, end: float) -> list[dict]:
    """Each alert's firing spans as events: {"at", "host", "check", "alert", "event": "down"|"recovered"}.
    A span still firing at `end` has no recovered event."""
    moments: dict[tuple[str, str], set[float]] = {}
    for answer in answers:
        for series in answer["result"]:
            key = (series["metric"].get("alertname", "?"), series["metric"].get("host", "?"))
            moments.setdefault(key, set()).update(float(t) for t, _ in series["values"])
    events = []
    for (alert, host), times in moments.items():
        spans: list[list[float]] = []
        for moment in sorted(times):
            if spans and moment - spans[-1][1] <= 1.5 * step:
                spans[-1][1] = moment
            else:
                spans.append([moment, moment])
        base = {"host": host, "check": ALERT_CHECKS.get(alert, alert), "alert": alert, "detail": ""}
        for first, last in spans:
            events.append({**base, "at": utc(first), "event": "down"})
            if last + step < end:
                events.append({**base, "at": utc(last + step), "event": "recovered"})
    return sorted(events, key=lambda event: event["at"])


def alert_history(env: str, start: float, end: float) -> list[dict] | None:
    """The env's alerts that fired between `start` and `end` (seconds since the epoch) as events (see
    history_events); None where the env has no monitor host."""
    inventory = load_inventory(env)
    host = monitor_host(inventory)
    if host is None:
        return None
    step = inventory.vars_for(host, [load_role("monitoring")]).integer("monitoring_evaluation_interval", minimum=1)
    return history_events(ask_monitor(env, history_questions(start, end, step), "incident.report"), step, end)
