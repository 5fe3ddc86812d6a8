"""The deploy engine's pure parts: reading a host's state, what to prune, settings, log excerpts, rolling runs."""

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from vigil.core.connectors import Result
from vigil.core.errors import ConfigError, UnreachableError
from vigil.core.inventory import Host, Inventory
from vigil.core.roles import load_role
from vigil.core.runner import HostPlan, HostResult, OperationResult, RunOptions, run
from vigil.deploy.build import Artifact
from vigil.deploy.executor import HostDeploy
from vigil.deploy.lock import Heartbeat
from vigil.deploy.rollout import checked_artifact, deploy_work, newest_point, served_release, serving_line
from vigil.deploy.safety import DatabaseHost, KeepFailed, parse_kept
from vigil.deploy.scripts import (
    APPEND_HISTORY,
    BREAK_LOCK,
    FINISH,
    HEALTH_GATE,
    HEARTBEAT,
    LIST_MIGRATIONS,
    LOCK_AND_STATE,
    RELEASE_LOCK,
    RELINK,
    STILL_OURS,
    TAKE_LOCK,
    UNPACK,
    WATCH,
)
from vigil.deploy.settings import Layout, settings_from_vars
from vigil.deploy.state import (
    HostState,
    holder_line,
    interrupted_deploy,
    log_excerpt,
    migrations_added,
    parse_gate,
    parse_holder,
    parse_state,
    prune_candidates,
    restore_point_before,
    rollback_target,
)

STATE = """@lock

@current
/srv/together-pray/backend/releases/r2
@color blue
/srv/together-pray/backend/releases/r1
@color green
@upstream
3001
@releases
r1 good {"id": "r1", "uploaded_at": "2026-11-01T00:00:00Z"}
r2 good {"id": "r2", "uploaded_at": "2026-11-02T00:00:00Z"}
r3 bad {"id": "r3", "uploaded_at": "2026-11-03T00:00:00Z"}
r4 good not json
@end
"""


def test_a_hosts_state_is_read_from_one_answer():
    state = parse_state(STATE)
    assert (state.lock, state.current, state.live_port) == (None, "r2", 3001)
    assert state.colors == {"blue": "r1"}
    assert state.releases["r3"]["status"] == "bad" and state.releases["r4"] == {"status": "good"}
    locked = parse_state('@lock\n{"who": "alice", "since": "2026-11-26T01:00:00Z"}\n@end\n')
    assert locked.lock["who"] == "alice"


def releases(*uploaded: str) -> HostState:
    return HostState(releases={f"r{n}": {"uploaded_at": when} for n, when in enumerate(uploaded)})


def bad(state: HostState, *marked: str) -> HostState:
    for rid in marked:
        state.releases[rid]["status"] = "bad"
    return state


@pytest.mark.parametrize("state, keep, protected, doomed", [
    (releases("1", "2", "3"), 5, set(), []),
    (releases("1", "2", "3", "4", "5", "6", "7"), 5, {"r6"}, ["r1", "r0"]),
    # The current and previous release stay even when older than the rest, and count towards `keep`.
    (releases("1", "2", "3", "4", "5", "6", "7"), 5, {"r0", "r1"}, ["r3", "r2"]),
    # A release without metadata (uploaded by hand) sorts oldest.
    (HostState(releases={"manual": {}, "r1": {"uploaded_at": "1"}, "r2": {"uploaded_at": "2"}}), 2, {"r2"}, ["manual"]),
    # Bad releases do not count towards `keep`: 5 good ones stay to roll back to, with the recent
    # failures among them; older ones go, bad or good.
    (bad(releases("1", "2", "3", "4", "5", "6", "7", "8", "9", "10"), "r8", "r7", "r1"), 5, {"r9"},
     ["r2", "r1", "r0"]),
    (bad(releases("1", "2", "3", "4", "5", "6", "7", "8", "9", "10"), "r8", "r7", "r1"), 5, {"r9", "r0"},
     ["r3", "r2", "r1"]),
])
def test_pruning_keeps_the_newest_and_never_a_protected_release(state, keep, protected, doomed):
    assert prune_candidates(state, keep, protected) == doomed


def test_a_layout_names_every_path_and_unit():
    layout = Layout("/srv/together-pray", "together-pray", "backend")
    assert layout.release("r1") == "/srv/together-pray/backend/releases/r1"
    assert (layout.current, layout.lock) == (
        "/srv/together-pray/backend/current",
        "/srv/together-pray/backend/.deploy-lock",
    )
    assert layout.unit("green") == "together-pray-backend@green.service"
    assert layout.task_unit("migrate", "r1") == "together-pray-backend-migrate@r1.service"


def vars_with(**overrides):
    host = Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30)
    inventory = Inventory(
        "sandbox", Path("inventory/sandbox.yml"), Path("k"), {"web1": host}, {"web": ["web1"]}, {}, {}, {}
    )
    return inventory.vars_for(host, [load_role("app"), load_role("nginx")], overrides)


def test_settings_come_from_the_app_and_nginx_roles():
    settings = settings_from_vars(vars_with(), "backend")
    assert settings.ports == {"blue": 3001, "green": 3002}
    assert (settings.health_path, settings.health_release, settings.tasks) == ("/health", True, ("migrate",))
    assert settings.upstream_name == "together_pray_backend"
    assert (settings.min_healthy, settings.lock_lease) == (10, 120)
    frontend = settings_from_vars(vars_with(), "frontend")
    assert (frontend.health_path, frontend.health_release, frontend.tasks) == ("/", False, ())


@pytest.mark.parametrize("overrides, message", [
    ({"nginx_backend_ports": {"blue": 3001, "green": 3001}}, "expected two different ports"),
    ({"app_health": {"backend": {"path": "health"}}}, "app_health.backend: expected {path: /..., release: true|false}"),
    ({"app_deploy_tasks": {"backend": ["seed"]}}, "'seed' is not in app_release_tasks.backend"),
    ({"app_keep_releases": 1}, "app_keep_releases"),
    ({"app_min_healthy_seconds": 60}, "--var app_min_healthy_seconds: 60 s leaves no time to pass within "
                                      "app_health_timeout (60 s, roles/app/defaults.yml: app_health_timeout)"),
    ({"app_lock_lease_seconds": 5}, "app_lock_lease_seconds"),
])
def test_bad_deploy_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from_vars(vars_with(**overrides), "backend")


