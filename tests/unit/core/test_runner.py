"""The runner against the control machine's own shell (LocalTransport): real commands, no network."""

import contextlib
import dataclasses
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from vigil.core import runner
from vigil.core.commands import Secret, cmd
from vigil.core.connectors.local import LocalTransport
from vigil.core.errors import ExitCode, UnreachableError
from vigil.core.inventory import Host
from vigil.core.operations import ConfirmLogin, Operation, change
from vigil.core.output import Environment, Reporter, brief, exit_code
from vigil.core.runner import HostPlan, HostRefusal, RunOptions, run
from vigil.operations.files import Directory, File, Line, Symlink
from vigil.operations.guarded import Guarded


class CountingTransport(LocalTransport):
    def __init__(self):
        self.calls = []

    def run(self, command, timeout=None):
        self.calls.append(command)
        return super().run(command, timeout)


def host(name):
    return Host(name, "127.0.0.1", 22, "root", None, (), 5, 30)


@dataclass
class AppendLine(Operation):
    """Always changes: appends a line (stands in for a service restart)."""

    path: str
    name: str = "Append a line."
    notify: tuple = ()

    def plan(self, known):
        return change("append", cmd("sh", "-c", 'echo ran >> "$1"', "x", self.path))


def site(root: Path, notify=()):
    return [
        Directory(str(root / "srv"), mode="0750"),
        File(str(root / "srv" / "app.conf"), "port = 3000\n", mode="0640", notify=notify),
        Symlink(str(root / "current"), str(root / "srv")),
        Line(str(root / "srv" / "limits.conf"), "workers = 2", notify=notify),
    ]


@pytest.fixture
def scratch_pending_handlers(tmp_path):
    """The 'hosts' here are this machine: their pending handlers go to the test's own directory, never to
    this machine's real /var/lib/vigil."""
    return tmp_path / "pending-handlers"


@pytest.fixture
def go(scratch_pending_handlers):
    """go(plans, options, transports, unreachable): the plans run on this machine through counting transports."""

    def run_here(plans, options=None, transports=None, unreachable=()):
        transports = transports if transports is not None else {}
        options = dataclasses.replace(options or RunOptions(), pending_handlers=str(scratch_pending_handlers))

        @contextlib.contextmanager
        def connect(h):
            if h.name in unreachable:
                raise UnreachableError(h.name, "no answer within 5s")
            yield transports.setdefault(h.name, CountingTransport())

        return run(plans, connect, options)

    return run_here


def test_apply_then_second_run_changes_nothing(tmp_path, go):
    (result,) = go([HostPlan(host("a"), site(tmp_path))])
    assert (result.status, result.count("changed"), result.count("failed")) == ("changed", 4, 0)
    assert (tmp_path / "srv" / "app.conf").read_text() == "port = 3000\n"
    assert (tmp_path / "srv" / "limits.conf").read_text() == "workers = 2\n"
    assert oct((tmp_path / "srv" / "app.conf").stat().st_mode & 0o777) == "0o640"
    assert oct((tmp_path / "srv").stat().st_mode & 0o777) == "0o750"
    assert (tmp_path / "current").resolve() == tmp_path / "srv"

    transports = {}
    (again,) = go([HostPlan(host("a"), site(tmp_path))], transports=transports)
    assert again.count("changed") == 0 and again.status == "ok"
    # A run with nothing to do reads all facts in one round trip and runs nothing else.
    assert len(transports["a"].calls) == 1


def test_check_mode_changes_nothing_but_reports_the_plan(tmp_path, go):
    (result,) = go([HostPlan(host("a"), site(tmp_path))], RunOptions(check=True, diff=True))
    assert result.count("changed") == 4
    assert not (tmp_path / "srv").exists() and not (tmp_path / "current").exists()
    file_op = result.operations[1]
    assert file_op.commands and "+port = 3000" in file_op.diff


