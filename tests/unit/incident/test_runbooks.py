"""Runbooks: the shipped ones validate, a bad one is refused naming its line, and the engine's rules
(conditions, `on`, confirm, check mode, stop once resolved) hold against a fake library (no hosts)."""

import json
from pathlib import Path

import pytest

from vigil.core.errors import ConfigError
from vigil.core.output import Environment
from vigil.core.paths import LocalState
from vigil.incident.engine import (
    CHECKED,
    DECLINED,
    FAILED,
    RESOLVED,
    RETRY_SECONDS,
    UNRESOLVED,
    ActionFailed,
    Finding,
    execute,
)
from vigil.incident.records import list_incidents, load_incident
from vigil.incident.runbooks import load as load_runbook
from vigil.incident.runbooks import load_all
from vigil.incident.runbooks import parse as parse_runbook
from vigil.incident.runs import run_runbook

SHIPPED = {"backend-down", "frontend-down", "db-down", "disk-full", "bad-deploy", "cert-expiring", "db-failover"}


def test_every_shipped_runbook_validates_and_knows_when_it_is_done():
    books = {book.name: book for book in load_all()}
    assert set(books) == SHIPPED
    for book in books.values():
        assert book.steps[0].kind == "check" and book.steps[0].resolves, book.name  # a second run stops at once
        changing = ("restart", "rollback", "free_disk", "failover")
        assert all(step.confirm for step in book.steps if step.type in changing), book.name


GOOD_HEAD = "description: test\nsteps:\n  - id: health\n    check: http\n    resolves: true\n"

# (runbook text, the line named, words of the message)
REFUSED = [
    (GOOD_HEAD + "  - action: reboot\n", 6, "unknown action 'reboot'"),
    (GOOD_HEAD + "  - check: ping\n", 6, "unknown check 'ping'"),
    (GOOD_HEAD + "  - action: restart\n    on: nope\n", 7, "'nope' is not an earlier step"),
    (
        GOOD_HEAD
        + "  - action: restart\n    services: [backend]\n    when: later failed\n  - id: later\n    check: database\n",
        8,
        "'later' is not an earlier step",
    ),
    (
        GOOD_HEAD
        + "  - id: kick\n    action: restart\n    services: [backend]\n"
        "  - action: notify\n    message: x\n    when: kick failed\n",
        11,
        "'kick' is an action",
    ),
    (
        GOOD_HEAD + "  - action: restart\n    services: [backend]\n    when: health broke\n",
        8,
        "is not '<check id> passed'",
    ),
    (
        GOOD_HEAD + "  - action: restart\n    services: [redis]\n",
        7,
        "is not a list of backend, frontend, nginx, postgresql",
    ),
    (
        GOOD_HEAD + "  - action: free_disk\n    on: health\n",
        7,
        "health' is a http check; free_disk acts on what a disk check found",
    ),
    (GOOD_HEAD + "  - action: restart\n", 6, "needs services:, on:, or both"),
    (GOOD_HEAD + "  - check: disk\n    max_used: 150\n", 7, "is not a whole number from 1 to 99"),
    (GOOD_HEAD + "  - check: disk\n    retries: 3\n", 7, "check disk takes no 'retries'"),
    (GOOD_HEAD + "  - check: http\n    action: restart\n", 6, "exactly one of check: or action:"),
    (GOOD_HEAD + "  - id: health\n    check: database\n", 6, "used by an earlier step"),
    (GOOD_HEAD + "  - action: notify\n", 6, "needs 'message'"),
    (GOOD_HEAD + "  - action: collect_logs\n    since: $(reboot)\n", 7, "is not a time journalctl reads"),
    (GOOD_HEAD + "  - check: http\n    confirm: sure?\n", 7, "takes no 'confirm'"),
    (GOOD_HEAD + "stepz: []\n", 6, "unknown key 'stepz'"),
    (GOOD_HEAD + "  - check: [http]\n", 6, "unknown check ['http']"),
    (
        GOOD_HEAD + "  - action: restart\n    services: [backend]\n    services: [frontend]\n",
        8,
        "YAML error: duplicate key 'services'",
    ),  # one YAML loader for every file vigil reads
    (GOOD_HEAD + "  - action: notify\n    message: use { carefully\n", 7, "write {{ and }} for a brace"),
    (GOOD_HEAD + "  - action: notify\n    message: on {host}\n", 7, "unknown placeholder {host}"),
    ("description: test\nsteps:\n  - check: http\n", 0, "no check says `resolves: true`"),
    ("description: test\nsteps: [\n", 3, "YAML syntax error"),
]


