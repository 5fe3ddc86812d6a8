"""roles/users and roles/ssh: an admin user for provisioning, a deploy user scoped to deploys, the
helper that lets it act on the app's units only, and the lock-out check after an sshd change."""

import json
import re
import subprocess

import pytest

from tests.support.inventories import layout
from vigil.core.errors import ConfigError
from vigil.core.inventory import Host
from vigil.core.roles import load_role

# --- users: an admin for provisioning, a deploy user scoped to deploys -------------------------

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJ6mJdzBZ4cQ6Yh0XpB2a3Vn9y1x7S3dF0eKqL8t5Wm team"


def users_vars(admin_user="ops", **overrides):
    inventory = layout({"web": ["web1"]})
    host = inventory.hosts["web1"]
    host = Host(host.name, host.address, 22, "deploy", None, ("web",), 5, 30, admin_user=admin_user).as_admin()
    role = load_role("users")
    values = {"users_admin_authorized_keys": [KEY], "users_deploy_authorized_keys": [KEY], **overrides}
    return role, inventory.vars_for(host, [role], values)


@pytest.mark.parametrize("admin_user, overrides, message", [
    (None, {}, "web1 is provisioned as deploy, not as the admin user ops; set admin_user: ops"),
    ("ops", {"users_admin_user": "deploy"}, "the admin, deploy and app users must be three different users"),
    ("ops", {"users_admin_authorized_keys": []}, "users_admin_authorized_keys: no key for ops"),
    ("ops", {"users_deploy_units": ["-x.service"]}, "users_deploy_units: '-x.service' does not match"),
    ("ops", {"users_deploy_units": ["a b.service"]}, "does not match"),
])
def test_users_role_refuses_what_would_lock_out_or_unscope_the_deploy_user(admin_user, overrides, message):
    role, vars = users_vars(admin_user, **overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        role.tasks(role, vars)


def test_the_deploy_users_sudoers_allows_only_the_helper_and_nginx():
    role, vars = users_vars()
    files = {op.path: op.content.decode() for op in role.tasks(role, vars) if hasattr(op, "content")}
    assert "ops ALL=(ALL:ALL) NOPASSWD: ALL" in files["/etc/sudoers.d/vigil-ops"]
    deploy = [line for line in files["/etc/sudoers.d/vigil-deploy"].splitlines() if line and not line.startswith("#")]
    assert deploy == [
        "Cmnd_Alias VIGIL_DEPLOY = /usr/local/sbin/vigil-app-unit, /usr/local/sbin/vigil-switch-upstream, "
        "/usr/local/sbin/vigil-restore-point migrate, "
        "/usr/local/sbin/vigil-restore-point revert, /usr/sbin/nginx -t, /usr/bin/systemctl reload nginx.service",
        "deploy ALL=(root) NOPASSWD: VIGIL_DEPLOY",
        "Defaults:deploy !requiretty",
    ]


def app_unit_helper(tmp_path, systemctl):
    """The real vigil-app-unit, with systemctl swapped for a shell script (`systemctl`'s body) and
    journalctl for echo, so what it would run shows."""
    role, vars = users_vars()
    helper = next(op for op in role.tasks(role, vars) if getattr(op, "path", "") == "/usr/local/sbin/vigil-app-unit")
    fake = tmp_path / "systemctl"
    fake.write_text("#!/bin/sh\n" + systemctl)
    fake.chmod(0o755)
    script = tmp_path / "vigil-app-unit"
    script.write_text(helper.content.decode().replace("/usr/bin/systemctl", str(fake))
                      .replace("exec /usr/bin/journalctl", "exec echo journalctl")
                      .replace("exec /usr/bin/systemd-run", "exec echo systemd-run")
                      .replace("/var/log/vigil", str(tmp_path / "log")))
    return script


@pytest.mark.parametrize(
    "args, code, output",
    [
        (
            ["restart", "together-pray-backend@blue.service"],
            0,
            "systemctl --no-pager restart -- together-pray-backend@blue.service",
        ),
        (
            ["is-active", "together-pray-backend@blue.service", "together-pray-frontend@green.service"],
            0,
            "systemctl --no-pager is-active -- together-pray-backend@blue.service together-pray-frontend@green.service",
        ),
        # Which color a boot starts is the upstream's (roles/app's served-colors unit): no link to move.
        (["enable", "together-pray-backend@blue.service"], 64, "usage: vigil-app-unit"),
        (["restart", "ssh.service"], 77, "ssh.service is not one of the app's units"),
        (
            ["restart", "together-pray-backend@blue.service", "ssh.service"],
            77,
            "ssh.service is not one of the app's units",
        ),
        (["restart", "together-pray-x.service;reboot"], 77, "is not a unit name"),
        (["restart", "--root=/tmp", "together-pray-backend.service"], 77, "is not a unit name"),
        (["restart", "together-pray-../../x.service"], 77, "is not a unit name"),
        # Logs of the app's units only, instead of the whole journal.
        (
            ["logs", "together-pray-backend@blue.service", "together-pray-backend-migrate@r9.service"],
            0,
            "journalctl --quiet --no-pager --output=cat --lines=300 --unit=together-pray-backend@blue.service "
            "--unit=together-pray-backend-migrate@r9.service",
        ),
        (["logs", "ssh.service"], 77, "ssh.service is not one of the app's units"),
        (["logs", "--since=-1y", "together-pray-backend@blue.service"], 77, "is not a unit name"),
        # Root's trail, read only: a host where no deploy has asked anything yet answers nothing.
        (["trail"], 0, ""),
        # A color kept running for the rollback window: a transient timer named after it stops it later.
        (
            ["stop-after", "1800", "together-pray-backend@blue.service"],
            0,
            "systemd-run --quiet --unit=vigil-stop-together-pray-backend-blue --on-active=1800s "
            "--timer-property=AccuracySec=1s ",
        ),
        (["stop-after", "1800", "ssh.service"], 77, "ssh.service is not one of the app's units"),
        (["stop-after", "30m", "together-pray-backend@blue.service"], 64, "'30m' is not a number of seconds"),
        (["stop-after", "0", "together-pray-backend@blue.service"], 64, "0 s is not between 1 s and a day"),
        (["stop-after", "1800", "together-pray-backend@blue.service", "together-pray-backend@green.service"], 64,
         "usage"),
        (["trail", "together-pray-backend@blue.service"], 64, "usage"),
        (["edit", "together-pray-backend.service"], 64, "usage"),
        (["daemon-reload"], 64, "usage"),
    ],
)
def test_the_app_unit_helper_acts_on_the_apps_units_only(tmp_path, args, code, output):
    script = app_unit_helper(tmp_path, 'echo systemctl "$@"\n')
    result = subprocess.run(["sh", str(script), *args], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "SUDO_USER": "deploy"})
    assert result.returncode == code and output in (result.stdout + result.stderr)
    # Root's own record of each change the deploy user asked for; nothing for a read or a refusal.
    trail = tmp_path / "log" / "deploy-actions.jsonl"
    recorded = [json.loads(line) for line in trail.read_text().splitlines()] if trail.exists() else []
    if code == 0 and args[0] not in ("is-active", "status", "logs", "trail"):
        (line,) = recorded
        assert (line["by"], line["helper"], line["action"], line["args"]) == (
            "deploy", "vigil-app-unit", args[0], " ".join(args[1:]))
        # Starting, stopping or timing a color's stop first cancels the stop a rollback window timed for it.
        cancels = "systemctl --quiet stop -- vigil-stop-together-pray-backend-blue.timer" in result.stdout
        assert cancels == (args[0] in ("restart", "stop-after"))
        assert trail.stat().st_mode & 0o777 == 0o640
    else:
        assert recorded == []


