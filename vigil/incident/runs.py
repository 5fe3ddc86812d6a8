"""A runbook run, recorded: validated whole before anything runs, then run on the env's hosts, every
step on the incident's timeline and every action in the local audit log. And what root did for deploys on
each host, which the post-mortem's timeline shows beside the monitor host's alerts."""

from __future__ import annotations

import json
import time
from typing import Callable

from vigil.core.audit_log import REMOTE_ACTIONS_LOG, audit_locally
from vigil.core.commands import script
from vigil.core.errors import ConfigError, VigilError
from vigil.core.fanout import answered, unreachable
from vigil.core.output import Environment
from vigil.incident.engine import Library, Run, StepResult, execute
from vigil.incident.hosts import EnvHosts
from vigil.incident.library import HostLibrary
from vigil.incident.records import Incident, load_incident, open_incident, runbook_lock
from vigil.incident.runbooks import Step
from vigil.incident.runbooks import load as load_runbook

MARKS = {"passed": "ok", "done": "ok", "failed": "FAIL", "skipped": "--", "would run": "..", "declined": "no"}


def run_runbook(
    env: str,
    name: str,
    check_only: bool,
    confirm: Callable[[Step], bool],
    say: Callable[[str], None],
    incident_id: str | None = None,
    library: Callable[[str, object, Callable[[str], None]], Library] = HostLibrary,
    environment: Environment | None = None,
) -> tuple[Run, Incident | None]:
    """Load and validate the runbook (before touching anything), then run it on the env's hosts, every step
    on the incident's timeline and every action in the local audit log. Returns (run, incident or None).

    The incident record is opened once a check fails or an action is about to run, with the steps before
    it: a run that finds nothing wrong opens none, nor does a --check run (it changes nothing), unless
    `incident_id` names one to add to. library: what runs the steps (the hosts; a fake in the unit tests);
    environment: where the records and the local audit log are kept.
    """
    environment = environment or Environment()
    incidents = environment.state.incidents
    book = load_runbook(name)
    named = load_incident(incident_id, incidents) if incident_id else None
    if named and named.data.get("env") != env:
        raise ConfigError(f"incident {named.id} is about {named.data.get('env')}, not {env}")
    library = library(env, None, say)
    started = time.time()
    title = f"runbook {name}" + (" (check only)" if check_only else "")
    opened: dict = {"incident": None, "run": None}
    waiting: list[dict] = []  # timeline entries from before the record was opened

    def the_record():
        """The incident record, opened (or the named one joined) now, with what happened so far."""
        if opened["incident"] is None:
            incident = named or open_incident(env, name, incidents, when=started)
            opened.update(incident=incident, run=incident.begin_run(name, check_only, when=started))
            incident.add(title, "started", book.description, kind="run", when=started)
            for entry in waiting:
                incident.add(**entry)
            library.incident = incident
            if not named:
                say(f"  (incident {incident.id} opened)")
        return opened["incident"]

    def record(result: StepResult) -> None:
        step = result.step
        entry = {
            "step": f"{step.id}: {step.describe()}",
            "result": result.outcome,
            "detail": result.detail,
            "kind": step.kind,
            "failing": [f"{finding.host} {finding.target}" for finding in result.failing],
            "when": time.time(),
        }
        if opened["incident"] is None and not (result.outcome == "failed" and not check_only):
            waiting.append(entry)
        else:
            the_record().add(**entry)
        if step.kind == "action" and result.outcome in ("done", "failed"):
            audit_locally(f"incident.run {name}: {step.id} ({step.type})", env, [],
                          "ok" if result.outcome == "done" else "failed", environment)
        say(f"  {MARKS.get(result.outcome, '-')} {step.id} ({step.type}): {result.outcome}"
            + (f": {result.detail}" if result.detail else ""))

    # An action writes what it collects into the record's directory: the record exists before it runs.
    library.before_action = lambda: None if check_only else the_record()
    if named:
        the_record()
    say(f"{name} on {env}: {book.description}" + (" (check only)" if check_only else ""))
    with runbook_lock(env, exclusive=not check_only, root=incidents):
        outcome, why = "interrupted", ""  # until the engine says otherwise: Ctrl-C or a crash
        try:
            run = execute(book, library, confirm, check_only, record)
            outcome = run.outcome
        except VigilError as error:
            outcome, why = "stopped", error.message  # a confirmation that could not be asked for
            raise
        finally:
            # A run cut short still closes its entry: the timeline says how far it got.
            if opened["incident"] is not None:
                opened["incident"].add(f"runbook {name}", outcome, why, kind="run")
                opened["incident"].end_run(opened["run"], outcome)
    if opened["incident"] is None and not check_only:
        say("  nothing was failing: no incident opened")
    return run, opened["incident"]


# Root's record of what the deploy user's helpers did on the host.
HOST_ACTIONS = 'tail -n 5000 -- "$1" 2>/dev/null'


def read_host_actions(hosts: EnvHosts, since: str) -> tuple[list[dict], dict[str, str]]:
    """Each root-side action of a deploy on every host since `since` (UTC ISO; `"kind": "action"`, its `at`
    from the record's `time`), and the hosts that could not say."""
    def work(transport, host):
        answer = transport.run(script(HOST_ACTIONS, REMOTE_ACTIONS_LOG))
        events = []
        for line in answer.stdout.splitlines() if answer.ok else ():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            event = {**event, "at": str(event.get("time", "")), "kind": "action"}
            if event["at"] >= since:
                events.append({**event, "host": event.get("host") or host})
        return events

    answers = hosts.on_hosts(list(hosts.hosts), work)
    problems = unreachable(answers)
    return [event for answer in answered(answers).values() for event in answer], problems
