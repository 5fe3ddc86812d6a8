"""Incident records, their timeline and the post-mortem; the step library's commands and parsers (no hosts)."""

import calendar
import stat

import pytest
from invoke import Context
from invoke.exceptions import Exit

from vigil.cli import incident as tasks
from vigil.core.errors import ConfigError
from vigil.core.redaction import REDACTOR
from vigil.incident.actions import free_disk_command, parse_freed
from vigil.incident.checks import database_command, disk_command, http_command, parse_disk, parse_http
from vigil.incident.engine import Finding
from vigil.incident.records import impact_window, load_incident, open_incident, render_report

OPENED = calendar.timegm((2026, 11, 26, 3, 0, 0))


def test_a_record_is_private_and_its_timeline_redacted(tmp_path):
    incident = open_incident("sandbox", "backend-down", root=tmp_path, when=OPENED)
    assert incident.id == "20261126-030000-backend-down"
    assert stat.S_IMODE(incident.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((incident.directory / "record.json").stat().st_mode) == 0o600
    REDACTOR.add("hunter2-is-the-password")
    incident.add("logs", "done", "a line said hunter2-is-the-password", when=OPENED + 5, who="ops@laptop")
    assert "hunter2" not in (incident.directory / "timeline.jsonl").read_text()
    assert incident.timeline() == [{"at": "2026-11-26T03:00:05Z", "who": "ops@laptop", "kind": "step", "step": "logs",
                                    "result": "done", "detail": "a line said ***"}]
    again = open_incident("sandbox", "backend-down", root=tmp_path, when=OPENED)
    assert again.id == "20261126-030000-backend-down-2"
    assert load_incident(incident.id, root=tmp_path).data["env"] == "sandbox"


@pytest.mark.parametrize("incident_id, message", [("../etc", "is not an incident id"),
                                                  ("20261126-030000-nope", "no incident 20261126-030000-nope")])
def test_a_bad_incident_id_is_refused(tmp_path, incident_id, message):
    with pytest.raises(ConfigError, match=message):
        load_incident(incident_id, root=tmp_path)


def test_a_run_resolves_the_record_and_a_check_only_run_does_not(tmp_path):
    incident = open_incident("sandbox", "disk-full", root=tmp_path, when=OPENED)
    looked = incident.begin_run("disk-full", check_only=True, when=OPENED)
    incident.end_run(looked, "checked", when=OPENED + 1)
    assert incident.data["status"] == "open"
    fixed = incident.begin_run("disk-full", check_only=False, when=OPENED + 60)
    incident.end_run(fixed, "resolved", when=OPENED + 90)
    record = load_incident(incident.id, root=tmp_path).data
    assert (record["status"], record["resolved_at"]) == ("resolved", "2026-11-26T03:01:30Z")


# The monitor host's alert history, as vigil.monitor.alerts.history_events gives it.
ALERTS = [
    {"at": "2026-11-26T02:58:00Z", "host": "vps1", "check": "backend", "alert": "BackendDown", "event": "down"},
    {"at": "2026-11-26T02:59:00Z", "host": "vps2", "check": "backend", "alert": "BackendDown", "event": "down"},
    {"at": "2026-11-26T03:02:00Z", "host": "vps1", "check": "backend", "alert": "BackendDown", "event": "recovered"},
    {"at": "2026-11-26T03:03:00Z", "host": "vps2", "check": "backend", "alert": "BackendDown", "event": "recovered"},
]
TIMELINE = [
    {
        "at": "2026-11-26T03:00:00Z",
        "who": "ops",
        "kind": "run",
        "step": "runbook backend-down",
        "result": "started",
        "detail": "",
    },
    {
        "at": "2026-11-26T03:00:01Z",
        "who": "ops",
        "kind": "check",
        "step": "health",
        "result": "failed",
        "detail": "vps1 backend: HTTP 502",
    },
    {
        "at": "2026-11-26T03:00:30Z",
        "who": "ops",
        "kind": "action",
        "step": "restart",
        "result": "done",
        "detail": "restarted vps1",
    },
    {
        "at": "2026-11-26T03:01:00Z",
        "who": "ops",
        "kind": "check",
        "step": "recovered",
        "result": "passed",
        "detail": "",
    },
    {
        "at": "2026-11-26T03:01:00Z",
        "who": "ops",
        "kind": "run",
        "step": "runbook backend-down",
        "result": "resolved",
        "detail": "",
    },
]

# (alert events, timeline, expected window)
WINDOWS = [
    (ALERTS, TIMELINE, ("2026-11-26T02:58:00Z", "2026-11-26T03:03:00Z", "the monitor host's alerts")),
    (ALERTS[:3], TIMELINE, ("2026-11-26T02:58:00Z", "", "the monitor host's alerts")),  # vps2 never recovered
    ([], TIMELINE, ("2026-11-26T03:00:01Z", "2026-11-26T03:01:00Z", "vigil's checks during the runbook runs")),
    ([], TIMELINE[:1], ("", "", "no failure was observed")),
    # An earlier outage that ended before this one: the window is the one under way when the runbook ran.
    ([{**ALERTS[0], "at": "2026-11-26T01:00:00Z"}, {**ALERTS[2], "at": "2026-11-26T01:05:00Z"}] + ALERTS, TIMELINE,
     ("2026-11-26T02:58:00Z", "2026-11-26T03:03:00Z", "the monitor host's alerts")),
    # A backup alert long before: not this incident's (the runbook found vps1's backend failing).
    ([{"at": "2026-11-26T01:00:00Z", "host": "vps1", "check": "backup", "event": "down"}] + ALERTS[:1] + ALERTS[2:3],
     [{**entry, "failing": ["vps1 backend"]} if entry["step"] == "health" else entry for entry in TIMELINE],
     ("2026-11-26T02:58:00Z", "2026-11-26T03:02:00Z", "the monitor host's alerts")),
]


@pytest.mark.parametrize("health, timeline, window", WINDOWS)
def test_the_impact_window_comes_from_the_alerts_else_the_checks(health, timeline, window):
    assert impact_window(health, timeline) == window


def test_the_post_mortem_has_every_section_and_the_events_in_time_order(tmp_path):
    incident = open_incident("sandbox", "backend-down", root=tmp_path, when=OPENED)
    text = render_report(incident, TIMELINE, ALERTS)
    for heading in ("# Post-mortem: backend-down (sandbox)", "## Summary", "## Impact", "## Timeline (UTC)",
                    "## Actions taken", "## Root cause", "## Follow-ups"):
        assert heading in text
    assert "Window: 2026-11-26T02:58:00Z to 2026-11-26T03:03:00Z (5 min 0 s)" in text
    rows = [line for line in text.splitlines() if line.startswith("| 2026")]
    assert [row.split(" | ")[0][2:] for row in rows] == sorted(row.split(" | ")[0][2:] for row in rows)
    assert (
        any("alert on vps1 | BackendDown firing" in row for row in rows)
        and "- 2026-11-26T03:00:30Z restart: done (restarted vps1)" in text
    )


# (command, its rendering)
COMMANDS = [
    (free_disk_command(["journal", "rotated-logs"], ["/", "/var/log"]), "' vigil 200M /,/var/log journal rotated-logs"),
    (http_command("app.example.org", ["backend"]), "' vigil app.example.org /api/health '\"status\":\"ok\"'"),
    (disk_command(["/", "/var/log"]), "' vigil / /var/log"),
    (database_command("together_pray"), "' vigil together_pray"),
]


@pytest.mark.parametrize("command, tail", COMMANDS)
def test_step_commands_pass_values_as_arguments_never_inside_the_script(command, tail):
    assert command.render("ops").endswith(tail) and command.sudo


def test_http_answers_through_each_hosts_nginx_are_read():
    answer = "/api/health 1 200 0.012\n/ 0 502 0.004\n"
    assert parse_http("vps1", answer, ["backend", "frontend"]) == [
        Finding("vps1", "backend", True, "HTTP 200 in 12 ms"), Finding("vps1", "frontend", False, "HTTP 502 in 4 ms")]
    assert parse_http("vps1", "/api/health 0 000 0.000\n", ["backend"]) == [
        Finding("vps1", "backend", False, "no answer from nginx")
    ]


def test_disk_and_freed_space_answers_are_read():
    findings = parse_disk("vps1", "/ 42% /\n/var/log 95% /var/log\ngarbage\n", 90)
    assert [(f.target, f.ok, f.detail) for f in findings] == [("filesystem /", True, "42% used (max 90%)"),
                                                              ("filesystem /var/log", False, "95% used (max 90%)")]
    assert parse_freed("journal 0\nrotated-logs 15728640\nnoise\n") == {"journal": 0, "rotated-logs": 15728640}


def test_a_note_goes_on_the_timeline_and_can_resolve_the_incident(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_STATE_DIR", str(tmp_path))
    incident = open_incident("sandbox", "db-down", when=OPENED)
    assert incident.directory.parent == tmp_path / "incidents"
    tasks.note(Context(), incident.id, text="Moved the database to a bigger disk.", resolved=True)
    record = load_incident(incident.id)
    assert (
        record.data["status"] == "resolved"
        and record.timeline()[-1]["detail"] == "Moved the database to a bigger disk."
    )
    with pytest.raises(Exit) as refused:
        tasks.maintenance(Context(), "on", env="production", incident=incident.id)
    assert refused.value.code == 3  # about sandbox, not production: refused before any host


def test_the_post_mortem_shows_what_the_deploy_user_had_root_do_on_the_hosts(tmp_path):
    """Root's own record (vigil-app-unit, vigil-switch-upstream) is in the timeline, in time order, and never
    moves the impact window."""
    incident = open_incident("sandbox", "backend-down", root=tmp_path, when=OPENED)
    action = {"at": "2026-11-26T02:59:00Z", "time": "2026-11-26T02:59:00Z", "kind": "action", "host": "vps1",
              "by": "deploy", "helper": "vigil-app-unit", "action": "restart",
              "args": "together-pray-backend@green.service"}
    text = render_report(incident, TIMELINE, ALERTS + [action])
    rows = [line for line in text.splitlines() if line.startswith("| 2026")]
    assert ("| 2026-11-26T02:59:00Z | root on vps1 | vigil-app-unit restart together-pray-backend@green.service "
            "| asked | by deploy |") in rows
    assert [row.split(" | ")[0][2:] for row in rows] == sorted(row.split(" | ")[0][2:] for row in rows)
    assert "Window: 2026-11-26T02:58:00Z to 2026-11-26T03:03:00Z" in text


def test_within_one_second_an_alert_firing_comes_before_the_steps_and_one_resolving_after(tmp_path):
    incident = open_incident("sandbox", "backend-down", root=tmp_path, when=OPENED)
    second = "2026-11-26T03:00:00Z"
    timeline = [{"at": second, "who": "ops", "kind": "check", "step": "health", "result": "failed", "detail": ""},
                {"at": second, "who": "ops", "kind": "action", "step": "restart", "result": "done", "detail": ""}]
    alerts = [{"at": second, "host": "vps1", "alert": "BackendDown", "event": "recovered"},
              {"at": second, "host": "vps1", "alert": "BackendDown", "event": "down"}]
    rows = [line for line in render_report(incident, timeline, alerts).splitlines() if line.startswith(f"| {second}")]
    assert [row.split(" | ")[2] for row in rows] == ["BackendDown firing", "health", "restart", "BackendDown resolved"]
