"""Every operation's plan, table-driven from tests/unit/operations/cases/<module>.yml (no SSH): one case
file per plugin module of vigil.operations, read whole by one test."""

import shlex
import subprocess
from pathlib import Path

import pytest

from tests.support.cases import build_operation, case_id, parsed_value, read_cases
from vigil.core.commands import Command, Secret
from vigil.core.operations import OperationError, render_template
from vigil.facts.files import FileState
from vigil.facts.systemd import UnitState
from vigil.operations import files
from vigil.operations.apt import AptPackages
from vigil.operations.files import File, Line
from vigil.operations.guarded import Guarded
from vigil.operations.system import Swapfile
from vigil.operations.systemd import ServiceAction, SystemdUnit

CASES = read_cases(Path(__file__).parent / "cases")
ATOMIC_WRITE = f"sh -c {shlex.quote(files._ATOMIC_WRITE)} vigil"
# What a case need not spell out: a file's parent directory is root's own, a unit it does not mention is
# not installed.
DEFAULT_FACTS = {
    "file:": FileState("directory", "0755", "root", "root"),
    "unit:": UnitState("not-found", "inactive", "", False),
}
ROOT_DIRECTORY = DEFAULT_FACTS["file:"]


def expand(command: str) -> str:
    return command.replace("ATOMIC_WRITE", ATOMIC_WRITE)


@pytest.mark.parametrize("module, case", CASES, ids=[case_id(module, case) for module, case in CASES])
def test_operation_plan(module, case):
    operation = build_operation(module, case)
    asked = {fact.key: fact for fact in operation.facts()}
    known = {key: parsed_value(asked[key], value) if key in asked else value for key, value in case["facts"].items()}
    for key in asked:
        default = next((value for prefix, value in DEFAULT_FACTS.items() if key.startswith(prefix)), None)
        if key not in known and default is not None:
            known[key] = default
    # Every fact the plan reads must be one the operation asked for.
    assert set(asked) <= set(known), f"the case gives no value for {sorted(set(asked) - set(known))}"

    if "error" in case:
        with pytest.raises(OperationError, match=case["error"]):
            operation.plan(known)
        return
    plan = operation.plan(known)
    if "noop" in case:
        assert not plan.changes
        assert plan.reason == case["noop"]
        return
    assert plan.changes
    assert plan.summary == case["summary"]
    if "commands" in case:
        assert [command.display("root") for command in plan.commands] == [expand(c) for c in case["commands"]]
    if "content" in case:
        (write,) = plan.commands
        assert write.stdin == case["content"].encode()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: File("/etc/x", "", mode="rwx"), "octal"),
        (lambda: AptPackages(["curl; rm -rf /"]), "not a Debian package name"),
        (lambda: SystemdUnit("$(id).service"), "not a systemd unit name"),
        (lambda: ServiceAction("ssh.service", "explode"), "unknown service action"),
        (lambda: Guarded([Command(("true",))]), "not idempotent"),
        (lambda: Line("/etc/x", "a\nb"), "newline"),
        (lambda: Swapfile("/swapfile", 0), "positive"),
    ],
)
def test_operation_refuses_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_file_diff_shows_change_but_hides_secret_content():
    known = {"file:/etc/app.env": FileState("file", "0600", "app", "app", 10, "00", content=b"JWT=old-value\n"),
             "file:/etc": ROOT_DIRECTORY}
    plain = File("/etc/app.env", "JWT=new-value\n", owner="app", group="app", mode="0600").plan(known)
    assert "-JWT=old-value" in plain.diff and "+JWT=new-value" in plain.diff
    hidden = File("/etc/app.env", "JWT=new-value\n", owner="app", group="app", mode="0600", secret=True).plan(known)
    assert "new-value" not in hidden.diff and "old-value" not in hidden.diff
    assert "***" in hidden.diff


def test_template_rendering_refuses_undefined_variables():
    assert render_template("{{ a }}-{{ b }}\n", {"a": 1, "b": 2}) == "1-2\n"
    with pytest.raises(Exception, match="'b' is undefined"):
        render_template("{{ a }}-{{ b }}", {"a": 1})


def test_file_holding_a_registered_secret_hides_its_diff_even_unmarked():
    Secret("s3cret-db-pass")
    known = {"file:/etc/app.env": FileState(None), "file:/etc": ROOT_DIRECTORY}
    plan = File("/etc/app.env", "DB_PASSWORD=s3cret-db-pass\n").plan(known)
    assert "s3cret-db-pass" not in plan.diff and "content hidden" in plan.diff


FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$CALLS"
n=$(wc -l < "$CALLS")
case "$OUTCOMES" in *"$n:ok"*) exit 0 ;; esac
case "$OUTCOMES" in
  *"$n:resources"*) echo "Job for app@green.service failed because of unavailable resources \
or another system error." >&2; exit 1 ;;
  *) echo "Job for app@green.service failed because the control process exited with error code." >&2; exit 3 ;;
esac
"""


@pytest.mark.parametrize("outcomes, calls, status, said", [
    ("1:ok", 1, 0, ""),
    # systemd could not spawn it (a restart moments after a stop, in a container): once more, later.
    ("1:resources 2:ok", 2, 0, ""),
    ("1:resources 2:resources", 2, 1, "unavailable resources"),
    # The unit itself failed: that stands, with systemctl's words and exit code.
    ("1:exit", 1, 3, "control process exited"),
])
def test_a_service_action_is_retried_once_only_when_systemd_could_not_spawn_it(tmp_path, outcomes, calls, status, said):
    (tmp_path / "systemctl").write_text(FAKE_SYSTEMCTL)
    (tmp_path / "systemctl").chmod(0o755)
    (action,) = ServiceAction("app@*.service", "try-reload-or-restart").plan({}).commands
    done = subprocess.run(
        list(action.argv),
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "OUTCOMES": outcomes},
    )
    assert done.returncode == status
    assert (tmp_path / "calls").read_text().splitlines() == ["try-reload-or-restart app@*.service"] * calls
    assert said in done.stderr
