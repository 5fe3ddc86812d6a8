"""Every operation's plan, table-driven from tests/unit/cases/operations.yml (no SSH)."""

import hashlib
import shlex
from pathlib import Path

import pytest
import yaml

from vigil import facts as F
from vigil import operations
from vigil.commands import Command, Secret

CASES = yaml.safe_load((Path(__file__).parent / "cases" / "operations.yml").read_text())


def build_fact(key, value):
    """Turn a case's plain fact value into the parsed type the fact's parser returns."""
    kind = key.split(":", 1)[0]
    if kind == "file":
        value = dict(value)
        if "content" in value:
            if isinstance(value["content"], str):
                value["content"] = value["content"].encode()
            value.setdefault("sha256", hashlib.sha256(value["content"]).hexdigest())
        return F.FileState(**value)
    if kind == "user":
        return F.UserState(**{**value, "groups": tuple(value.get("groups", ()))})
    if kind == "unit":
        return F.UnitState(**value)
    return value


def build_operation(case):
    args = dict(case["args"])
    if case["op"] == "Guarded":
        args["commands"] = [Command(tuple(argv)) for argv in args["commands"]]
        if "unless" in args:
            args["unless"] = Command(tuple(args["unless"]))
    return getattr(operations, case["op"])(**args)


ATOMIC_WRITE = f"sh -c {shlex.quote(operations._ATOMIC_WRITE)} vigil"
ROOT_DIRECTORY = F.FileState("directory", "0755", "root", "root")


def expand(command: str) -> str:
    return command.replace("ATOMIC_WRITE", ATOMIC_WRITE)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_operation_plan(case):
    operation = build_operation(case)
    known = {key: build_fact(key, value) for key, value in case["facts"].items()}
    for fact in operation.facts():
        if fact.key not in known and fact.key.startswith("file:"):
            known[fact.key] = ROOT_DIRECTORY  # a parent directory the case does not describe
        if fact.key not in known and fact.key.startswith("unit:"):
            known[fact.key] = F.UnitState("not-found", "inactive", "", False)  # a unit the case does not mention
    # Every fact the plan reads must be one the operation asked for.
    assert {fact.key for fact in operation.facts()} <= set(known) | {"apt:installed", "apt:cache-age"}

    if "error" in case:
        with pytest.raises(operations.OperationError, match=case["error"]):
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
        (lambda: operations.File("/etc/x", "", mode="rwx"), "octal"),
        (lambda: operations.AptPackages(["curl; rm -rf /"]), "not a Debian package name"),
        (lambda: operations.SystemdUnit("$(id).service"), "not a systemd unit name"),
        (lambda: operations.ServiceAction("ssh.service", "explode"), "unknown service action"),
        (lambda: operations.Guarded([Command(("true",))]), "not idempotent"),
        (lambda: operations.Line("/etc/x", "a\nb"), "newline"),
        (lambda: operations.Swapfile("/swapfile", 0), "positive"),
    ],
)
def test_operation_refuses_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_file_diff_shows_change_but_hides_secret_content():
    known = {"file:/etc/app.env": F.FileState("file", "0600", "app", "app", 10, "00", content=b"JWT=old-value\n"),
             "file:/etc": ROOT_DIRECTORY}
    plain = operations.File("/etc/app.env", "JWT=new-value\n", owner="app", group="app", mode="0600").plan(known)
    assert "-JWT=old-value" in plain.diff and "+JWT=new-value" in plain.diff
    hidden = operations.File("/etc/app.env", "JWT=new-value\n", owner="app", group="app", mode="0600", secret=True).plan(known)
    assert "new-value" not in hidden.diff and "old-value" not in hidden.diff
    assert "***" in hidden.diff


def test_template_rendering_refuses_undefined_variables():
    assert operations.render_template("{{ a }}-{{ b }}\n", {"a": 1, "b": 2}) == "1-2\n"
    with pytest.raises(Exception, match="'b' is undefined"):
        operations.render_template("{{ a }}-{{ b }}", {"a": 1})


def test_file_holding_a_registered_secret_hides_its_diff_even_unmarked():
    Secret("s3cret-db-pass")
    known = {"file:/etc/app.env": F.FileState(None), "file:/etc": ROOT_DIRECTORY}
    plan = operations.File("/etc/app.env", "DB_PASSWORD=s3cret-db-pass\n").plan(known)
    assert "s3cret-db-pass" not in plan.diff and "content hidden" in plan.diff


FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$CALLS"
n=$(wc -l < "$CALLS")
case "$OUTCOMES" in *"$n:ok"*) exit 0 ;; esac
case "$OUTCOMES" in
  *"$n:resources"*) echo "Job for app@green.service failed because of unavailable resources or another system error." >&2; exit 1 ;;
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
    import subprocess
    (tmp_path / "systemctl").write_text(FAKE_SYSTEMCTL)
    (tmp_path / "systemctl").chmod(0o755)
    (action,) = operations.ServiceAction("app@*.service", "try-reload-or-restart").plan({}).commands
    done = subprocess.run(list(action.argv), capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "OUTCOMES": outcomes})
    assert done.returncode == status
    assert (tmp_path / "calls").read_text().splitlines() == ["try-reload-or-restart app@*.service"] * calls
    assert said in done.stderr
