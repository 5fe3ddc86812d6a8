"""provision.server on real sandbox VPSes: convergence, idempotency, check mode, parallel hosts."""

from tests.support.sandbox_hosts import REPO, SESSION_HOSTS, invoke

LOCAL_AUDIT = REPO / ".vigil" / "audit.log"


def local_audit_lines() -> list[str]:
    return LOCAL_AUDIT.read_text().splitlines() if LOCAL_AUDIT.exists() else []


def test_first_run_converges_every_host(provisioned, sandbox):
    first, _ = provisioned
    assert first.code == 0, first.stderr
    for name in SESSION_HOSTS:
        host = first.host(name)
        assert host["status"] in ("ok", "changed") and host["failed"] == 0
        # Read the host back: what the base role promises is really there.
        assert sandbox.ssh(name, "readlink /etc/localtime").strip() == "/usr/share/zoneinfo/Etc/UTC"
        assert sandbox.ssh(name, "cat /etc/timezone") == "Etc/UTC\n"
        assert f"{name} - Together Pray (sandbox)" in sandbox.ssh(name, "cat /etc/motd")
        assert sandbox.ssh(name, "dpkg-query -W -f '${Status}' unattended-upgrades") == "install ok installed"
        assert sandbox.ssh(
            name, "systemctl is-enabled unattended-upgrades; systemctl is-active unattended-upgrades"
        ).split() == ["enabled", "active"]
        assert 'Unattended-Upgrade "1"' in sandbox.ssh(name, "cat /etc/apt/apt.conf.d/20auto-upgrades")


def test_second_run_reports_zero_changed(provisioned):
    _, second = provisioned
    assert second.code == 0, second.stderr
    for name in SESSION_HOSTS:
        host = second.host(name)
        assert (host["status"], host["changed"], host["failed"]) == ("ok", 0, 0), host
        assert host["ok"] == len(host["operations"]) > 0


def test_two_hosts_run_in_parallel(provisioned):
    first, _ = provisioned
    vps1, vps2 = first.host("vps1"), first.host("vps2")
    assert vps1["started"] < vps2["finished"] and vps2["started"] < vps1["finished"]


def test_mutating_runs_leave_an_audit_line_on_each_host(provisioned, sandbox):
    before, local_before = sandbox.audit_lines("vps1"), len(local_audit_lines())
    assert before >= 2
    run = invoke("provision.server", "--json", "--limit=vps1")
    assert run.code == 0
    assert sandbox.audit_lines("vps1") == before + 1
    # And one line on the control machine for the whole run.
    assert len(local_audit_lines()) == local_before + 1
    assert '"hosts": ["vps1"]' in local_audit_lines()[-1] and '"task": "provision.server"' in local_audit_lines()[-1]
    last = sandbox.ssh("vps1", "tail -n1 /var/log/vigil/audit.log")
    assert '"task": "provision.server"' in last and '"env": "sandbox"' in last and '"who": ' in last


def test_check_mode_plans_but_changes_nothing(provisioned, sandbox):
    sandbox.ssh("vps1", "printf 'edited by hand\\n' > /etc/motd && rm -f /etc/timezone")
    audit_before, local_before = sandbox.audit_lines("vps1"), len(local_audit_lines())

    run = invoke("provision.server", "--json", "--check", "--diff", "--limit=vps1")
    assert run.code == 0, run.stderr
    ops = {op["name"]: op for op in run.host("vps1")["operations"]}
    assert ops["Ensure the login banner is managed."]["status"] == "changed"
    assert "-edited by hand" in ops["Ensure the login banner is managed."]["diff"]
    assert ops["Ensure /etc/timezone names the time zone."]["status"] == "changed"
    assert run.host("vps1")["changed"] == 2
    # The host is exactly as it was: nothing written, no audit line.
    assert sandbox.ssh("vps1", "cat /etc/motd") == "edited by hand\n"
    assert sandbox.ssh("vps1", "test -e /etc/timezone && echo present || echo absent").strip() == "absent"
    assert sandbox.audit_lines("vps1") == audit_before
    assert len(local_audit_lines()) == local_before

    # A real run repairs exactly those two.
    fixed = invoke("provision.server", "--json", "--limit=vps1")
    assert fixed.host("vps1")["changed"] == 2
    assert "vps1 - Together Pray" in sandbox.ssh("vps1", "cat /etc/motd")


def test_limit_to_a_group_touches_only_its_hosts(provisioned, sandbox):
    before = {name: sandbox.audit_lines(name) for name in ("vps1", "vps2")}
    run = invoke("provision.server", "--json", "--limit=db")
    assert [host["host"] for host in run.json["hosts"]] == ["vps1"]
    assert sandbox.audit_lines("vps1") == before["vps1"] + 1
    assert sandbox.audit_lines("vps2") == before["vps2"]
