"""Instant rollback (vigil.deploy.warm): the old color kept running for the rollback window after a deploy,
and a rollback within it that is a health check and the upstream switch, in one round trip."""

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.unit.deploy.test_executor import vars_with
from vigil.core.connectors import Result
from vigil.core.errors import ConfigError
from vigil.core.inventory import Host
from vigil.deploy.executor import HostDeploy
from vigil.deploy.scripts import FINISH, HEALTH_GATE, RETIRE, WARM_SWITCH
from vigil.deploy.settings import settings_from_vars
from vigil.deploy.warm import NOT_WARM, parse_retired

HOST = Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30)


def settings(**changes):
    return dataclasses.replace(settings_from_vars(vars_with(), "backend"), **changes)


class RolledBackHost:
    """A host serving r2 on green (port 3002) since a deploy that left r1 running in blue; `warm_answer`: what
    WARM_SWITCH answers. Every other command succeeds."""

    def __init__(self, blue_unit="active", warm_answer=Result(0, "healthy, switched\n", "")):
        self.commands, self.warm_answer = [], warm_answer
        self.state = ("@lock\n@current\n/srv/together-pray/backend/releases/r2\n"
                      "@color blue\n../releases/r1\n@color green\n../releases/r2\n"
                      f"@units\n{blue_unit}\nactive\n@upstream\n3002\n@releases\n"
                      'r1 good {"id": "r1", "uploaded_at": "2026-11-01T00:00:00Z"}\n'
                      'r2 good {"id": "r2", "uploaded_at": "2026-11-02T00:00:00Z"}\n'
                      '@history\n{"release": "r2", "previous": "r1", "result": "live"}\n@end\n')

    def run(self, command, timeout=None):
        self.commands.append(command)
        if len(self.commands) == 1:
            return Result(0, self.state, "")
        if command.argv[2:3] == (WARM_SWITCH,):
            return self.warm_answer
        return Result(0, "3 checks in a row passed\n", "")

    def scripts(self):
        return [command.argv[2] if command.argv[:2] == ("sh", "-c") else command.argv[0] for command in self.commands]


@pytest.mark.parametrize("blue_unit, warm_answer, instant", [
    # r1 still runs in blue: health check and switch in one round trip, then `current` and the history.
    ("active", Result(0, "healthy, switched\n", ""), True),
    # Its window ended (the timer stopped it): started cold, as before.
    ("inactive", None, False),
    # Running, but it does not answer for r1 any more: nothing was switched, and it is started cold.
    ("active", Result(NOT_WARM, "together-pray-backend@blue.service answered for another release: {}\n", ""), False),
])
def test_a_rollback_within_the_window_switches_to_the_running_color_without_starting_it(blue_unit, warm_answer,
                                                                                       instant):
    host = RolledBackHost(blue_unit, warm_answer)
    result = HostDeploy(host, HOST, settings(drain=0), None, "alice@laptop", rollback=True).deploy()
    assert result.error == "" and result.failures == 0
    ran = host.scripts()
    assert (HEALTH_GATE not in ran) is instant
    assert (WARM_SWITCH in ran) is (blue_unit == "active")
    if instant:
        # lock and state, the warm switch, then current, history and unlock: three round trips
        assert len(host.commands) == 3 and ran[-1] == FINISH
        assert [op.name for op in result.operations][:3] == [
            "Take the deploy lock.", "Choose the release to return to.",
            "Switch nginx's backend upstream to blue, still running r1."]
    else:
        assert "Start backend@blue on r1." in [op.name for op in result.operations]
    history = json.loads(host.commands[-1].stdin)
    assert (history["release"], history["rollback"], history.get("instant", False)) == ("r1", True, instant)


def test_a_warm_switch_that_nginx_refuses_fails_the_rollback_and_leaves_the_color_running():
    host = RolledBackHost(warm_answer=Result(1, "", "vigil-switch-upstream: nginx -t refused the switch"))
    result = HostDeploy(host, HOST, settings(), None, "alice@laptop", rollback=True).deploy()
    assert result.error.startswith("Switch nginx's backend upstream to blue, still running r1.: exited 1: "
                                   "vigil-switch-upstream: nginx -t refused")
    # Never stopped: it was not this rollback's to start, and it still serves as the rollback target.
    assert not any("stop" in command.argv for command in host.commands)


# A fake sudo that logs what a script asks the helpers (`REFUSE`: an action the helper does not know).
FAKE_SUDO = '#!/bin/sh\nshift\necho "$*" >> "$CALLS"\n[ "$2" = "$REFUSE" ] && exit 64\nexit 0\n'


def tools(tmp_path, **bodies):
    for name, body in {"sudo": FAKE_SUDO, **bodies}.items():
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)