def test_handlers_run_once_at_the_end_and_only_when_notified(tmp_path, go):
    log = tmp_path / "handler.log"
    plans = [HostPlan(host("a"), site(tmp_path, notify=("restart app",)), {"restart app": AppendLine(str(log))})]
    (first,) = go(plans)
    assert log.read_text() == "ran\n"
    assert first.operations[-1].name == "Append a line."
    # Nothing changes now, so nothing notifies and the handler does not run.
    (second,) = go(plans)
    assert log.read_text() == "ran\n"
    assert second.count("changed") == 0


def test_failing_host_stops_itself_skips_the_rest_and_never_hides_others(tmp_path, go):
    bad = [Guarded([cmd("sh", "-c", "echo boom >&2; exit 3")], creates=str(tmp_path / "never")), *site(tmp_path / "b")]
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    results = go([HostPlan(host("b"), bad), HostPlan(host("c"), site(tmp_path / "c"))])
    failed, fine = results
    assert failed.status == "failed" and "exited 3: boom" in failed.error
    assert [op.status for op in failed.operations] == ["failed"] + ["skipped"] * 4
    assert fine.status == "changed" and (tmp_path / "c" / "srv" / "app.conf").exists()
    assert not (tmp_path / "b" / "srv").exists()
    assert exit_code(results) == ExitCode.HOST_FAILED


def test_a_host_refused_at_planning_fails_uncontacted_and_others_proceed(tmp_path, go):
    transports = {}
    refused = HostPlan(host("db"), [], refused=HostRefusal("roles/postgresql", "secret DB_PASSWORD is missing"))
    results = go([refused, HostPlan(host("web"), site(tmp_path))], transports=transports)
    assert results[0].status == "failed"
    assert results[0].error == "roles/postgresql: secret DB_PASSWORD is missing"
    assert [(op.name, op.status) for op in results[0].operations] == [("roles/postgresql", "failed")]
    assert "db" not in transports, "a refused host must not even be connected to"
    assert results[1].status == "changed"
    assert exit_code(results) == ExitCode.HOST_FAILED


def test_unreachable_host_is_reported_and_others_proceed(tmp_path, go):
    results = go(
        [HostPlan(host("down"), site(tmp_path / "x")), HostPlan(host("up"), site(tmp_path))], unreachable={"down"}
    )
    assert results[0].status == "unreachable" and "no answer" in results[0].unreachable
    assert results[1].status == "changed"
    assert exit_code(results) == ExitCode.UNREACHABLE


def sleeper(name, tmp_path):
    return HostPlan(host(name), [Guarded([cmd("sleep", "0.3")], creates=str(tmp_path / "never"))])


def overlaps(a, b):
    return a.started < b.finished and b.started < a.finished


def test_hosts_run_in_parallel_up_to_forks(tmp_path, go):
    a, b = go([sleeper("a", tmp_path), sleeper("b", tmp_path)], RunOptions(forks=10))
    assert overlaps(a, b)


@pytest.mark.parametrize("options", [RunOptions(forks=1), RunOptions(forks=10, serial=1)])
def test_forks_one_or_serial_one_runs_hosts_one_after_another(tmp_path, options, go):
    a, b = go([sleeper("a", tmp_path), sleeper("b", tmp_path)], options)
    assert not overlaps(a, b)


def test_reporter_masks_secrets_in_progress_recap_and_json(tmp_path, go):
    secret = Secret("tok-9d8f7e6c5b")
    failing = [
        Guarded([cmd("sh", "-c", 'echo "bad token $1" >&2; exit 1', "x", secret)], creates=str(tmp_path / "never"))
    ]
    results = go([HostPlan(host("a"), failing)])
    for json_output in (False, True):
        out = io.StringIO()
        reporter = Reporter(Environment(stdout=out, stderr=out), json_output=json_output, verbose=True)
        for op in results[0].operations:
            reporter.progress("a", op)
        reporter.recap("test", "unit", results)
        text = out.getvalue()
        assert "tok-9d8f7e6c5b" not in text and "***" in text
    assert json.loads(text)["exit_code"] == ExitCode.HOST_FAILED