def test_a_log_excerpt_shows_the_error_lines_and_the_end_with_url_passwords_masked():
    log = "\n".join(["starting", "QueryFailedError: division by zero", *[f"  field{n}: undefined" for n in range(30)],
                     "Error: connect to postgresql://app:s3cret-pw@10.0.0.5:5432/db failed", "exit 1"])
    excerpt = log_excerpt(log, tail=3)
    assert excerpt.splitlines()[0] == "QueryFailedError: division by zero"
    assert excerpt.splitlines()[-1] == "exit 1" and "field5" not in excerpt
    assert "s3cret-pw" not in excerpt and "postgresql://app:***@10.0.0.5" in excerpt


def test_a_rolling_run_stops_after_a_failed_batch_and_reports_the_rest_skipped():
    hosts = [Host(f"web{n}", "127.0.0.1", 22, "deploy", None, ("web",), 5, 30) for n in range(1, 4)]
    ran = []

    def work(transport, plan, options, progress):
        ran.append(plan.host.name)
        return HostResult(plan.host.name, error="health gate failed" if plan.host.name == "web1" else "")

    results = run([HostPlan(host, []) for host in hosts], lambda host: contextlib.nullcontext(None),
                  RunOptions(serial=1), work=work, stop_after_failure=True)
    assert ran == ["web1"]
    assert [(r.host, r.status) for r in results] == [("web1", "failed"), ("web2", "skipped"), ("web3", "skipped")]


def history_state(current: str, bad=(), history=()) -> HostState:
    ids = {entry["release"] for entry in history} | {current, *bad}
    return HostState(current=current, releases={rid: {"status": "bad" if rid in bad else "good"} for rid in ids},
                       history=list(history))


def LIVE(release, previous=None, **more):
    return {"release": release, "result": "live", "previous": previous, **more}


DEPLOYED = [LIVE("r1"), LIVE("r2", "r1"), LIVE("r3", "r2")]


@pytest.mark.parametrize(
    "state, wanted, target",
    [
        (history_state("r3", history=DEPLOYED), None, "r2"),
        # A failed deploy, and a release marked bad since, are skipped.
        (
            history_state(
                "r3",
                bad=["r2"],
                history=[LIVE("r1"), LIVE("r2", "r1"), {"release": "r4", "result": "failed"}, LIVE("r3", "r2")],
            ),
            None,
            "r1",
        ),
        # After a rollback to r2, the next one goes further back, not forward to the current's successor.
        (history_state("r2", history=[*DEPLOYED, LIVE("r2", "r3", rollback=True)]), None, "r1"),
        # Deployed after a rollback: back to what it replaced, never to the release rolled away from.
        (
            history_state(
                "r3", history=[LIVE("r1"), LIVE("r2", "r1"), LIVE("r1", "r2", rollback=True), LIVE("r3", "r1")]
            ),
            None,
            "r1",
        ),
        # A redeploy of the current release (to the other color) replaced nothing.
        (history_state("r3", history=[*DEPLOYED, LIVE("r3", "r3")]), None, "r2"),
        (history_state("r3", history=DEPLOYED), "r1", "r1"),
    ],
)
def test_a_rollback_returns_to_the_previous_good_release(state, wanted, target):
    assert rollback_target(state, wanted) == target


@pytest.mark.parametrize(
    "state, wanted, message",
    [
        (history_state("r1", history=[LIVE("r1")]), None, "no earlier good release to return to (current: r1)"),
        (
            history_state("r2", bad=["r1"], history=[LIVE("r1"), LIVE("r2", "r1")]),
            None,
            "no earlier good release to return to (current: r2)",
        ),
        (history_state("r2", bad=["r1"], history=[LIVE("r1"), LIVE("r2", "r1")]), "r1", "release r1 is marked bad"),
        (history_state("r2", history=[LIVE("r2")]), "r9", "release r9 is not on the host"),
        (history_state("r2", history=[LIVE("r2")]), "r2", "release r2 is the current one already"),
    ],
)
def test_a_rollback_with_nowhere_to_go_says_why(state, wanted, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        rollback_target(state, wanted)


class FailingAfterLockTransport:
    """A host that grants the lock, then fails every command: enough to see the work is wired up."""

    def __init__(self):
        self.commands = []

    def run(self, command, timeout=None):
        self.commands.append(command)
        return Result(0, "", "") if len(self.commands) == 1 else Result(1, "", "sh: broken")


@pytest.mark.parametrize("rollback", [False, True])
def test_the_deploy_work_runs_on_each_host_records_each_step_and_releases_the_lock(rollback):

    artifact = (
        None if rollback else Artifact("backend", "r9", Path("/nonexistent.tar.gz"), "0" * 64, "worktree", "h" * 64, 1)
    )
    settings = settings_from_vars(vars_with(), "backend")
    seen = []
    work = deploy_work(lambda host: settings, artifact, "alice@laptop", 0, rollback=rollback)
    host = Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30)
    transport = FailingAfterLockTransport()
    (result,) = run([HostPlan(host, [])], lambda h: contextlib.nullcontext(transport), RunOptions(),
                    progress=lambda name, op: seen.append(op.name), work=work)
    assert result.status == "failed" and result.error.startswith("Read the host.")
    assert seen[0] == "Take the deploy lock." and "Release the deploy lock." in seen
    assert not transport.commands[0].sudo  # the lock is the deploy user's own


@pytest.mark.parametrize("results, serving, line", [
    ([HostResult("vps1"), HostResult("vps2")], {"vps1": "r2", "vps2": "r2"}, "r2 on vps1, vps2"),
    # A rolling deploy stopped at vps2: vps1 has the new release, vps2 kept its own, vps3 was never reached.
    ([HostResult("vps1"), HostResult("vps2", error="Check backend@blue is healthy.: ..."),
      HostResult("vps3", skipped="an earlier host failed")], {"vps1": "r2", "vps2": "r1"},
     "r2 on vps1; r1 on vps2; not reached on vps3"),
    ([HostResult("vps1", unreachable="timed out")], {}, "not reached on vps1"),
    ([HostResult("vps1", error="Read the host.: ...")], {"vps1": ""}, "unknown on vps1"),
])
def test_a_deploy_reports_which_hosts_serve_which_release(results, serving, line):
    assert serving_line(results, serving) == line