# A fake systemctl whose first restart fails with the unit's Result as given, and whose later
# starts succeed; it logs every call.
FAILING_ONCE = """echo "$*" >> "$(dirname "$0")/calls"
case "$*" in
    show*) echo {result} ;;
    *restart*) exit 1 ;;
esac
"""


# What starting a color does first: cancel the stop its rollback window timed (none here).
CANCEL_STOP = ["--quiet stop -- vigil-stop-together-pray-backend-green.timer",
               "--quiet reset-failed -- vigil-stop-together-pray-backend-green.timer "
               "vigil-stop-together-pray-backend-green.service"]


@pytest.mark.parametrize(
    "result, code, calls",
    [
        # systemd could not spawn it (its cgroup reuse race): reset, then one more start.
        ("resources", 0, [*CANCEL_STOP, "--no-pager restart -- U", "show --property=Result --value -- U",
                          "reset-failed -- U", "--no-pager start -- U"]),
        # The app itself failed: no second try, and the failure stands.
        ("exit-code", 1, [*CANCEL_STOP, "--no-pager restart -- U", "show --property=Result --value -- U"]),
    ],
)
def test_the_app_unit_helper_starts_once_more_only_what_systemd_could_not_spawn(tmp_path, result, code, calls):
    unit = "together-pray-backend@green.service"
    script = app_unit_helper(tmp_path, FAILING_ONCE.format(result=result))
    run = subprocess.run(["sh", str(script), "restart", unit], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "SUDO_USER": "deploy"})
    assert run.returncode == code, run.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [call.replace("U", unit) for call in calls]


def test_the_app_unit_helper_shows_the_newest_lines_of_roots_trail(tmp_path):
    role, vars = users_vars()
    helper = next(op for op in role.tasks(role, vars) if getattr(op, "path", "") == "/usr/local/sbin/vigil-app-unit")
    script = tmp_path / "vigil-app-unit"
    script.write_text(helper.content.decode().replace("/var/log/vigil", str(tmp_path / "log")))
    (tmp_path / "log").mkdir()
    lines = [json.dumps({"action": "restart", "n": n}) for n in range(250)]
    (tmp_path / "log" / "deploy-actions.jsonl").write_text("\n".join(lines) + "\n")
    result = subprocess.run(["sh", str(script), "trail"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stdout.splitlines() == lines[-200:]


@pytest.mark.parametrize("deploy_has_our_key, confirmed", [(True, ("deploy",)), (False, ())])
def test_the_lock_out_check_logs_in_as_deploy_only_with_a_key_deploy_accepts(tmp_path, deploy_has_our_key, confirmed):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    ours = (tmp_path / "id.pub").read_text().strip()
    inventory = layout({"web": ["web1"]})
    host = Host("web1", "203.0.113.1", 22, "deploy", tmp_path / "id", ("web",), 5, 30, admin_user="ops").as_admin()
    ssh_role, users_role = load_role("ssh"), load_role("users")
    vars = inventory.vars_for(host, [users_role, ssh_role], {
        "users_admin_authorized_keys": [ours], "users_deploy_authorized_keys": [ours if deploy_has_our_key else KEY]})
    assert ssh_role.handlers(ssh_role, vars)["confirm ssh login"].also_users == confirmed


