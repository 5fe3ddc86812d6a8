"""incident.status and incident.maintenance on the session's deployed hosts (vps1: web and database, vps2: web,
vps3: the backup host)."""

import requests

from tests.support.sandbox_hosts import REPO, invoke
from vigil.core.errors import ExitCode

CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"


def checks(run, host: str) -> dict:
    report = next(entry for entry in run.json["hosts"] if entry["host"] == host)
    return {check["name"]: check for check in report["checks"]}


def test_status_is_healthy_then_names_a_stopped_backend_and_exits_non_zero(deployed, sandbox):
    assert invoke("backup.create", "--label=status").code == 0 and invoke("backup.verify", "latest").code == 0
    healthy = invoke("incident.status", "--json", timeout=300)
    assert healthy.code == 0, healthy.stdout[-3000:] + healthy.stderr
    assert healthy.json["verdict"] in ("healthy", "degraded")  # degraded: this machine's disk or load, never a failure
    vps1 = checks(healthy, "vps1")
    for name in ("nginx.service", "postgresql.service", "backend release", "frontend release", "backend health (https)",
                 "frontend page (https)", "TLS certificate"):
        assert vps1[name]["state"] == "ok", (name, vps1[name])
    # The backups are the backup host's: its repository's window, the backup just made, the drill just passed.
    vps3 = checks(healthy, "vps3")
    for name in ("repository", "last backup", "restore drill"):
        assert vps3[name]["state"] == "ok", (name, vps3[name])
    assert vps3["repository"]["detail"].startswith("restore to any second from "), vps3["repository"]
    live = next(name for name in vps1 if name.startswith("together-pray-backend@"))
    sandbox.ssh("vps1", f"systemctl stop {live}")
    try:
        down = invoke("incident.status", "--json", timeout=300)
        assert down.code == ExitCode.HOST_FAILED and down.json["verdict"] == "unhealthy"
        vps1 = checks(down, "vps1")
        assert (vps1[live]["state"], vps1[live]["detail"]) == ("fail", "inactive")
        assert vps1["backend release"]["state"] == "fail" and "is inactive" in vps1["backend release"]["detail"]
        assert vps1["backend health (https)"]["state"] == "fail"
        assert checks(down, "vps2")["backend health (https)"]["state"] == "ok"  # the other host is not blamed
    finally:
        sandbox.ssh("vps1", f"systemctl start {live}")


def test_maintenance_mode_serves_503_with_retry_after_and_goes_away(deployed, sandbox):
    address = sandbox.addresses["vps2"]
    on = invoke("incident.maintenance", "on", "--limit=vps2", "--json")
    assert on.code == 0, on.stdout + on.stderr
    try:
        page = requests.get(f"https://{address}/", verify=str(CA), timeout=10)
        assert page.status_code == 503 and page.headers["Retry-After"] == "300"
        again = invoke("incident.maintenance", "on", "--limit=vps2", "--json")
        assert again.code == 0 and again.json["hosts"][0]["changed"] == 0
        status = invoke("incident.status", "--json", "--limit=vps2", timeout=300)
        assert checks(status, "vps2")["maintenance mode"]["state"] == "warn"
    finally:
        off = invoke("incident.maintenance", "off", "--limit=vps2")
    assert off.code == 0, off.stdout + off.stderr
    assert requests.get(f"https://{address}/", verify=str(CA), timeout=10).status_code == 200


def test_logs_merge_both_hosts_journals_by_time(deployed, sandbox):
    run = invoke("incident.logs", "--service=backend", "--since=1 day ago", "--json", timeout=300)
    assert run.code == 0, run.stdout[-2000:] + run.stderr
    lines = run.json["lines"]
    started = [line for line in lines if "Nest application successfully started" in line]
    assert {line.split()[1] for line in started} == {"vps1", "vps2"}
    assert [line.split()[0] for line in lines] == sorted(line.split()[0] for line in lines)
    assert all(" together-pray-backend" in line for line in lines)
    refused = invoke("incident.logs", "--since=$(reboot)")
    assert refused.code == ExitCode.BAD_INPUT and "is not a time journalctl reads" in refused.stderr
