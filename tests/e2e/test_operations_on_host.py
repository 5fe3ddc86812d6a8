"""Every operation type applied to a real Debian VPS through the runner: converge, then 0 changed."""


import pytest

from tests.support.sandbox_hosts import INVENTORY, SANDBOX_KEY
from vigil.core.commands import Secret, cmd
from vigil.core.connectors.ssh import SSHTransport
from vigil.core.inventory import load_inventory
from vigil.core.runner import HostPlan, RunOptions, run
from vigil.operations.files import Directory, File, Line, Symlink
from vigil.operations.guarded import Guarded
from vigil.operations.systemd import ServiceAction, SystemdUnit
from vigil.operations.users import User

BASE = "/srv/vigil-e2e"
UNIT = "vigil-e2e.service"


def unit_file(description: str) -> str:
    return (
        f"[Unit]\nDescription={description}\n\n"
        "[Service]\nExecStart=/bin/sleep infinity\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def operations(description: str, secret_value: str):
    return [
        User(
            "vigile2e",
            shell="/usr/sbin/nologin",
            home=f"{BASE}/home",
            authorized_keys=[SANDBOX_KEY.with_suffix(".pub").read_text().strip()],
        ),
        Directory(f"{BASE}/shared", owner="vigile2e", group="vigile2e", mode="0750"),
        File(
            f"{BASE}/shared/app.env",
            f"JWT_SECRET={secret_value}\n",
            owner="vigile2e",
            group="vigile2e",
            mode="0600",
            secret=True,
            notify=("restart e2e",),
        ),
        Symlink(f"{BASE}/current", f"{BASE}/shared"),
        Line(f"{BASE}/limits.conf", "workers = 2", regexp=r"^workers\s*="),
        File(f"/etc/systemd/system/{UNIT}", unit_file(description), notify=("restart e2e",)),
        SystemdUnit(UNIT, enabled=True, running=True),
        Guarded([cmd("touch", f"{BASE}/initialised")], creates=f"{BASE}/initialised"),
    ]


class Counting(SSHTransport):
    calls = 0

    def run(self, command, timeout=None):
        Counting.calls += 1
        return super().run(command, timeout)


def apply(ops, **options):
    inventory = load_inventory("sandbox")
    host = inventory.hosts["vps2"].as_admin()
    plan = HostPlan(host, ops, {"restart e2e": ServiceAction(UNIT, "restart")})
    Counting.calls = 0
    (result,) = run([plan], lambda h: Counting(h, INVENTORY / "sandbox.known_hosts", "sandbox"), RunOptions(**options))
    assert not result.failed, result.error or result.unreachable
    return result


@pytest.fixture
def clean_vps2(sandbox):
    sandbox.ssh("vps2", f"systemctl disable --now {UNIT} 2>/dev/null; rm -f /etc/systemd/system/{UNIT}; "
                        f"systemctl daemon-reload; userdel vigile2e 2>/dev/null; rm -rf {BASE}")
    yield
    sandbox.ssh("vps2", f"systemctl disable --now {UNIT} 2>/dev/null; rm -f /etc/systemd/system/{UNIT}; "
                        f"systemctl daemon-reload; userdel vigile2e 2>/dev/null; rm -rf {BASE}")


def main_pid(sandbox):
    return sandbox.ssh("vps2", f"systemctl show -p MainPID --value {UNIT}").strip()


def test_operations_converge_then_change_nothing(sandbox, clean_vps2):
    secret = "e2e-secret-5be1c0"
    Secret(secret)
    first = apply(operations("first", secret), diff=True)
    assert [op.status for op in first.operations] == ["changed"] * 9  # 8 operations, then the handler
    assert first.operations[-1].name == f"Restart {UNIT}."
    # The secret file's diff hides its content.
    assert all(secret not in (op.diff or "") for op in first.operations)

    assert sandbox.ssh("vps2", "getent passwd vigile2e | cut -d: -f6,7").strip() == f"{BASE}/home:/usr/sbin/nologin"
    assert sandbox.ssh("vps2", f"stat -c '%U %a' {BASE}/shared/app.env {BASE}/home/.ssh/authorized_keys").split("\n")[
        :2
    ] == ["vigile2e 600", "vigile2e 600"]
    assert sandbox.ssh("vps2", f"cat {BASE}/shared/app.env") == f"JWT_SECRET={secret}\n"
    assert sandbox.ssh("vps2", f"readlink {BASE}/current").strip() == f"{BASE}/shared"
    assert sandbox.ssh("vps2", f"systemctl is-enabled {UNIT}; systemctl is-active {UNIT}").split() == [
        "enabled",
        "active",
    ]
    pid = main_pid(sandbox)

    second = apply(operations("first", secret))
    assert second.count("changed") == 0 and len(second.operations) == 8  # no handler either
    assert Counting.calls == 1  # one round trip: every fact in one batch, nothing else
    assert main_pid(sandbox) == pid

    # Editing the unit file reloads systemd and restarts the service, once.
    third = apply(operations("second", secret))
    changed = [op.name for op in third.operations if op.status == "changed"]
    assert changed == [
        f"Ensure /etc/systemd/system/{UNIT} has the managed content.",
        f"Ensure {UNIT} is enabled and running.",
        f"Restart {UNIT}.",
    ]
    assert "daemon-reload" in third.operations[6].summary
    assert sandbox.ssh("vps2", f"systemctl show -p Description --value {UNIT}").strip() == "second"
    assert main_pid(sandbox) != pid


def test_check_mode_on_a_fresh_host_plans_everything_and_creates_nothing(sandbox, clean_vps2):
    result = apply(operations("first", "e2e-secret-5be1c0"), check=True)
    assert result.count("changed") >= 7
    assert sandbox.ssh("vps2", f"test -e {BASE} && echo yes || echo no; getent passwd vigile2e || true").split() == [
        "no"
    ]