@pytest.mark.parametrize("listing, added", [
    ("@release r2\n1-A.js\n1-A.js.map\n2-B.js\n3-C.js\n@release r1\n1-A.js\n", ["3-C.js", "2-B.js"]),
    ("@release r2\n1-A.js\n@release r1\n1-A.js\n2-B.js\n", []),  # going forward adds nothing to revert
    ("@release r2\n1-A.js\n2-B.d.ts\n@release r1\n", ["1-A.js"]),  # a target with no migrations directory
    ("@release r2\n@release r1\n1-A.js\n", []),
])
def test_a_rollback_reverts_only_what_the_current_release_added_newest_first(listing, added):
    assert migrations_added(listing, "r2", "r1") == added


POINT = ('{"name": "vigil-migrate-20261203T144320Z", "at": "2026-12-03T14:43:20Z", "timeline": 1, "release": "r2", '
         '"restore": "invoke backup.restore vigil-migrate-20261203T144320Z --timeline=1 --env=staging"}')


@pytest.mark.parametrize("listing, added, point", [
    (f"@release r2\n1-A.js\n2-B.js\n@release r1\n1-A.js\n@point\n{POINT}\n", ["2-B.js"],
     "invoke backup.restore vigil-migrate-20261203T144320Z --timeline=1 --env=staging"),
    ("@release r2\n1-A.js\n2-B.js\n@release r1\n1-A.js\n@point\n", ["2-B.js"], None),  # a deploy with no backup host
    ("@release r2\n1-A.js\n@release r1\n@point\n{not json\n", ["1-A.js"], None),
])
def test_a_rollback_offers_the_restore_point_made_before_the_current_releases_migrations(listing, added, point):
    assert migrations_added(listing, "r2", "r1") == added
    found = restore_point_before(listing)
    assert (found or {}).get("restore") == point


@pytest.mark.parametrize("spec, message", [
    ({"dir": "../etc", "revert": "revert"}, "expected {dir: a path inside the release"),
    ({"dir": "dist/migrations", "revert": "nope"}, "'nope' is not in app_release_tasks.backend"),
    ("dist/migrations", "expected {dir:"),
])
def test_bad_migration_settings_name_the_key(spec, message):
    with pytest.raises(ConfigError, match=r"app_migrations\.backend.*" + re.escape(message)):
        settings_from_vars(vars_with(app_migrations={"backend": spec}), "backend")


def serving_states(*currents, sha="a" * 64, ref="worktree"):
    """read_states' answer for hosts serving `currents` (None: nothing)."""
    return {
        f"vps{n + 1}": {
            "backend": HostState(current=current, releases={current: {"sha256": sha, "ref": ref}} if current else {})
        }
        for n, current in enumerate(currents)
    }


@pytest.mark.parametrize(
    "states, unreached, message",
    [
        (serving_states("r1", "r2"), {}, "its hosts do not all serve one backend release (vps1: r1, vps2: r2)"),
        (serving_states("r1", None), {}, "(vps1: r1, vps2: nothing)"),
        (serving_states("r1"), {"vps2": "no answer from 10.0.0.2:22 within 5s"}, "cannot read what vps2 (no answer"),
        (
            serving_states("r1", "r1", sha="b" * 64) | {"vps3": serving_states("r1")["vps1"]},
            {},
            "hold r1 with different bytes",
        ),
    ],
)
def test_a_promotion_needs_one_release_served_by_every_host(states, unreached, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        served_release("staging", "backend", unreached, states)


@pytest.mark.parametrize("cached, message", [
    (None, "release r1 (staging) is not in .vigil/artifacts/backend/ here, and was built from a working tree"),
    (("r1", "b" * 64), "is not the one staging runs"),
    (("r2", "a" * 64), "is not the one staging runs"),
])
def test_a_promotion_ships_only_the_artifact_the_other_env_serves(cached, message):
    release, meta = served_release("staging", "backend", {}, serving_states("r1", "r1"))
    artifact = Artifact("backend", cached[0], Path("/x.tar.gz"), cached[1], "worktree", "h", 1) if cached else None
    with pytest.raises(ConfigError, match=re.escape(message)):
        checked_artifact("staging", "backend", release, meta, artifact)


def test_a_promotion_takes_the_cached_artifact_when_its_checksum_matches():
    release, meta = served_release("staging", "backend", {}, serving_states("r1", "r1"))
    artifact = Artifact("backend", "r1", Path("/x.tar.gz"), "a" * 64, "worktree", "h", 1)
    assert checked_artifact("staging", "backend", release, meta, artifact) is artifact


class ScriptedHost:
    """A host serving r1 on green that answers every later command with success; counts round trips."""

    def __init__(self, releases=("r1",)):
        self.commands = []
        self.state = ("@lock\n@current\n/srv/together-pray/backend/releases/r1\n@color green\n../releases/r1\n"
                      "@units\ninactive\nactive\n@upstream\n3002\n@releases\n"
                      + "".join(f'{rid} good {{"id": "{rid}", "uploaded_at": "2026-11-0{n + 1}T00:00:00Z"}}\n'
                                for n, rid in enumerate(releases))
                      + '@history\n{"release": "r1", "result": "live"}\n@end\n')

    def run(self, command, timeout=None):
        self.commands.append(command)
        if command.argv[-2:] == ("/usr/local/sbin/vigil-restore-point", "migrate"):
            return Result(0, "1796309000|1|vigil-migrate-20261203T144320Z\n", "")
        return Result(0, self.state if len(self.commands) == 1 else "3 checks in a row passed\n", "")


@pytest.mark.parametrize("on_host, tasks, restore_points, round_trips", [
    (("r1", "r9"), (), False, 7),        # warm: lock and state, start, gate, switch, watch, retire, finish and unlock
    (("r1",), (), False, 8),             # cold: and the upload
    (("r1",), ("migrate",), False, 9),   # and the migration (no backup host: nothing to keep a restore point in)
    (("r1",), ("migrate",), True, 11),   # and a restore point first, and its record beside the release
])
def test_a_deploy_asks_each_host_a_fixed_few_round_trips(on_host, tasks, restore_points, round_trips):
    artifact_file = Path(__file__)  # any bytes: the fake host takes them
    artifact = Artifact("backend", "r9", artifact_file, "0" * 64, "worktree", "h" * 64, artifact_file.stat().st_size)
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), drain=0, tasks=tasks)
    host = ScriptedHost(on_host)
    database = DatabaseHost("web1", lambda: pytest.fail("the database is on this host"), restore_points, "staging")
    deploy = HostDeploy(host, Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30), settings, artifact,
                        "alice@laptop", database=database)
    result = deploy.deploy()
    assert result.error == "" and deploy.serving == "r9"
    assert len(host.commands) == round_trips
    kept = [op for op in result.operations if op.name == "Make a restore point."]
    if tasks:  # said either way: what was kept, or that nothing could be
        assert kept[0].summary.startswith("restore point vigil-migrate-" if restore_points else
                                          "nothing kept: the env has no backup host"), kept
    else:
        assert kept == []
    assert [op.name for op in result.operations][-3:] == [
        "Make r9 current.",
        "Prune old releases.",
        "Release the deploy lock.",
    ]


