"""The deploy's preflight: what would stop a deploy on a host is found before anything is built or backed
up, by a read-only script (run here with a fake sudo and df) asked of every host at once."""

import contextlib
import dataclasses
import os
import re
import subprocess
import time

import pytest

from tests.unit.deploy.test_executor import vars_with
from vigil.core.connectors import Result
from vigil.core.errors import ExitCode, UnreachableError
from vigil.core.inventory import Host, Inventory
from vigil.deploy.preflight import PreflightFailed, parse_problems, preflight, preflight_command
from vigil.deploy.settings import SERVED_COLORS_HELPER, SWITCH_HELPER, UNIT_HELPER, settings_from_vars

# sudo -n -l allows what $SUDO_ALLOWS lists; df reports $FREE_MB free.
FAKES = {
    "sudo": '#!/bin/sh\ncase " $SUDO_ALLOWS " in *" $4 "*) exit 0 ;; esac\necho "a password is required" >&2; exit 1\n',
    "df": '#!/bin/sh\necho "Filesystem 1M-blocks Used Available Capacity Mounted"\n'
          'echo "/dev/x 1000 100 $FREE_MB 10% /"\n',
}


def settings_in(tmp_path):
    base = tmp_path / "srv" / "backend"
    base.mkdir(parents=True)
    settings = settings_from_vars(vars_with(app_root=str(tmp_path / "srv")), "backend")
    return dataclasses.replace(settings, layout=dataclasses.replace(settings.layout, root=str(tmp_path / "srv")))


def run_preflight(tmp_path, settings, check_lock=True, sudo_allows=f"{UNIT_HELPER} {SWITCH_HELPER}", free_mb=2000,
                  boot_helper=True):
    for name, body in FAKES.items():
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)
    # The boot helper roles/app installs, here or not: the command asks for it at a scratch path.
    boot = tmp_path / "vigil-start-served-colors"
    if boot_helper:
        boot.write_text("#!/bin/sh\n")
        boot.chmod(0o755)
    command = preflight_command(settings, check_lock)
    argv = [str(boot) if arg == SERVED_COLORS_HELPER else arg for arg in command.argv]
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SUDO_ALLOWS": sudo_allows, "FREE_MB": str(free_mb)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    return parse_problems(done.stdout)


def test_a_ready_host_has_nothing_to_say(tmp_path):
    assert run_preflight(tmp_path, settings_in(tmp_path)) == []


@pytest.mark.parametrize("change, problem", [
    ({"sudo_allows": UNIT_HELPER}, f"may not run {SWITCH_HELPER} without a password"),
    ({"free_mb": 100}, "disk: 100 MiB free under "),
    # Onboarded before the boot helper: a reboot would start the color a deploy last enabled.
    ({"boot_helper": False}, "vigil-start-served-colors is missing, so a reboot would not start the color nginx "
                             "serves (run provision.server first)"),
])
def test_what_would_stop_the_deploy_is_named(tmp_path, change, problem):
    problems = run_preflight(tmp_path, settings_in(tmp_path), **change)
    assert len(problems) == 1 and problem in problems[0]


@pytest.mark.parametrize("silent, check_lock, held", [(5, True, True), (500, True, False), (5, False, False)])
def test_a_live_lock_stops_a_deploy_that_does_not_wait(tmp_path, silent, check_lock, held):
    settings = settings_in(tmp_path)
    lock = tmp_path / "srv" / "backend" / ".deploy-lock"
    lock.mkdir()
    (lock / "owner.json").write_text('{"who": "alice@laptop", "since": "2026-11-26T01:00:00Z"}\n')
    then = time.time() - silent
    os.utime(lock, (then, then))
    problems = run_preflight(tmp_path, settings, check_lock=check_lock)
    if not held:
        assert problems == []
        return
    (problem,) = problems
    assert re.fullmatch(r"lock: another deploy holds it: alice@laptop since 2026-11-26T01:00:00Z, its heartbeat "
                        r"[5-7] s ago; wait for it with --lock-wait", problem), problem


class Answering:
    def __init__(self, answer: str):
        self.answer = answer

    def run(self, command, timeout=None):
        return Result(0, self.answer, "")


def test_every_host_is_asked_and_each_problem_named_by_host(tmp_path):
    settings = settings_in(tmp_path)
    hosts = [Host(name, "10.0.0.1", 22, "deploy", None, ("web",), 5, 30) for name in ("web1", "web2", "web3")]
    inventory = Inventory("sandbox", tmp_path / "sandbox.yml", tmp_path / "k", {h.name: h for h in hosts},
                          {"web": [h.name for h in hosts]}, {}, {}, {})
    answers = {"web1": "", "web2": "disk: 100 MiB free under /srv/backend, 512 MiB needed (app_min_free_mb)\n"}

    @contextlib.contextmanager
    def connector(host):
        if host.name == "web3":
            raise UnreachableError("web3", "connection refused")
        yield Answering(answers[host.name])

    with pytest.raises(PreflightFailed) as failed:
        preflight(inventory, hosts, {h.name: settings for h in hosts}, lock_wait=0, connector=connector)
    assert failed.value.problems == {"web2": [answers["web2"].strip()], "web3": ["unreachable: connection refused"]}
    assert failed.value.exit_code == ExitCode.HOST_FAILED
    assert "nothing was built, backed up or changed: web2: disk: 100 MiB free" in failed.value.message
    # All well: nothing raised.
    answers["web2"] = ""
    preflight(inventory, hosts[:2], {h.name: settings for h in hosts}, lock_wait=0, connector=connector)
