"""Availability per service from the probes' history in Prometheus, against a target, with the error
budget left and every outage (start, end, duration).

A service is what the blackbox exporter probes from outside on each host: the frontend (`/`), the
backend (`/api/health`) and SSH. Availability is the share of its probes that succeeded (Prometheus's
`sum_over_time` over `count_over_time` of probe_success, so a time the monitor itself was down counts
neither way). Outages are found in two round trips: the steps where a probe failed (query_range of
`probe_success == 0`, sparse), then the raw samples around each, so that an outage starts at its first
failed probe and ends at the first that succeeded again: within one scrape interval of the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vigil.core.errors import ConfigError
from vigil.monitor.prometheus import ask_monitor

PROBES = 'probe_success{job=~"site|ssh"}'
# Prometheus refuses a query_range of more than 11,000 steps per series.
MAX_STEPS = 10_000
# Raw samples further apart than this many scrape intervals are a gap in monitoring, not an outage.
GAP_INTERVALS = 2.5


@dataclass(frozen=True)
class Outage:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class ServiceUptime:
    """One service on one host over the period."""

    service: str
    host: str
    probes: int
    succeeded: int
    interval: float
    target: float
    outages: list[Outage] = field(default_factory=list)

    @property
    def availability(self) -> float:
        """Percent of probes that succeeded (100 with no probe at all: nothing was seen down)."""
        return 100.0 * self.succeeded / self.probes if self.probes else 100.0

    @property
    def observed_seconds(self) -> float:
        return self.probes * self.interval

    @property
    def down_seconds(self) -> float:
        return (self.probes - self.succeeded) * self.interval

    @property
    def budget_seconds(self) -> float:
        """Downtime the target allows over the time observed."""
        return (100.0 - self.target) / 100.0 * self.observed_seconds

    @property
    def budget_left_seconds(self) -> float:
        return self.budget_seconds - self.down_seconds

    @property
    def met(self) -> bool:
        return self.availability >= self.target


def service_of(metric: dict) -> tuple[str, str]:
    """(service, host) of a probe series: the site's service label, or "ssh"."""
    return (metric.get("service", "ssh") if metric.get("job") == "site" else "ssh"), metric.get("host", "?")


def first_questions(days: float, interval: float, now: float) -> list[tuple[str, dict[str, str]]]:
    """The first round trip: probes and successes per series over `days`, then the failing steps,
    in windows Prometheus accepts."""
    window = f"{int(days * 86400)}s"
    questions = [
        ("api/v1/query", {"query": f"count_over_time({PROBES}[{window}])", "time": f"{now:.3f}"}),
        ("api/v1/query", {"query": f"sum_over_time({PROBES}[{window}])", "time": f"{now:.3f}"}),
    ]
    start, span = now - days * 86400, MAX_STEPS * interval
    while start < now:
        end = min(start + span, now)
        questions.append(("api/v1/query_range", {"query": f"{PROBES} == 0", "start": f"{start:.3f}",
                                                 "end": f"{end:.3f}", "step": f"{interval:g}s"}))
        start = end
    return questions


def failing_spans(ranges: list[dict], interval: float) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(service, host) -> spans of consecutive failing steps (first, last step time) from query_range answers."""
    steps: dict[tuple[str, str], set[float]] = {}
    for answer in ranges:
        for series in answer["result"]:
            steps.setdefault(service_of(series["metric"]), set()).update(float(t) for t, _ in series["values"])
    spans = {}
    for key, times in steps.items():
        ordered, runs = sorted(times), []
        for moment in ordered:
            if runs and moment - runs[-1][1] <= interval * 1.5:
                runs[-1][1] = moment
            else:
                runs.append([moment, moment])
        spans[key] = [(first, last) for first, last in runs]
    return spans


def selector(service: str, host: str) -> str:
    if service == "ssh":
        return f'probe_success{{job="ssh", host="{host}"}}'
    return f'probe_success{{job="site", service="{service}", host="{host}"}}'


def raw_question(service: str, host: str, span: tuple[float, float], interval: float) -> tuple[str, dict]:
    """The raw samples around a failing span: from two intervals before its first step to three after its last."""
    first, last = span
    lookback = math.ceil(last - first + 5 * interval)
    return ("api/v1/query", {"query": f"{selector(service, host)}[{lookback}s]",
                             "time": f"{last + 3 * interval:.3f}"})


def outages_in(samples: list[tuple[float, float]], interval: float) -> list[Outage]:
    """Each run of failed probes: from the first failure to the first success after it. A run still
    failing at the last sample ends there; a gap in the samples ends a run where the gap begins."""
    outages, start, previous = [], None, None
    for moment, value in sorted(samples):
        if start is not None and previous is not None and moment - previous > GAP_INTERVALS * interval:
            outages.append(Outage(start, previous))
            start = None
        if value == 0 and start is None:
            start = moment
        elif value != 0 and start is not None:
            outages.append(Outage(start, moment))
            start = None
        previous = moment
    if start is not None:
        outages.append(Outage(start, previous))
    return outages


def by_service(answer: dict) -> dict[tuple[str, str], float]:
    return {service_of(series["metric"]): float(series["value"][1]) for series in answer["result"]}


def uptime(env: str, days: float, target: float, interval: float, now: float) -> list[ServiceUptime]:
    """Every probed service's availability over the last `days` on `env`'s monitor host.

    interval: the probes' scrape interval in seconds (monitoring_scrape_interval).
    Example: uptime("production", 30, 99.9, 15, time.time())[0].availability
    """
    if not 0 < days <= 3650:
        raise ConfigError(f"--days: expected a number of days above 0, got {days:g}")
    if not 0 < target < 100:
        raise ConfigError(f"--target: expected a percentage between 0 and 100, got {target:g}")
    answers = ask_monitor(env, first_questions(days, interval, now), "monitor.uptime")
    counts, sums = by_service(answers[0]), by_service(answers[1])
    spans = failing_spans(answers[2:], interval)
    raw = [(key, raw_question(*key, span, interval)) for key, key_spans in sorted(spans.items())
           for span in key_spans]
    outages: dict[tuple[str, str], list[Outage]] = {}
    if raw:
        samples = ask_monitor(env, [question for _, question in raw], "monitor.uptime")
        for (key, _), answer in zip(raw, samples):
            values = [(float(t), float(v)) for series in answer["result"] for t, v in series["values"]]
            found = outages.setdefault(key, [])
            found += [outage for outage in outages_in(values, interval) if outage not in found]
    order = {"frontend": 0, "backend": 1, "ssh": 2}
    return [ServiceUptime(service, host, int(counts[(service, host)]), int(sums.get((service, host), 0)),
                          interval, target, sorted(outages.get((service, host), []), key=lambda o: o.start))
            for service, host in sorted(counts, key=lambda key: (order.get(key[0], 9), key[0], key[1]))]