def test_a_refused_rollback_changes_nothing_and_says_so():
    settings = settings_from_vars(vars_with(), "backend")
    host = ScriptedHost(("r1",))  # only the current release: nowhere to go back to
    deploy = HostDeploy(host, Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30), settings, None,
                        "alice@laptop", rollback=True)
    result = deploy.deploy()
    assert result.error.startswith("Choose the release to return to.: no earlier good release")
    assert (result.count("changed"), result.failures) == (0, 1)
    assert all(op.name for op in result.operations)
    assert [op.name for op in result.operations] == [
        "Take the deploy lock.", "Choose the release to return to.", "Release the deploy lock.",
    ]


@pytest.mark.parametrize("result, failures", [
    (HostResult("a", [OperationResult("x", "failed")], error="x: boom"), 1),
    # Failed outside any step (the connection dropped after the last one): still one failure.
    (HostResult("a", [OperationResult("x", "changed")], error="after the run: connection lost"), 1),
    (HostResult("a", [OperationResult("x", "changed")]), 0),
    (HostResult("a", unreachable="timed out"), 0),
])
def test_a_failed_host_never_shows_zero_failures(result, failures):
    assert result.failures == failures and result.as_dict()["failed"] == failures


class FailsItsWatchHost(ScriptedHost):
    """A host where everything works until the watch after the switch: the new color restarted."""

    def run(self, command, timeout=None):
        if command.argv[2] == WATCH:
            self.commands.append(command)
            return Result(1, "", "together-pray-backend@blue.service restarted (NRestarts and MainPID: 0 9-> 1 12)")
        return super().run(command, timeout)


def test_a_release_that_fails_its_watch_after_the_switch_is_switched_back_and_marked_bad():
    artifact_file = Path(__file__)
    artifact = Artifact("backend", "r9", artifact_file, "0" * 64, "worktree", "h" * 64, artifact_file.stat().st_size)
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), drain=0, tasks=())
    host = FailsItsWatchHost(("r1", "r9"))
    deploy = HostDeploy(host, Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30), settings, artifact,
                        "alice@laptop")
    result = deploy.deploy()
    assert result.error.startswith("Watch backend@blue serve for 30s.: together-pray-backend@blue.service restarted")
    assert deploy.serving == "r1"  # what it served before
    names = [op.name for op in result.operations]
    assert names[-3:] == ["Watch backend@blue serve for 30s.", "Switch nginx's backend upstream back to green.",
                          "Release the deploy lock."]
    after_watch = [command.argv for command in host.commands[host.commands.index(
        next(c for c in host.commands if c.argv[2] == WATCH)) + 1:]]
    assert after_watch[0][-2:] == ("backend", "green")  # traffic back on the old color first
    assert after_watch[1][-2:] == ("stop", "together-pray-backend@blue.service")
    assert "r9" in after_watch[2] and ".vigil-bad" in after_watch[2][2]  # then marked bad
    history = json.loads(host.commands[-2].stdin)
    assert (history["release"], history["result"], history["switched_back_to"]) == ("r9", "failed", "r1")


class CannotStartItsColorHost(ScriptedHost):
    """A host where systemd refuses to start the new color: systemctl's own answer says only "see
    journalctl"; the unit's journal says why."""

    def run(self, command, timeout=None):
        if command.argv[2].startswith(RELINK):
            self.commands.append(command)
            return Result(1, "", "Job for together-pray-backend@blue.service failed because of unavailable resources "
                                 "or another system error.")
        if command.argv[-2:] == ("logs", "together-pray-backend@blue.service"):
            self.commands.append(command)
            return Result(0, "together-pray-backend@blue.service: Failed to load environment files: No such file "
                             "or directory\ntogether-pray-backend@blue.service: Failed with result 'resources'.\n", "")
        return super().run(command, timeout)


def test_a_color_that_cannot_start_is_reported_with_what_its_journal_says():
    artifact_file = Path(__file__)
    artifact = Artifact("backend", "r9", artifact_file, "0" * 64, "worktree", "h" * 64, artifact_file.stat().st_size)
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), drain=0, tasks=())
    deploy = HostDeploy(CannotStartItsColorHost(("r1", "r9")), Host("web1", "10.0.0.11", 22, "deploy", None, ("web",),
                                                                     5, 30), settings, artifact, "alice@laptop")
    result = deploy.deploy()
    assert result.error.startswith("Start backend@blue on r9.: ")
    assert "unavailable resources" in result.error and "Failed to load environment files" in result.error
    assert deploy.serving == "r1"


