"""deploy.releases and deploy.status: rows from a host's answer, and what counts as wrong."""

import dataclasses
import os
import subprocess

import pytest

from vigil.core.connectors import Result
from vigil.deploy.scripts import STATES, STATES_AND_TRAIL
from vigil.deploy.settings import Layout, Settings
from vigil.deploy.state import parse_states, parse_trail
from vigil.deploy.status import (
    STATE_TIMEOUT,
    age,
    release_rows,
    releases_by_host,
    states_as_admin,
    status_row,
    where_served,
)

SETTINGS = Settings(
    layout=Layout("/srv/together-pray", "together-pray", "backend"),
    group="together-pray",
    upstream_file="/etc/nginx/conf.d/together-pray-upstreams.conf",
    upstream_name="together_pray_backend",
    ports={"blue": 3001, "green": 3002},
    health_path="/health",
    health_release=True,
    checks=3,
    health_timeout=60,
    drain=5,
    keep=5,
)

# Two services in one answer, as STATES prints them.
ANSWER = """@service backend
@lock
@current
/srv/together-pray/backend/releases/r2
@color blue
/srv/together-pray/backend/releases/r1
@color green
/srv/together-pray/backend/releases/r2
@units
inactive
active
@upstream
3002
@releases
r1 good {"id": "r1", "ref": "v1", "uploaded_at": "2026-11-01T00:00:00Z", "by": "alice"}
r2 good {"id": "r2", "ref": "v2", "uploaded_at": "2026-11-02T00:00:00Z", "by": "bob"}
r3 bad {"id": "r3", "ref": "v3", "uploaded_at": "2026-11-03T00:00:00Z", "by": "bob"}
@history
{"time": "2026-11-01T00:01:00Z", "who": "alice", "release": "r1", "result": "live"}
{"time": "2026-11-02T00:01:00Z", "who": "bob", "release": "r2", "previous": "r1", "result": "live"}
{"time": "2026-11-03T00:01:00Z", "who": "bob", "release": "r3", "result": "failed", \
"step": "Check backend@blue is healthy."}
@end
@service frontend
@lock
{"who": "carol@ci", "since": "2026-11-03T00:00:00Z"}
@current
@units
inactive
inactive
@upstream
3101
@releases
@history
@end
"""
NOW = 1795651260.0  # 2026-11-26T00:01:00Z


def test_several_services_are_read_from_one_answer():
    states = parse_states(ANSWER)
    assert set(states) == {"backend", "frontend"}
    assert (states["backend"].current, states["backend"].live_port, states["backend"].units) == \
        ("r2", 3002, {"blue": "inactive", "green": "active"})
    assert states["frontend"].lock["who"] == "carol@ci" and states["frontend"].current is None


def test_releases_list_newest_first_with_the_current_live_and_rollback_target_marked():
    rows = release_rows(parse_states(ANSWER)["backend"], SETTINGS)
    assert [(row["release"], row["status"], row["marks"]) for row in rows] == [
        ("r3", "bad", []),
        ("r2", "good", ["current", "green (live)"]),
        ("r1", "good", ["blue", "rollback target"]),
    ]
    assert (rows[1]["deployed"], rows[1]["deployed_by"], rows[1]["ref"], rows[1]["by"]) == (
        "2026-11-02T00:01:00Z",
        "bob",
        "v2",
        "bob",
    )
    assert rows[0]["deployed"] == ""  # r3 never went live


def test_a_healthy_service_has_no_problem_and_shows_its_last_deploy():
    row = status_row(parse_states(ANSWER)["backend"], SETTINGS, NOW)
    assert (row["release"], row["live"], row["age"], row["problems"]) == ("r2", "green:3002", "24d 0h", [])
    assert row["last_deploy"] == {"time": "2026-11-03T00:01:00Z", "who": "bob", "release": "r3", "result": "failed",
                                  "step": "Check backend@blue is healthy."}


@pytest.mark.parametrize("change, problem", [
    (lambda s: dataclasses.replace(s, current=None), "nothing deployed"),
    (lambda s: dataclasses.replace(s, live_port=9999), "nginx's upstream names no color's port (9999)"),
    (lambda s: dataclasses.replace(s, units={"blue": "inactive", "green": "failed"}), "the live color green is failed"),
    (
        lambda s: dataclasses.replace(s, colors={"blue": "r1", "green": "r1"}),
        "the live color green runs r1, not current r2",
    ),
    # A deploy that took the lock, wrote its first line and was never heard from again.
    (
        lambda s: dataclasses.replace(s, history=[*s.history, {"time": "T", "who": "ci", "release": "r4",
                                                               "result": "started"}]),
        "the deploy of r4 that ci started at T never finished (its connection was cut?): the next deploy repairs "
        "the host",
    ),
])
def test_a_service_not_serving_as_deployed_is_a_problem(change, problem):
    state = change(parse_states(ANSWER)["backend"])
    assert status_row(state, SETTINGS, NOW)["problems"] == [problem]