@pytest.mark.parametrize("window, need, refuse, said, calls", [
    # Kept: the old color runs on and stops when its window ends (a boot starts the served one: no link moved).
    (1800, 1, "", "@warm", ["stop-after 1800 OLD"]),
    # No window: drained, stopped.
    (0, 1, "", "", ["stop OLD"]),
    # Too little memory to keep both colors running: stopped, and said why.
    (1800, 10 ** 9, "", "@cold only", ["stop OLD"]),
    # A helper from before the window (not provisioned since): stopped, and said why.
    (1800, 1, "stop-after", "@cold the unit helper cannot schedule its stop", ["stop-after 1800 OLD", "stop OLD"]),
])
def test_the_old_color_is_kept_for_the_window_only_where_it_fits(tmp_path, window, need, refuse, said, calls):
    tools(tmp_path)
    retired = subprocess.run(["sh", "-c", RETIRE, "vigil", "/usr/local/sbin/vigil-app-unit", "OLD", "0",
                              str(window), str(need)], capture_output=True, text=True, timeout=30,
                             env={"PATH": f"{tmp_path}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"),
                                  "REFUSE": refuse})
    assert retired.returncode == 0, retired.stderr
    assert said in retired.stdout
    asked = (tmp_path / "calls").read_text().splitlines()
    assert asked == [f"/usr/local/sbin/vigil-app-unit {call}" for call in calls]
    assert parse_retired(retired.stdout, retired.stderr, True).warm is (said == "@warm")


def test_retiring_names_each_action_that_failed():
    retired = parse_retired("@cold only 100 MiB of memory available, 256 MiB needed to keep it running\n",
                            "vigil: stopping the old color failed\n", False)
    assert (retired.warm, retired.problems) == (False, ("stopping the old color failed",))
    assert retired.detail.startswith("only 100 MiB")


FAKE_CURL = '#!/bin/sh\nprintf \'%s\\n@@%s\' "$BODY" "$CODE"\n'
FAKE_SYSTEMCTL = '#!/bin/sh\necho "$UNIT_STATE"\n'


@pytest.mark.parametrize("unit_state, code, body, switched, said", [
    ("active", "200", '{"release":"r1"}', True, "healthy, switched"),
    ("inactive", "200", '{"release":"r1"}', False, "is not running"),
    ("active", "503", '{"error":"db down"}', False, "did not answer its health check: HTTP 503"),
    ("active", "200", '{"release":"r3"}', False, "answered for another release"),
])
def test_a_warm_switch_changes_nothing_unless_the_color_runs_and_answers_for_the_release(tmp_path, unit_state, code,
                                                                                         body, switched, said):
    tools(tmp_path, curl=FAKE_CURL, systemctl=FAKE_SYSTEMCTL)
    answer = subprocess.run(
        ["sh", "-c", WARM_SWITCH, "vigil", "3001", "/health", "r1", "app-backend@blue.service", "/helper", "/switch",
         "backend", "blue", "app-backend@green.service", "5"],
        capture_output=True, text=True, timeout=30,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "REFUSE": "",
             "UNIT_STATE": unit_state, "CODE": code, "BODY": body})
    assert answer.returncode == (0 if switched else NOT_WARM) and said in answer.stdout
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    # The switch (which also decides what a boot starts), then the timed stop of the color left: nothing else.
    assert calls == (["/switch backend blue", "/helper stop-after 5 app-backend@green.service"] if switched else [])


def test_the_window_comes_from_minutes_and_a_bad_one_names_its_key():
    assert (settings().rollback_window, settings().rollback_min_available_mb) == (1800, 256)
    assert settings_from_vars(vars_with(app_rollback_window_minutes=0), "backend").rollback_window == 0
    with pytest.raises(ConfigError, match=re.escape("app_rollback_window_minutes: expected a whole number from 0 "
                                                    "to 1440, got 2000")):
        settings_from_vars(vars_with(app_rollback_window_minutes=2000), "backend")


def test_every_deploy_setting_of_the_window_is_documented():
    defaults = Path("roles/app/defaults.yml").read_text()
    for key in ("app_rollback_window_minutes", "app_rollback_window_min_available_mb"):
        assert re.search(rf"^# .*\n{key}: ", defaults, re.MULTILINE), key


def test_a_color_that_cannot_take_the_traffic_is_named_without_the_passwords_its_answer_quotes():
    answer = Result(NOT_WARM, 'together-pray-backend@blue.service did not answer its health check: HTTP 503: '
                              '{"error": "connect postgresql://app:s3cret-pw@db:5432/app refused"}\n', "")
    result = HostDeploy(RolledBackHost(warm_answer=answer), HOST, settings(drain=0), None, "alice@laptop",
                        rollback=True).deploy()
    said = next(op.summary for op in result.operations if op.name == "Return to backend@blue as it runs.")
    assert "did not answer its health check" in said and "s3cret-pw" not in said