class LosesItsConnectionHost(ScriptedHost):
    """A host whose connection drops at the first command running `script`; it comes back after
    `refusals` reconnects (never with None)."""

    def __init__(self, script, refusals, releases=("r1", "r9")):
        super().__init__(releases)
        self.script, self.refusals, self.lost, self.reconnects = script, refusals, False, 0

    def run(self, command, timeout=None):
        if self.lost:
            raise UnreachableError("web1", "the SSH connection was lost")
        if command.argv[2].startswith(self.script) and self.reconnects == 0:
            self.commands.append(command)
            self.lost = True
            raise UnreachableError("web1", "nothing came back from 10.0.0.11 for 30s: the connection stalled")
        return super().run(command, timeout)

    def reconnect(self):
        self.reconnects += 1
        if self.refusals is None or self.reconnects <= self.refusals:
            raise UnreachableError("web1", "no answer from 10.0.0.11:22 within 5s")
        self.lost = False
        return self


@pytest.mark.parametrize("script, refusals, history", [
    # Lost while the new color starts: once back, it is stopped, the attempt noted, the lock released.
    (RELINK, 0, {"release": "r9", "result": "failed", "step": "Deploy (after 'Upload release r9.')"}),
    # Lost while watching, after the switch: the failure and the color traffic is on are noted.
    (WATCH, 2, {"release": "r9", "result": "failed", "step": "Deploy (after \"Switch nginx's backend upstream to "
                                                              "blue.\")", "live": "blue"}),
])
def test_a_lost_connection_is_opened_again_to_note_the_failure_and_release_the_lock(monkeypatch, script, refusals,
                                                                                     history):
    monkeypatch.setattr("vigil.deploy.lock.time.sleep", lambda seconds: None)
    artifact_file = Path(__file__)
    artifact = Artifact("backend", "r9", artifact_file, "0" * 64, "worktree", "h" * 64, artifact_file.stat().st_size)
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), drain=0, tasks=())
    host = LosesItsConnectionHost(script, refusals)
    deploy = HostDeploy(host, Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30), settings, artifact,
                        "alice@laptop")
    result = deploy.deploy()
    assert result.error.startswith(history["step"] + ": nothing came back from 10.0.0.11 for 30s"), result.error
    assert host.reconnects == refusals + 1
    assert [op.name for op in result.operations][-1] == "Release the deploy lock."
    assert "Connect again." in [op.name for op in result.operations]
    assert host.commands[-1].argv[2] == RELEASE_LOCK
    noted = [json.loads(c.stdin) for c in host.commands if c.argv[2] == APPEND_HISTORY]
    assert noted and {key: noted[-1][key] for key in history} == history


class TakenOverWhileAwayHost(LosesItsConnectionHost):
    """Comes back, but the next deploy has taken the lock over meanwhile (STILL_OURS fails)."""

    def run(self, command, timeout=None):
        if not self.lost and command.argv[2] == STILL_OURS:
            self.commands.append(command)
            return Result(1, "", "")
        return super().run(command, timeout)


def test_a_deploy_that_comes_back_after_its_lock_was_taken_over_touches_nothing(monkeypatch):
    monkeypatch.setattr("vigil.deploy.lock.time.sleep", lambda seconds: None)
    artifact_file = Path(__file__)
    artifact = Artifact("backend", "r9", artifact_file, "0" * 64, "worktree", "h" * 64, artifact_file.stat().st_size)
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), drain=0, tasks=())
    host = TakenOverWhileAwayHost(RELINK, 0)
    result = HostDeploy(host, Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30), settings, artifact,
                        "alice@laptop").deploy()
    assert result.error.endswith("; connected again, but the next deploy had taken the lock over: left the host to it")
    after = [command.argv[2] for command in host.commands[host.commands.index(
        next(c for c in host.commands if c.argv[2] == STILL_OURS)):]]
    assert after == [STILL_OURS]  # no unit stopped, nothing marked bad, no history line, no lock released


@pytest.mark.parametrize("owner, ours", [('{"token": "abc123", "who": "a"}', True), ('{"token": "zzz"}', False),
                                         (None, False)])
def test_still_ours_reads_the_token_in_the_lock(tmp_path, owner, ours):
    lock = tmp_path / ".deploy-lock"
    if owner is not None:
        lock.mkdir()
        (lock / "owner.json").write_text(json.dumps(json.loads(owner)))
    done = subprocess.run(["sh", "-c", STILL_OURS, "still-ours", str(lock), "abc123"], timeout=10)
    assert (done.returncode == 0) is ours


def test_a_host_that_stays_out_of_reach_keeps_the_lock_for_the_next_deploy_to_take_over():
    artifact_file = Path(__file__)
    artifact = Artifact("backend", "r9", artifact_file, "0" * 64, "worktree", "h" * 64, artifact_file.stat().st_size)
    # A 4 s lease: one try in its first half, no wait between tries.
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), drain=0, tasks=(), lock_lease=4)
    host = LosesItsConnectionHost(UNPACK, None, releases=("r1",))
    deploy = HostDeploy(host, Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30), settings, artifact,
                        "alice@laptop")
    result = deploy.deploy()
    assert host.reconnects == 1
    assert "; no new connection within 2 s (no answer from 10.0.0.11:22 within 5s): the deploy lock stays until " \
           "its lease (4 s) runs out, then the next deploy takes it over" in result.error
    assert "Release the deploy lock." not in [op.name for op in result.operations]
    assert "clean-up failed" not in result.error


@pytest.mark.parametrize("restart_every, fail_after, passes, said", [
    (0, 0, True, "watched 5s: "),
    (2, 0, False, "restarted"),
    # The app stops answering: three failed checks in a row.
    (0, 1, False, '3 checks in a row failed: HTTP 503: {"error":"db down"}'),
])
def test_the_watch_fails_on_a_restart_or_failing_checks(tmp_path, restart_every, fail_after, passes, said):
    tools = {**FAKE_GATE_TOOLS, "curl": '#!/bin/sh\nc=$(( $(cat "$CURLS" 2>/dev/null || echo 0) + 1 )); '
                                         'echo $c > "$CURLS"\n[ "$FAIL_AFTER" -gt 0 ] && [ "$c" -gt "$FAIL_AFTER" ] '
                                         '&& { printf \'{"error":"db down"}\\n@@503\'; exit 0; }\n'
                                         'printf \'{"release":"r9"}\\n@@200\'\n'}
    for name, body in tools.items():
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LOOKS": str(tmp_path / "looks"), "CURLS": str(tmp_path / "curls"),
           "RESTART_EVERY": str(restart_every), "FAIL_AFTER": str(fail_after)}
    watched = subprocess.run(["sh", "-c", WATCH, "vigil", "3001", "/health", "r9", "backend@blue.service", "", "5",
                              "3"], capture_output=True, text=True, timeout=30, env=env)
    assert (watched.returncode == 0) is passes
    assert said in (watched.stdout if passes else watched.stderr)


