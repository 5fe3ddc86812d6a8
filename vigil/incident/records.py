"""Incident records: a timeline of what was seen and done (UTC time, who, step, result), and the post-mortem.

Each incident is a directory under .vigil/incidents/<id>/ (mode 0700): record.json
(env, title, who opened it, each runbook run and its outcome), timeline.jsonl
(one line per check, action, alert or note, redacted as it is written) and
whatever the steps collected (logs). `incident.report ID` renders the
post-mortem from the record, its timeline and the monitor host's alert history.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from vigil.core.audit_log import operator
from vigil.core.errors import ConfigError
from vigil.core.local_files import write_private
from vigil.core.paths import LocalState
from vigil.core.redaction import REDACTOR

INCIDENT_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[a-z0-9-]{1,40}$")
ISO = "%Y-%m-%dT%H:%M:%SZ"


def utc(when: float) -> str:
    return time.strftime(ISO, time.gmtime(when))


def parse_utc(text: str) -> float | None:
    try:
        return datetime.strptime(text, ISO).replace(tzinfo=timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass
class Incident:
    directory: Path
    data: dict

    @property
    def id(self) -> str:
        return self.data["id"]

    def add(self, step: str, result: str, detail: str = "", kind: str = "step", when: float | None = None,
            who: str | None = None, failing: list[str] | None = None) -> dict:
        """One timeline entry, appended and flushed at once: a run cut short keeps what it did.

        failing: what a check found failing ("vps1 backend"): the report's impact window looks at those.
        """
        entry = REDACTOR.redact_data({"at": utc(when if when is not None else time.time()), "who": who or operator(),
                                      "kind": kind, "step": step, "result": result, "detail": detail,
                                      **({"failing": failing} if failing else {})})
        path = self.directory / "timeline.jsonl"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as timeline:
            timeline.write(json.dumps(entry, sort_keys=True) + "\n")
            timeline.flush()
            os.fsync(timeline.fileno())
        return entry

    def timeline(self) -> list[dict]:
        path = self.directory / "timeline.jsonl"
        if not path.exists():
            return []
        entries = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                entries.append(json.loads(line))
            except ValueError:
                raise ConfigError(f"{path}:{number}: not a JSON timeline entry") from None
        return entries

    def save(self) -> None:
        write_private(self.directory / "record.json", json.dumps(self.data, indent=2, sort_keys=True) + "\n")

    def begin_run(self, runbook: str, check_only: bool, when: float | None = None) -> dict:
        run = {"runbook": runbook, "check": check_only, "started": utc(when or time.time()), "who": operator()}
        self.data.setdefault("runs", []).append(run)
        self.save()
        return run

    def end_run(self, run: dict, outcome: str, when: float | None = None) -> None:
        run.update(finished=utc(when or time.time()), outcome=outcome)
        if not run["check"]:
            self.data["status"] = "resolved" if outcome == "resolved" else "open"
            if outcome == "resolved":
                self.data["resolved_at"] = run["finished"]
        self.save()


@contextlib.contextmanager
def runbook_lock(env: str, exclusive: bool, root: Path | None = None):
    """One changing runbook run per env from this machine at a time (checks may run beside it)."""
    root = root or LocalState.default().incidents
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(os.open(root / f".{env}.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
        try:
            fcntl.flock(lock, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another incident.run is changing {env} from this machine (lock {root / f'.{env}.lock'}); "
                "let it finish, or run with --check"
            ) from None
        yield


def open_incident(env: str, title: str, root: Path | None = None, when: float | None = None) -> Incident:
    """A new incident record; its id is its UTC opening time and title ("20261126-054000-backend-down")."""
    root = root or LocalState.default().incidents
    when = when if when is not None else time.time()
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "incident"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in range(100):
        incident_id = (
            time.strftime("%Y%m%d-%H%M%S", time.gmtime(when)) + f"-{slug}" + (f"-{suffix + 1}" if suffix else "")
        )
        directory = root / incident_id
        try:
            directory.mkdir(mode=0o700)
            break
        except FileExistsError:
            continue
    else:
        raise ConfigError(f"{root}: could not find a free incident id for {title!r}")
    incident = Incident(directory, {"id": directory.name, "env": env, "title": title, "opened_at": utc(when),
                                    "opened_by": operator(), "status": "open", "runs": []})
    incident.save()
    return incident


def load_incident(incident_id: str, root: Path | None = None) -> Incident:
    if not INCIDENT_ID.match(incident_id or ""):
        raise ConfigError(
            f"incident {incident_id!r} is not an incident id (invoke incident.list --incidents shows them)"
        )
    root = root or LocalState.default().incidents
    path = root / incident_id / "record.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no incident {incident_id} in {root}") from None
    except ValueError:
        raise ConfigError(f"{path}: not a JSON incident record") from None
    return Incident(path.parent, data)


def list_incidents(root: Path | None = None) -> list[dict]:
    root = root or LocalState.default().incidents
    found = []
    for path in sorted(root.glob("*/record.json")) if root.exists() else []:
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:
            found.append({"id": path.parent.name, "status": "unreadable"})
    return found


# --- the post-mortem ------------------------------------------------------------------------------


def impact_window(health: list[dict], timeline: list[dict]) -> tuple[str, str, str]:
    """(start, end, what it is based on). From the monitor host's alerts when there are any: the outage
    (from a "down" to the "recovered" that left nothing down) under way when the runbook first found
    something failing, else the last one before. Without alerts, from the timeline's own checks (the
    first failed check to the check that resolved the incident). End "" means still ongoing."""
    failed = [entry["at"] for entry in timeline if entry.get("kind") == "check" and entry.get("result") == "failed"]
    resolved = [entry["at"] for entry in timeline if entry.get("kind") == "run" and entry.get("result") == "resolved"]
    # Only the alerts of what the runbooks found failing (a backup alert an hour earlier is another story);
    # all of them when the runbooks named nothing.
    named = {tuple(item.split(" ", 1)) for entry in timeline for item in entry.get("failing", []) if " " in item}
    relevant = [event for event in health if (event.get("host"), event.get("check")) in named] if named else health
    outages: list[list[str]] = []
    down_now: set[tuple[str, str]] = set()
    for event in sorted(relevant, key=lambda event: event.get("at", "")):
        key = (event.get("host", ""), event.get("check", ""))
        if event.get("event") == "down":
            if not down_now:
                outages.append([event.get("at", ""), ""])
            down_now.add(key)
        elif event.get("event") == "recovered" and key in down_now:
            down_now.discard(key)
            if not down_now:
                outages[-1][1] = event.get("at", "")
    if outages:
        first_seen = failed[0] if failed else max((entry.get("at", "") for entry in timeline), default="9999")
        before = [outage for outage in outages if outage[0] <= first_seen]
        start, end = (before or outages)[-1]
        return start, end, "the monitor host's alerts"
    if failed:
        return failed[0], next((at for at in resolved if at >= failed[0]), ""), "vigil's checks during the runbook runs"
    return "", "", "no failure was observed"


def _duration(start: str, end: str) -> str:
    begin, finish = parse_utc(start), parse_utc(end)
    if begin is None or finish is None:
        return "ongoing"
    minutes, seconds = divmod(int(finish - begin), 60)
    return f"{minutes} min {seconds} s"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _within_a_second(entry: dict) -> int:
    """Times are kept to the second: within one, an alert firing comes first (it is what the steps answer)
    and an alert resolving last (it follows what fixed it)."""
    if entry.get("kind") != "alert":
        return 1
    return 0 if entry.get("result") == "down" else 2


def render_report(incident: Incident, timeline: list[dict], health: list[dict],
                  error_groups: list[str] | None = None) -> str:
    """The post-mortem in Markdown: summary, impact window, the error groups the error tracker first saw in
    it (lines; None: the env has none), timeline, actions taken, follow-ups to fill."""
    data = incident.data
    actions_on_hosts = [event for event in health if event.get("kind") == "action"]
    health = [event for event in health if event.get("kind") != "action"]
    start, end, basis = impact_window(health, timeline)
    runs = data.get("runs", [])
    actions = [
        entry
        for entry in timeline
        if entry.get("kind") == "action" and entry.get("result") not in ("skipped", "would run")
    ]
    entries = sorted(
        timeline
        + [
            {
                "at": event.get("at", ""),
                "who": f"alert on {event.get('host', '?')}",
                "kind": "alert",
                "step": f"{event.get('alert', event.get('check', '?'))} "
                        f"{'firing' if event.get('event') == 'down' else 'resolved'}",
                "result": event.get("event", ""),
                "detail": event.get("detail", ""),
            }
            for event in health
        ]
        + [
            {
                "at": event.get("at", ""),
                "who": f"root on {event.get('host', '?')}",
                "kind": "host action",
                "step": f"{event.get('helper', '?')} {event.get('action', '?')} {event.get('args', '')}".strip(),
                "result": "asked",
                "detail": f"by {event.get('by', '?')}",
            }
            for event in actions_on_hosts
        ],
        key=lambda entry: (entry.get("at", ""), _within_a_second(entry)),
    )
    lines = [
        f"# Post-mortem: {data.get('title', incident.id)} ({data.get('env', '?')})",
        "",
        f"Incident `{incident.id}`, opened {data.get('opened_at', '?')} by {data.get('opened_by', '?')}; "
        f"status: **{data.get('status', '?')}**"
        + (f", resolved {data['resolved_at']}." if data.get("resolved_at") else "."),
        "",
        "## Summary",
        "",
        "_What happened, in two or three sentences, for someone who was not there._",
        "",
        *[
            f"- Runbook `{run['runbook']}`{' (check only)' if run.get('check') else ''} run by {run.get('who', '?')} "
            f"at {run.get('started', '?')}: {run.get('outcome', 'cut short')}."
            for run in runs
        ],
        "",
        "## Impact",
        "",
        f"- Window: {start or 'none observed'}"
        + (f" to {end or 'ongoing'} ({_duration(start, end)})" if start else "")
        + f", from {basis}.",
        "- Who was affected, and how: _fill in_",
        "",
        *(["## New errors (error tracker)", "", *error_groups, ""] if error_groups is not None else []),
        "## Timeline (UTC)",
        "",
        "| time | who | step | result | detail |",
        "|---|---|---|---|---|",
        *[
            f"| {_cell(entry.get('at', ''))} | {_cell(entry.get('who', ''))} | {_cell(entry.get('step', ''))} | "
            f"{_cell(entry.get('result', ''))} | {_cell(entry.get('detail', ''))[:300]} |"
            for entry in entries
        ],
        "",
        "## Actions taken",
        "",
        *(
            [
                f"- {entry['at']} {entry['step']}: {entry['result']}"
                + (f" ({entry['detail']})" if entry.get("detail") else "")
                for entry in actions
            ]
            or ["- none"]
        ),
        "",
        "## Root cause",
        "",
        "_fill in: why it happened, and why it was not caught earlier_",
        "",
        "## Follow-ups",
        "",
        "- [ ] _fill in: what changes so this does not happen again (owner, due date)_",
        "",
    ]
    return REDACTOR.redact("\n".join(lines))