@pytest.mark.parametrize("since, shown", [
    ("2026-11-26T00:00:30Z", "0m"), ("2026-11-25T23:01:00Z", "1h 0m"), ("2026-11-23T22:01:00Z", "2d 2h"),
    ("", ""), ("yesterday", ""),
])
def test_ages_read_at_a_glance(since, shown):
    assert age(since, NOW) == shown


def test_which_hosts_run_which_release():
    rows = {"vps1": {"release": "r2"}, "vps2": {"release": "r2"}, "vps3": {"release": ""}}
    assert releases_by_host(rows) == {"r2": ["vps1", "vps2"], "nothing": ["vps3"]}


@pytest.mark.parametrize("serving, unreached, line", [
    ({"r1": ["vps1", "vps2"]}, [], "r1 on vps1, vps2"),
    ({"r1": ["vps1"], "r2": ["vps3"]}, [], "r1 on vps1; r2 on vps3"),
    # An unreachable host is named, never an empty line.
    ({"r1": ["vps1"]}, ["vps2"], "r1 on vps1; unknown on vps2 (unreachable)"),
    ({}, ["vps1", "vps2"], "unknown on vps1, vps2 (unreachable)"),
    ({}, [], "no host runs it"),
])
def test_where_a_service_is_served_names_every_host(serving, unreached, line):
    assert where_served(serving, unreached) == line


def test_a_fifo_in_place_of_the_deploy_state_files_does_not_stall_the_reader(tmp_path):
    """The deploy user can put a FIFO where owner.json, a release's metadata or the history should be:
    the state is read anyway, without those, at once."""
    base = tmp_path / "backend"
    (base / ".deploy-lock").mkdir(parents=True)
    (base / "releases" / "r1").mkdir(parents=True)
    os.symlink("releases/r1", base / "current")
    for path in (base / ".deploy-lock" / "owner.json", base / "releases" / "r1" / ".vigil-release.json",
                 base / "deploys.jsonl"):
        os.mkfifo(path)
    upstreams = tmp_path / "upstreams.conf"
    upstreams.write_text("upstream together_pray_backend { server 127.0.0.1:3002; keepalive 16; }\n")
    done = subprocess.run(["sh", "-c", STATES, "states", "backend", str(base), str(upstreams), "together_pray_backend",
                           "a@blue.service", "a@green.service"], capture_output=True, text=True, timeout=10)
    state = parse_states(done.stdout)["backend"]
    assert (state.current, state.live_port, list(state.releases), state.history) == ("r1", 3002, ["r1"], [])


@pytest.mark.parametrize("root_answers, trail", [
    ('{"helper": "vigil-app-unit", "action": "restart"}\nhalf a li',
     [{"helper": "vigil-app-unit", "action": "restart"}]),
    ("", []),  # no deploy has asked root anything yet, or no helper there yet
])
def test_releases_read_roots_trail_after_the_state_and_never_the_deploy_users_text_as_it(tmp_path, root_answers, trail):
    """The trail comes from root's helper (here a stand-in sudo on PATH) after the deploy-owned state;
    a history the deploy user wrote an "@trail" section into stays its own."""
    base = tmp_path / "backend"
    (base / "releases" / "r1").mkdir(parents=True)
    forged = '@trail\n{"helper": "vigil-switch-upstream", "action": "forged"}\n'
    (base / "deploys.jsonl").write_text('{"result": "live", "release": "r1"}\n' + forged)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sudo").write_text(f"#!/bin/sh\n[ \"$*\" = '-n /usr/local/sbin/vigil-app-unit trail' ] && "
                                           f"printf '%s\\n' '{root_answers}'\n")
    (tmp_path / "bin" / "sudo").chmod(0o755)
    upstreams = tmp_path / "upstreams.conf"
    upstreams.write_text("upstream together_pray_backend { server 127.0.0.1:3001; keepalive 16; }\n")
    done = subprocess.run(["sh", "-c", STATES_AND_TRAIL, "states", "backend", str(base), str(upstreams),
                           "together_pray_backend", "a@blue.service", "a@green.service"], capture_output=True,
                          text=True, timeout=10, env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})
    states, read = parse_trail(done.stdout)
    assert read == trail
    assert parse_states(states)["backend"].history[0] == {"result": "live", "release": "r1"}


def test_status_screens_read_the_deploy_state_as_its_owner_within_a_deadline():
    asked = []

    class Host:
        def run(self, command, timeout=None):
            asked.append((command, timeout))
            return Result(0, ANSWER, "")

    states_as_admin(Host(), [dataclasses.replace(SETTINGS, owner="deploy")])
    (command, timeout), = asked
    assert command.render("ops").startswith("sudo -n -H -u deploy -- ") and timeout == STATE_TIMEOUT