def test_a_unit_that_passed_its_gate_and_did_not_restart_passes_its_watch(tmp_path):
    """The gate hands the watch the unit's NRestarts and MainPID: the same unit, unrestarted, must match
    (the e2e suite's first deploy found a trailing space that made every watch fail)."""
    for name, body in FAKE_GATE_TOOLS.items():
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LOOKS": str(tmp_path / "looks"), "RESTART_EVERY": "0"}
    gate = subprocess.run(["sh", "-c", HEALTH_GATE, "vigil", "3002", "/health", "r9", "3", "6", "app@green.service",
                           "1"], capture_output=True, text=True, timeout=30, env=env)
    summary, state = parse_gate(gate.stdout)
    assert gate.returncode == 0 and summary.startswith("healthy for") and state == "0 1000"
    watched = subprocess.run(["sh", "-c", WATCH, "vigil", "3002", "/health", "r9", "app@green.service", state, "2",
                              "3"], capture_output=True, text=True, timeout=30, env=env)
    assert watched.returncode == 0, watched.stderr


def sh(body: str, *args: str, stdin: str = "") -> "subprocess.CompletedProcess":
    return subprocess.run(["sh", "-c", body, "vigil", *args], input=stdin, capture_output=True, text=True)


def test_the_lock_is_taken_once_and_released_only_by_its_holder(tmp_path):
    lock = str(tmp_path / ".deploy-lock")
    taken = sh(TAKE_LOCK, lock, "120", stdin='{"who": "alice", "token": "aaaa"}')
    assert taken.returncode == 0 and (Path(lock) / "heartbeat").exists()
    held = sh(TAKE_LOCK, lock, "120", stdin='{"who": "bob", "token": "bbbb"}')
    holder, silent = parse_holder(held.stdout)
    # Silent for as long as the two takes were apart: a second or two on a busy machine.
    assert held.returncode == 75 and holder == {"who": "alice", "token": "aaaa"} and 0 <= silent <= 2
    assert sh(RELEASE_LOCK, lock, "bbbb").returncode == 3 and Path(lock).is_dir()  # not bob's: left
    assert sh(RELEASE_LOCK, lock, "aaaa").returncode == 0 and not Path(lock).exists()
    assert sh(RELEASE_LOCK, lock, "aaaa").returncode == 0  # already gone
    missing = sh(TAKE_LOCK, str(tmp_path / "no" / "such" / "lock"), "120")
    assert missing.returncode == 1 and "No such file" in missing.stderr
    assert "must be a number" in sh(TAKE_LOCK, lock, "soon").stderr


@pytest.mark.parametrize("silent, heartbeat, taken_over", [
    (30, True, False),    # a live holder: its heartbeat is recent
    (300, True, True),    # its heartbeat stopped longer than the lease ago: dead or cut off
    (300, False, True),   # a lock from before heartbeats (or hand-made): the directory's age counts
    (30, False, False),
])
def test_a_lock_whose_heartbeat_stopped_longer_than_the_lease_is_taken_over(tmp_path, silent, heartbeat,
                                                                           taken_over):
    lock = tmp_path / ".deploy-lock"
    lock.mkdir()
    (lock / "owner.json").write_text('{"who": "ci-7", "pid": 4242, "control_host": "runner", "token": "aaaa"}')
    then = time.time() - silent
    if heartbeat:
        (lock / "heartbeat").touch()
        os.utime(lock / "heartbeat", (then, then))
    os.utime(lock, (then, then))
    answer = sh(TAKE_LOCK + 'echo "@lock"; cat -- "$lock/owner.json"', str(lock), "120",
                stdin='{"who": "bob", "token": "bbbb"}')
    if not taken_over:
        assert answer.returncode == 75
        holder, seconds = parse_holder(answer.stdout)
        assert holder["who"] == "ci-7" and abs(seconds - silent) <= 2
        assert holder_line(holder).startswith("ci-7 (pid 4242 on runner) since")
        return
    assert answer.returncode == 0, answer.stderr
    state = parse_state(answer.stdout)
    assert state.stale_lock["who"] == "ci-7" and abs(state.stale_lock_silent - silent) <= 2
    assert state.lock == {"who": "bob", "token": "bbbb"} and not list(tmp_path.glob("*.stale.*"))


class LockedThenFreeHost(ScriptedHost):
    """Another deploy holds the lock for the first `held` asks; then the lock is taken over from it."""

    def __init__(self, held: int):
        super().__init__()
        self.held = held
        self.state = '@stale-lock 300\n{"who": "ci-7", "pid": 4242, "control_host": "runner"}\n' + self.state

    def run(self, command, timeout=None):
        self.commands.append(command)
        if len(self.commands) <= self.held:
            return Result(75, '{"who": "alice@laptop", "pid": 7, "control_host": "laptop", "since": "T"}\n@silent 3\n',
                          "")
        return Result(0, self.state if len(self.commands) == self.held + 1 else "", "")