def test_a_failing_handler_is_recorded_and_fails_the_host(tmp_path, go):
    broken = Guarded(
        [cmd("sh", "-c", "echo restart failed >&2; exit 1")], creates=str(tmp_path / "never"), name="Restart app."
    )
    (result,) = go([HostPlan(host("a"), site(tmp_path, notify=("restart app",)), {"restart app": broken})])
    assert result.status == "failed" and "restart failed" in result.error
    assert [op.status for op in result.operations] == ["changed"] * 4 + ["failed"]


def test_a_handler_that_failed_runs_again_on_the_next_run_even_without_changes(tmp_path, scratch_pending_handlers, go):
    log = tmp_path / "handler.log"
    flaky = Guarded([cmd("sh", "-c", 'echo ran >> "$1"; test -e "$2"', "x", str(log), str(tmp_path / "healthy"))],
                    creates=str(tmp_path / "never"), name="Restart app.")
    plans = [HostPlan(host("a"), site(tmp_path, notify=("restart app",)), {"restart app": flaky})]
    (first,) = go(plans)
    assert first.status == "failed" and scratch_pending_handlers.read_text() == "restart app\n"

    (tmp_path / "healthy").touch()
    (second,) = go(plans)
    assert second.count("changed") == 1 and second.operations[-1].name == "Restart app."
    assert log.read_text() == "ran\nran\n" and not scratch_pending_handlers.exists()

    (third,) = go(plans)
    assert third.count("changed") == 0 and log.read_text() == "ran\nran\n"


def test_unknown_handler_fails_the_host_by_name(tmp_path, go):
    (result,) = go([HostPlan(host("a"), site(tmp_path, notify=("reload nginx",)))])
    assert result.status == "failed" and "unknown handler 'reload nginx'" in result.error


@dataclass
class Explodes(Operation):
    name: str = "Explode."
    notify: tuple = ()

    def plan(self, known):
        raise RuntimeError("a bug in an operation")


def test_an_unexpected_error_on_one_host_never_hides_another(tmp_path, go):
    results = go([HostPlan(host("a"), [Explodes()]), HostPlan(host("b"), site(tmp_path))])
    assert results[0].status == "failed" and "RuntimeError: a bug in an operation" in results[0].error
    assert results[1].status == "changed"


def test_a_failure_after_the_steps_keeps_their_results(tmp_path):
    def failing_audit(transport, result):
        raise UnreachableError(result.host, "connection lost while writing the audit line")

    @contextlib.contextmanager
    def connect(h):
        yield CountingTransport()

    (result,) = run(
        [HostPlan(host("a"), site(tmp_path))],
        connect,
        RunOptions(pending_handlers=str(tmp_path / "pending")),
        finish=failing_audit,
    )
    assert result.count("changed") == 4 and result.count("skipped") == 0
    assert "after the run: connection lost" in result.error


def test_atomic_write_replaces_a_planted_link_instead_of_writing_through_it(tmp_path, go):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "app.conf"
    target.symlink_to(victim)
    (result,) = go([HostPlan(host("a"), [File(str(target), "managed\n", mode="0600")])])
    assert result.status == "changed"
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_text() == "managed\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir() if "vigil" in p.name] == []  # no temporary file left


def test_a_failed_fresh_login_reverts_over_the_open_session(tmp_path, go):
    config = tmp_path / "sshd_config"
    config.write_text("old\n")
    revert = ConfirmLogin([cmd("sh", "-c", 'cp "$1.vigil-previous" "$1"', "x", str(config))])
    change_it = File(str(config), "new\n", backup=True, notify=("confirm",))
    plans = [HostPlan(host("a"), [change_it], {"confirm": revert})]

    (locked_out,) = go(plans, RunOptions(login_check=lambda h, users: "as deploy: Permission denied (publickey)"))
    assert locked_out.status == "failed"
    assert "a fresh login failed after the change (as deploy: Permission denied (publickey))" in locked_out.error
    assert config.read_text() == "old\n"

    (fine,) = go(plans, RunOptions(login_check=lambda h, users: None))
    assert fine.status == "changed" and config.read_text() == "new\n"
    assert fine.operations[-1].summary == "fresh logins work"