@pytest.mark.parametrize("text, line, message", REFUSED, ids=[case[2][:40] for case in REFUSED])
def test_a_bad_runbook_is_refused_naming_its_line(tmp_path, text, line, message):
    path = tmp_path / "broken.yml"
    with pytest.raises(ConfigError) as refused:
        parse_runbook(text, path)
    assert message in refused.value.message
    assert refused.value.message.startswith(f"{path}:{line}:" if line else f"{path}:")


def test_on_and_off_stay_words_not_yaml_booleans(tmp_path):
    book = parse_runbook(
        GOOD_HEAD + "  - action: maintenance\n    state: on\n  - action: restart\n    on: health\n", tmp_path / "x.yml"
    )
    assert book.steps[1].params["state"] == "on" and book.steps[2].on == "health"


class FakeLibrary:
    """Answers checks from a script of findings per step id, and records what it was asked to do."""

    def __init__(self, answers: dict[str, list[list[Finding]]], fail: set[str] = frozenset()):
        self.answers, self.fail = answers, fail
        self.actions: list[tuple[str, list | None]] = []
        self.slept = 0
        self.now = 1000.0

    def check(self, step, attempt):
        script = self.answers[step.id]
        return script[min(attempt, len(script) - 1)]

    def act(self, step, failing):
        if step.id in self.fail:
            raise ActionFailed(f"{step.id} broke on vps1")
        self.actions.append((step.id, failing))
        return "done"

    def sleep(self, seconds):
        self.slept += seconds
        self.now += seconds

    def clock(self):
        return self.now


UP = [Finding("vps1", "backend", True, "HTTP 200"), Finding("vps2", "backend", True, "HTTP 200")]
DOWN_ON_VPS1 = [Finding("vps1", "backend", False, "HTTP 502"), Finding("vps2", "backend", True, "HTTP 200")]
BACKEND_DOWN = load_runbook("backend-down")


def outcomes(run) -> dict[str, str]:
    return {result.step.id: result.outcome for result in run.results}


def test_a_healthy_backend_ends_the_run_at_the_first_check():
    library = FakeLibrary({"health": [UP]})
    run = execute(BACKEND_DOWN, library, confirm=lambda step: pytest.fail("nothing to confirm"))
    assert run.outcome == RESOLVED and outcomes(run) == {"health": "passed"} and library.actions == []


def test_a_down_backend_is_restarted_where_it_failed_then_verified():
    library = FakeLibrary({"health": [DOWN_ON_VPS1], "units": [[Finding("vps1", "backend", False, "inactive")]],
                           "database": [[Finding("vps1", "postgresql", True, "answers")]],
                           "recovered": [DOWN_ON_VPS1, DOWN_ON_VPS1, UP]})
    asked = []
    run = execute(BACKEND_DOWN, library, confirm=lambda step: asked.append(step.id) or True)
    assert run.outcome == RESOLVED and asked == ["restart"]
    assert [step for step, _ in library.actions] == ["logs", "restart"]
    assert library.actions[1][1] == [DOWN_ON_VPS1[0]]  # only what the health check found failing
    assert outcomes(run)["recovered"] == "passed" and library.slept == 2 * RETRY_SECONDS
    assert "escalate" not in outcomes(run)


def test_a_condition_that_does_not_hold_skips_the_step_and_the_run_escalates():
    library = FakeLibrary(
        {
            "health": [DOWN_ON_VPS1],
            "units": [[]],
            "database": [[Finding("vps1", "postgresql", False, "refused")]],
            "recovered": [DOWN_ON_VPS1],
        }
    )
    run = execute(BACKEND_DOWN, library, confirm=lambda step: True)
    assert outcomes(run)["restart"] == "skipped" and "database passed" in run.results[4].detail
    assert run.outcome == UNRESOLVED and [step for step, _ in library.actions] == ["logs", "escalate"]