def test_waiting_for_the_lock_says_so_and_a_takeover_is_noted_in_the_step_and_the_history():
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), drain=0)
    host, lines = LockedThenFreeHost(held=2), []
    deploy = HostDeploy(host, Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30), settings, None,
                        "bob@ci", lock_wait=30, rollback=True, lock_wait_note=0,
                        progress=lambda name, op: lines.append((op.status, op.name, op.summary)))
    state = deploy.take_lock()
    waits = [line for line in lines if line[0] == "waiting"]
    assert len(waits) == 2 and waits[0][2].startswith(
        "held by alice@laptop (pid 7 on laptop) since T, its heartbeat 3 s ago; ")
    taken = deploy.result.operations[-1]
    assert taken.name == "Take the deploy lock." and taken.status == "ok"
    assert "took over the lock of ci-7 (pid 4242 on runner) since ?, silent for 300 s (lease 120 s)" in taken.summary
    assert state.stale_lock["who"] == "ci-7"
    history = json.loads(host.commands[-1].stdin)
    assert (history["result"], history["holder"]["who"], history["silent_seconds"]) == ("lock taken over", "ci-7", 300)


def test_the_heartbeat_touches_only_its_own_lock(tmp_path):
    lock = tmp_path / ".deploy-lock"
    sh(TAKE_LOCK, str(lock), "120", stdin='{"who": "bob", "token": "bbbb"}')
    os.utime(lock / "heartbeat", (1, 1))
    assert sh(HEARTBEAT, str(lock), "aaaa").returncode != 0 and (lock / "heartbeat").stat().st_mtime == 1
    assert sh(HEARTBEAT, str(lock), "bbbb").returncode == 0 and (lock / "heartbeat").stat().st_mtime > 1


def test_breaking_a_lock_shows_its_holder_and_a_free_one_says_so(tmp_path):
    lock = tmp_path / ".deploy-lock"
    assert sh(BREAK_LOCK, str(lock)).stdout.strip() == "@free"
    sh(TAKE_LOCK, str(lock), "120", stdin='{"who": "alice"}')
    broken = sh(BREAK_LOCK, str(lock))
    assert broken.returncode == 0 and '"who": "alice"' in broken.stdout and not lock.exists()
    assert not (tmp_path / ".deploy-lock.broken").exists()


@pytest.mark.parametrize("token, unlocked", [("aaaa", True), ("bbbb", False)])
def test_finishing_switches_current_records_prunes_and_unlocks_only_its_own_lock(tmp_path, token, unlocked):
    base = tmp_path / "backend"
    for release in ("r1", "r2", "old"):
        (base / "releases" / release).mkdir(parents=True)
    (base / "releases" / "r2" / ".vigil-bad").write_text("{}")
    sh(TAKE_LOCK, str(base / ".deploy-lock"), "120", stdin='{"token": "aaaa"}')
    done = sh(
        FINISH,
        str(base / "current"),
        "releases/r2",
        str(base / "releases" / "r2" / ".vigil-bad"),
        str(base / "deploys.jsonl"),
        str(base / "releases"),
        str(base / ".deploy-lock"),
        token,
        "old",
        stdin='{"release": "r2"}\n',
    )
    assert done.returncode == 0, done.stderr
    assert (base / "current").readlink() == Path("releases/r2") and not (
        base / "releases" / "r2" / ".vigil-bad"
    ).exists()
    assert (base / "deploys.jsonl").read_text() == '{"release": "r2"}\n'
    assert sorted(p.name for p in (base / "releases").iterdir()) == ["r1", "r2"]
    assert (base / ".deploy-lock").exists() is not unlocked


class CountingHost:
    def __init__(self):
        self.commands = []

    def run(self, command, timeout=None):
        self.commands.append(command)
        return Result(0, "", "")


def test_a_heartbeat_beats_while_it_runs_and_stops_with_its_deploy():
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), lock_lease=10)
    host = CountingHost()
    beat = Heartbeat(host, settings, "aaaa")
    beat.interval = 0.05  # the lease's quarter, shortened so the test need not wait
    with beat:
        time.sleep(0.5)
    beaten = len(host.commands)
    time.sleep(0.2)
    assert beaten >= 3 and len(host.commands) == beaten  # it stopped with the block
    assert all("heartbeat" in command.argv[2] and command.argv[-1] == "aaaa" for command in host.commands)


# A fake curl and systemctl for the health gate: the app answers healthy; systemd reports the unit's
# NRestarts and MainPID, which change on every RESTART_EVERY-th look when a crash loop is asked for.
FAKE_GATE_TOOLS = {
    "curl": '#!/bin/sh\nprintf \'{"status":"ok","release":"r9"}\\n@@200\'\n',
    "systemctl": '#!/bin/sh\nn=$(( $(cat "$LOOKS" 2>/dev/null || echo 0) + 1 )); echo $n > "$LOOKS"\n'
                 'restarts=$(( RESTART_EVERY > 0 ? n / RESTART_EVERY : 0 ))\n'
                 'echo "$restarts"; echo $(( 1000 + restarts ))\n',
}


@pytest.mark.parametrize("restart_every, passes, said", [
    # At least the 2 s asked for (a slow machine takes a second more): whole seconds, as `date` counts.
    (0, True, "checks in a row, no restart"),
    # Up and answering, but restarted by systemd every other second: never stable, never live.
    (2, False, "not healthy for 2s in a row within 6s: backend@green.service restarted"),
    (1, False, "times meanwhile"),
])
def test_the_health_gate_wants_the_new_color_healthy_and_unrestarted_for_a_while(tmp_path, restart_every, passes,
                                                                                 said):
    for name, body in FAKE_GATE_TOOLS.items():
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)
    gate = subprocess.run(
        ["sh", "-c", HEALTH_GATE, "vigil", "3002", "/health", "r9", "3", "6", "backend@green.service", "2"],
        capture_output=True, text=True, timeout=30,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "LOOKS": str(tmp_path / "looks"),
             "RESTART_EVERY": str(restart_every)},
    )
    assert (gate.returncode == 0) is passes
    assert said in (gate.stdout if passes else gate.stderr)


@pytest.mark.parametrize("colors, current, found", [
    ({"blue": "r1", "green": "r2"}, "r2", ""),  # green (port 3002) is live and runs current
    # Cut off between the switch and `current`: nginx serves r3 on green, current still names r2.
    ({"blue": "r2", "green": "r3"}, "r2", "nginx sends traffic to green, which runs r3, while current names r2"),
])
def test_a_deploy_cut_off_after_its_switch_is_recognised(colors, current, found):
    state = HostState(current=current, colors=colors, live_port=3002)
    message = interrupted_deploy(state, settings_from_vars(vars_with(), "backend"))
    assert (found in message) and bool(message) == bool(found)