SCRIPT_ERROR = (
    "`sh -c 'set -e\nmkdir -p \"$1\"\nchown app \"$1\"' vigil /srv/x` exited 1: chown: invalid user: 'app'\n"
    "second\n"
)


@pytest.mark.parametrize("error, shown", [
    # A whole shell script in the error: its start, then what went wrong.
    (SCRIPT_ERROR, "`sh -c 'set -e …` exited 1: chown: invalid user: 'app' (+1 line: -v)"),
    # An app's log with colours: the codes go, the first line stays.
    ("\x1b[32m[Nest] 41\x1b[39m  - \x1b[31mERROR\x1b[39m connect ECONNREFUSED\n\x1b[2mat TCP\x1b[0m\nat Socket\n",
     "[Nest] 41  - ERROR connect ECONNREFUSED (+2 lines: -v)"),
    ("`systemctl restart app.service` exited 5: Unit app.service not found.", None),
    ("\n\n  only line  \n", "only line"),
    ("x" * 300, "x" * 199 + "…"),
])
def test_an_error_is_shown_as_one_line(error, shown):
    assert brief(error) == (error if shown is None else shown)


def test_the_recap_shows_an_errors_first_line_and_v_all_of_it(tmp_path, go):
    script = "printf '\\033[31mline 0\\033[0m\\n' >&2; seq 3 | sed 's/^/line /' >&2; exit 1"
    failing = [Guarded([cmd("sh", "-c", script)], creates=str(tmp_path / "never"))]
    results = go([HostPlan(host("a"), failing)])
    for verbose in (False, True):
        out = io.StringIO()
        reporter = Reporter(Environment(stdout=out, stderr=out), verbose=verbose)
        for op in results[0].operations:
            reporter.progress("a", op)
        reporter.recap("test", "unit", results)
        text = out.getvalue()
        assert "\x1b[31m" not in text and "line 0" in text
        assert ("line 3" in text) is verbose and ("+3 lines: -v" in text) is not verbose


def test_pending_handlers_are_root_only_and_never_re_mode_the_shared_directory(tmp_path):
    """/var/lib/vigil holds the probe's own directory and the backup status too: the engine must not shut it."""
    shared = tmp_path / "vigil"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    command = runner._remember_pending(str(shared / "pending-handlers"), ["reload nginx"])
    subprocess.run(list(command.argv), check=True, timeout=10)
    assert shared.stat().st_mode & 0o777 == 0o755
    assert (shared / "pending-handlers").read_text() == "reload nginx\n"
    assert (shared / "pending-handlers").stat().st_mode & 0o777 == 0o600


class TimeoutRecorder(LocalTransport):
    """Records each command with the timeout it is run with."""

    def __init__(self):
        self.runs = []

    def run(self, command, timeout=None):
        self.runs.append((command, timeout))
        return super().run(command, timeout)


@pytest.mark.parametrize("own, given", [
    (None, None),   # the host's command_timeout (the transport's default)
    (3600, 3600),   # waits by design longer than the host's 30 s
    (10, 30),       # shorter than the host's: the host's still holds
])
def test_a_command_that_waits_by_design_gets_its_own_timeout_or_the_hosts_if_longer(go, own, given, tmp_path):
    recorder = TimeoutRecorder()
    waiting = dataclasses.replace(cmd("true", sudo=False), timeout=own)

    @dataclass
    class Waits(Operation):
        name: str = "Wait for the cluster."

        def plan(self, known):
            return change("wait", waiting)

    [result] = go([HostPlan(host("db1"), [Waits()])], transports={"db1": recorder})
    assert result.status == "changed"
    assert [timeout for command, timeout in recorder.runs if command == waiting] == [given]