def test_check_mode_runs_checks_once_and_only_says_what_would_run():
    library = FakeLibrary({"health": [DOWN_ON_VPS1], "units": [[]], "database": [UP], "recovered": [DOWN_ON_VPS1, UP]})
    run = execute(BACKEND_DOWN, library, confirm=lambda step: pytest.fail("check mode asks nothing"), check_only=True)
    assert library.actions == [] and library.slept == 0 and run.outcome == CHECKED
    assert outcomes(run)["restart"] == "would run" and "asks first" in run.results[4].detail


def test_a_declined_step_stops_the_run_and_an_action_failure_is_the_outcome():
    library = FakeLibrary({"health": [DOWN_ON_VPS1], "units": [[]], "database": [UP], "recovered": [UP]})
    declined = execute(BACKEND_DOWN, library, confirm=lambda step: False)
    assert (
        declined.outcome == DECLINED
        and outcomes(declined)["restart"] == "declined"
        and "recovered" not in outcomes(declined)
    )
    broken = execute(BACKEND_DOWN, FakeLibrary(library.answers, fail={"restart"}), confirm=lambda step: True)
    assert broken.outcome == FAILED and "broke on vps1" in broken.results[-1].detail


def test_an_action_on_a_check_that_found_nothing_failing_is_skipped():
    book = parse_runbook("description: t\nsteps:\n  - id: disk\n    check: disk\n  - action: free_disk\n    on: disk\n"
                    "  - check: disk\n    resolves: true\n", Path("t.yml"))
    full = [Finding("vps1", "filesystem /", True, "40% used")]
    run = execute(book, FakeLibrary({"disk": [full], "step3": [full]}), confirm=lambda step: True)
    assert outcomes(run)["step2"] == "skipped" and run.outcome == RESOLVED


def test_wait_is_seconds_however_long_each_attempt_takes():
    book = parse_runbook(
        "description: t\nsteps:\n  - id: up\n    check: http\n    wait: 60\n    resolves: true\n", Path("t.yml")
    )

    class Slow(FakeLibrary):
        def check(self, step, attempt):
            self.now += 20  # a hung backend: each attempt times out
            self.attempts = attempt + 1
            return DOWN_ON_VPS1

    library = Slow({})
    run = execute(book, library, confirm=lambda step: True)
    assert run.outcome == UNRESOLVED and library.attempts == 3 and library.now - 1000 <= 60 + 20 + RETRY_SECONDS


def test_a_run_opens_an_incident_only_once_something_fails_with_the_steps_before(tmp_path):
    answers = {"health": [UP]}

    class Hosts(FakeLibrary):
        def __init__(self, env, incident, say):
            super().__init__(answers)
            self.incident, self.before_action = incident, lambda: None

        def act(self, step, failing):
            self.before_action()
            return super().act(step, failing)

    here = Environment(state=LocalState(tmp_path))

    def run_it():
        return run_runbook("sandbox", "backend-down", False, lambda step: True, lambda text: None, library=Hosts,
                           environment=here)

    run, incident = run_it()
    assert run.outcome == RESOLVED and incident is None and list_incidents(here.state.incidents) == []

    answers.update(health=[DOWN_ON_VPS1], units=[[]], database=[UP], recovered=[UP])
    run, incident = run_it()
    timeline = incident.timeline()
    assert [entry["step"].split(":")[0] for entry in timeline] == [
        "runbook backend-down", "health", "units", "database", "logs", "restart", "recovered", "runbook backend-down"]
    assert timeline[1]["failing"] == ["vps1 backend"] and timeline[-1]["result"] == "resolved"
    assert load_incident(incident.id, here.state.incidents).data["status"] == "resolved"
    audited = [json.loads(line)["task"] for line in here.state.audit_log.read_text().splitlines()]
    assert audited == ["incident.run backend-down: logs (collect_logs)", "incident.run backend-down: restart (restart)"]