def test_taking_the_lock_writes_the_attempts_first_history_line_in_the_same_round_trip(tmp_path):
    base = tmp_path / "backend"
    base.mkdir()
    started = '{"release": "r9", "result": "started"}'
    done = sh(LOCK_AND_STATE, str(base / ".deploy-lock"), "120", str(base / "deploys.jsonl"), started, str(base),
              str(tmp_path / "upstreams.conf"), "app_backend", "app-backend@blue.service", "app-backend@green.service",
              stdin='{"token": "aaaa"}')
    assert done.returncode == 0, done.stderr
    assert (base / "deploys.jsonl").read_text() == started + "\n"
    assert parse_state(done.stdout).history == [{"release": "r9", "result": "started"}]


class CutOffHost(ScriptedHost):
    """A host a deploy was cut off on, right after its switch: green (live) runs r3, current names r1."""

    def __init__(self):
        super().__init__(("r1", "r3"))
        self.state = self.state.replace("@color green\n../releases/r1", "@color green\n../releases/r3")


def test_a_rerun_after_a_cut_off_deploy_says_what_it_repairs_and_converges():
    artifact_file = Path(__file__)
    artifact = Artifact("backend", "r9", artifact_file, "0" * 64, "worktree", "h" * 64, artifact_file.stat().st_size)
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), drain=0, tasks=())
    deploy = HostDeploy(CutOffHost(), Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30), settings,
                        artifact, "alice@laptop")
    result = deploy.deploy()
    assert result.error == "" and deploy.serving == "r9"
    found = next(op for op in result.operations if op.name == "Find an interrupted deploy.")
    assert "runs r3, while current names r1; this deploy brings both to r9" in found.summary
    assert deploy.served_before == "r3"


def test_a_migration_with_a_backup_host_is_preceded_by_a_restore_point_recorded_beside_its_release():
    artifact_file = Path(__file__)
    artifact = Artifact("backend", "r9", artifact_file, "0" * 64, "worktree", "h" * 64, artifact_file.stat().st_size)
    settings = dataclasses.replace(settings_from_vars(vars_with(), "backend"), drain=0, tasks=("migrate",))
    host = ScriptedHost(("r1",))
    database = DatabaseHost("web1", lambda: pytest.fail("the database is on this host"), True, "staging")
    deploy = HostDeploy(host, Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30), settings, artifact,
                        "alice@laptop", database=database)
    result = deploy.deploy()
    assert result.error == ""
    step = next(op for op in result.operations if op.name == "Make a restore point.")
    assert step.summary == ("restore point vigil-migrate-20261203T144320Z (timeline 1); to return to it: invoke "
                            "backup.restore vigil-migrate-20261203T144320Z --timeline=1 --env=staging")
    recorded = next(command for command in host.commands if ".vigil-restore-point.json" in " ".join(command.argv))
    assert recorded.argv[-2] == "/srv/together-pray/backend/releases/r9"
    assert json.loads(recorded.argv[-1]) == {
        "name": "vigil-migrate-20261203T144320Z", "at": "2026-12-03T14:43:20Z", "timeline": 1, "release": "r9",
        "restore": "invoke backup.restore vigil-migrate-20261203T144320Z --timeline=1 --env=staging"}
    # The migration runs after the point is made, never before.
    names = [op.name for op in result.operations]
    assert names.index("Make a restore point.") < names.index("Run migrate for r9.")


@pytest.mark.parametrize("answer", ["", "1796309000|1|vigil-migrate-x\n", "ERROR: something\n"])
def test_a_restore_point_that_cannot_be_read_stops_the_deploy_before_the_migration(answer):
    database = DatabaseHost("db1", lambda: None, True, "staging")
    with pytest.raises(KeepFailed, match="vigil-restore-point answered"):
        parse_kept(database, answer, "r9")


@pytest.mark.parametrize("point", [None, POINT])
def test_listing_the_migrations_succeeds_with_or_without_a_restore_point(tmp_path, point):
    """LIST_MIGRATIONS for real: a release without a restore point (no backup host) lists as well."""
    for release, names in (("r2", ["1-A.js", "2-B.js"]), ("r1", ["1-A.js"])):
        (tmp_path / release / "dist" / "migrations").mkdir(parents=True)
        for name in names:
            (tmp_path / release / "dist" / "migrations" / name).write_text("")
    if point:
        (tmp_path / "r2" / ".vigil-restore-point.json").write_text(point + "\n")
    done = subprocess.run(["sh", "-c", LIST_MIGRATIONS, "list", str(tmp_path), "dist/migrations", "r2", "r1"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert migrations_added(done.stdout, "r2", "r1") == ["2-B.js"]
    found = restore_point_before(done.stdout) or {}
    assert found.get("name") == ("vigil-migrate-20261203T144320Z" if point else None)


def point(name: str) -> dict:
    return {"name": name, "timeline": 1, "release": "r2"}


@pytest.mark.parametrize("points, chosen", [
    ({"web1": point("vigil-migrate-20261204T194913Z"), "web2": point("vigil-migrate-20261204T193957Z")}, "web1"),
    # web2 ran the release's migrations this time; web1's record is from an earlier deploy of it.
    ({"web1": point("vigil-migrate-20261204T193957Z"), "web2": point("vigil-migrate-20261204T194913Z")}, "web2"),
    # A revert's point (an older version recorded them too) is the schema after the migrations: no way back.
    ({"web1": point("vigil-migrate-20261204T193957Z"), "web2": point("vigil-revert-20261204T194002Z")}, "web1"),
    ({"web1": None, "web2": point("vigil-revert-20261204T194002Z")}, None),
    ({"web1": None, "web2": point("vigil-migrate-20261204T193957Z")}, "web2"),
    ({"web1": None, "web2": None}, None),
])
def test_a_rollback_to_a_restore_point_takes_the_newest_record_of_the_serving_release(points, chosen):
    found = newest_point(points)
    assert (found[0] if found else None) == chosen
