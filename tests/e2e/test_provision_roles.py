"""The onboarding roles seen from outside and inside the host: firewall, fail2ban, Node.js, PostgreSQL."""

import shlex
import socket
import subprocess

import pytest
import requests
from pyrage import x25519

from tests.support.sandbox_hosts import (
    REPO,
    SSH_OPTIONS,
    app_database_login,
    database_url_endpoint,
    invoke,
    ssh_as_root,
)
from vigil.core.errors import ExitCode
from vigil.vault.env_files import render_dotenv
from vigil.vault.store import encrypt, load


def connect(address: str, port: int, timeout: float = 3.0) -> str:
    """'open', 'refused' (a host answered: nothing listens) or 'filtered' (no answer: a firewall dropped it)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "filtered"


@pytest.fixture
def listener_on_8080(sandbox):
    sandbox.ssh("vps2", "nohup timeout 120 python3 -m http.server 8080 --bind 0.0.0.0 >/dev/null 2>&1 & "
                        "echo $! > /tmp/http8080.pid; sleep 1")
    assert sandbox.ssh("vps2", "ss -ltn | grep -c ':8080 '").strip() == "1"
    yield
    sandbox.ssh("vps2", "kill $(cat /tmp/http8080.pid) 2>/dev/null; rm -f /tmp/http8080.pid")


def test_only_ssh_and_the_web_ports_are_open_from_outside(provisioned, sandbox, listener_on_8080):
    address = sandbox.addresses["vps2"]
    assert connect(address, 22) == "open"
    assert connect(address, 80) == "open" and connect(address, 443) == "open"
    assert connect(address, 8080) == "filtered"  # a service listens, the firewall drops it
    rules = sandbox.ssh("vps2", "ufw status")
    assert "Status: active" in rules and "22/tcp                     LIMIT" in rules


def test_fail2ban_watches_sshd(provisioned, sandbox):
    assert "Status for the jail: sshd" in sandbox.ssh("vps1", "fail2ban-client status sshd")


def test_node_satisfies_the_engines_and_a_mismatch_is_a_clear_error(provisioned, sandbox):
    assert sandbox.ssh("vps2", "node --version").startswith("v2")
    run = invoke("provision.server", "--json", "--limit=vps2", "--var", "nodejs_engines=>=99")
    assert run.code == ExitCode.HOST_FAILED
    assert "does not satisfy engines.node '>=99' of --var nodejs_engines" in run.host("vps2")["error"]


def test_postgresql_answers_only_the_web_hosts_and_the_app_role_logs_in_with_the_secret(provisioned, sandbox):
    # vps1 is the db host and a web host; vps2, the other web host, reaches it on its address.
    assert sandbox.ssh("vps1", "ss -ltnH 'sport = :5432' | awk '{print $4}' | sort").split() == [
        "10.213.1.2:5432", "127.0.0.1:5432", "[::1]:5432"]
    assert connect(sandbox.addresses["vps1"], 5432) == "filtered"  # the control machine is not a web host
    pushed = invoke("secrets.push", "--limit=vps1,vps2")
    assert pushed.code == 0, pushed.stdout + pushed.stderr
    assert database_url_endpoint(sandbox.addresses["vps1"]) == "127.0.0.1:5432/together_pray"
    assert database_url_endpoint(sandbox.addresses["vps2"]) == (
        "10.213.1.2:5432/together_pray?sslmode=verify-full&sslrootcert=/etc/together-pray/database-server.crt")
    assert app_database_login(sandbox.addresses["vps2"]) == "together_pray|t"  # over TLS, the server verified
    # Verification is real: the same login against another certificate is refused.
    assert "certificate verify failed" in app_database_login(
        sandbox.addresses["vps2"], rootcert="/etc/ssl/certs/ssl-cert-snakeoil.pem"
    )
    assert "no encryption" in app_database_login(sandbox.addresses["vps2"], sslmode="disable")  # hostssl only
    password = load("sandbox")["DB_PASSWORD"]

    def login(secret: str) -> str:
        # The password reaches psql through a 0600 .pgpass written from stdin, never argv or env.
        written = ssh_as_root(sandbox.addresses["vps1"], ["sh", "-c", "umask 077; cat > /root/.pgpass"],
                              f"127.0.0.1:5432:together_pray:together_pray:{secret}\n")
        assert written.returncode == 0, written.stderr
        return sandbox.ssh(
            "vps1",
            "psql -w -h 127.0.0.1 -U together_pray together_pray -tAc 'select current_user' 2>&1; rm -f /root/.pgpass",
            check=False,
        ).strip()

    assert login(password) == "together_pray"
    assert "password authentication failed" in login("wrong-password-123")
    assert sandbox.ssh("vps1", "su postgres -c \"psql -tAc 'show password_encryption'\"").strip() == "scram-sha-256"


def test_a_package_that_fails_on_one_host_leaves_the_others_and_a_rerun_recovers(provisioned, sandbox, tmp_path):
    def broken(data):
        data["hosts"]["vps2"]["vars"]["base_packages"] = ["curl", "no-such-package-vigil"]

    inventory = sandbox.scratch_inventory(tmp_path, broken)
    run = invoke("provision.server", "--json", "--limit=vps1,vps2", inventory=inventory)
    assert run.code == ExitCode.HOST_FAILED
    failed = run.host("vps2")
    assert failed["status"] == "failed" and "no-such-package-vigil" in failed["error"]
    assert failed["operations"][0]["status"] == "failed"
    assert all(op["status"] == "skipped" for op in failed["operations"][1:])
    assert run.host("vps1")["status"] == "ok"
    again = invoke("provision.server", "--json", "--limit=vps2")
    assert again.code == 0 and again.host("vps2")["failed"] == 0


def test_a_missing_secret_fails_only_the_host_that_needs_it_and_a_rerun_recovers(provisioned, sandbox, tmp_path):
    # The sandbox's own secrets without DB_PASSWORD, in a scratch secrets/ with its own key:
    # only the db host (vps1) needs that secret.
    values = {key: value for key, value in load("sandbox").items() if key != "DB_PASSWORD"}
    identity = x25519.Identity.generate()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "schema.yml").write_text((REPO / "secrets" / "schema.yml").read_text())
    (tmp_path / "secrets" / "sandbox.env.age").write_bytes(encrypt(render_dotenv(values), [str(identity.to_public())]))
    scratch = {"VIGIL_SECRETS": str(tmp_path / "secrets"), "VIGIL_AGE_IDENTITY": str(identity)}
    before = sandbox.audit_lines("vps1")

    run = invoke("provision.server", "--json", "--limit=vps1,vps2", extra_env=scratch)
    assert run.code == ExitCode.HOST_FAILED, run.stderr
    failed = run.host("vps1")
    assert failed["status"] == "failed"
    assert failed["error"] == ("roles/postgresql: secret DB_PASSWORD is missing from the sandbox secrets "
                               "(invoke secrets.edit --env=sandbox)")
    assert [(op["name"], op["status"]) for op in failed["operations"]] == [("roles/postgresql", "failed")]
    assert sandbox.audit_lines("vps1") == before, "the host that lacks a secret is not contacted at all"
    assert (run.host("vps2")["status"], run.host("vps2")["changed"]) == ("ok", 0)

    again = invoke("provision.server", "--json", "--limit=vps1")
    assert again.code == 0 and (again.host("vps1")["status"], again.host("vps1")["changed"]) == ("ok", 0)


CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"


def https(sandbox, path: str, **kwargs) -> requests.Response:
    return requests.get(
        f"https://{sandbox.addresses['vps2']}{path}", verify=str(CA), allow_redirects=False, timeout=10, **kwargs
    )


def test_https_verifies_against_the_sandbox_ca_and_http_redirects(provisioned, sandbox):
    plain = requests.get(f"http://{sandbox.addresses['vps2']}/prayers?x=1", allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"] == f"https://{sandbox.addresses['vps2']}/prayers?x=1"
    # A Host header of the client's choosing is not where the redirect sends it.
    spoofed = requests.get(f"http://{sandbox.addresses['vps2']}/x", headers={"Host": "evil.example"},
                           allow_redirects=False, timeout=10)
    assert spoofed.headers["Location"] == f"https://{sandbox.addresses['vps2']}/x"
    assert plain.headers["Server"] == "nginx"  # no version
    response = https(sandbox, "/")  # verified: requests raises on an untrusted certificate
    assert response.status_code in (
        200,
        502,
    )  # the app once deployed (test_deploy), else nginx alone; TLS verified either way
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{sandbox.addresses['vps2']}/", timeout=10)  # not trusted without the sandbox CA


def test_security_headers_and_hsts_are_sent(provisioned, sandbox):
    headers = https(sandbox, "/").headers
    assert headers["Strict-Transport-Security"].startswith("max-age=63072000")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    for name, value in {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }.items():
        assert headers[name] == value


def test_cors_answers_only_the_configured_frontend_origin(provisioned, sandbox):
    allowed = https(sandbox, "/api/prayers", headers={"Origin": "http://localhost"}).headers
    assert allowed["Access-Control-Allow-Origin"] == "http://localhost"
    denied = https(sandbox, "/api/prayers", headers={"Origin": "https://evil.example"}).headers
    assert not [name for name in denied if name.lower().startswith("access-control-")]
    # A preflight answer carries the security headers too.
    preflight = requests.options(f"https://{sandbox.addresses['vps2']}/api/prayers", verify=str(CA), timeout=10,
                                 headers={"Origin": "http://localhost", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == "http://localhost"
    assert preflight.headers["Strict-Transport-Security"].startswith("max-age=") and \
        preflight.headers["X-Content-Type-Options"] == "nosniff"


def test_a_burst_against_the_api_gets_429s(provisioned, sandbox):
    with requests.Session() as session:
        codes = [session.get(f"https://{sandbox.addresses['vps2']}/api/health", verify=str(CA), timeout=10).status_code
                 for _ in range(60)]  # bounded: 60 requests
    assert 429 in codes and codes[0] != 429


def test_maintenance_mode_answers_503_with_retry_after(provisioned, sandbox):
    sandbox.ssh("vps2", "touch /var/www/together-pray/maintenance.on")
    try:
        response = https(sandbox, "/")
        assert response.status_code == 503 and response.headers["Retry-After"] == "300"
        assert "be right back" in response.text
    finally:
        sandbox.ssh("vps2", "rm -f /var/www/together-pray/maintenance.on")
    after = https(sandbox, "/")
    # Back to normal: the app (or, before any deploy, nginx's 502 for no upstream), not the maintenance page.
    assert after.status_code != 503 and "Retry-After" not in after.headers


def ssh_login(address: str, user: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", *SSH_OPTIONS, *options, f"{user}@{address}", "true"], capture_output=True, text=True, timeout=60
    )


def test_root_and_password_logins_are_refused_and_the_admin_and_deploy_users_work(provisioned, sandbox):
    address = sandbox.addresses["vps2"]
    assert "Permission denied" in ssh_login(address, "root").stderr
    password = ssh_login(
        address,
        "deploy",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    )
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr
    assert ssh_login(address, "deploy").returncode == 0 and ssh_login(address, "ops").returncode == 0
    assert "PermitRootLogin no" in sandbox.ssh("vps2", "sshd -T | grep -i permitrootlogin").replace(
        "permitrootlogin", "PermitRootLogin"
    )


def test_a_broken_sshd_setting_is_refused_by_sshd_t_and_the_host_stays_reachable(provisioned, sandbox):
    before = sandbox.ssh("vps2", "sha256sum /etc/ssh/sshd_config")
    run = invoke("provision.server", "--json", "--limit=vps2", "--var", 'ssh_extra_config=["NoSuchOption yes"]')
    assert run.code == ExitCode.HOST_FAILED
    assert "sshd -t" in run.host("vps2")["error"] and "NoSuchOption" in run.host("vps2")["error"]
    assert sandbox.ssh("vps2", "sha256sum /etc/ssh/sshd_config") == before
    assert ssh_login(sandbox.addresses["vps2"], "ops").returncode == 0


@pytest.mark.parametrize("setting, locked_out", [("AllowUsers nobody", "ops"), ("AllowUsers ops", "deploy")])
def test_settings_that_would_lock_the_admin_or_deploy_user_out_are_reverted(provisioned, sandbox, setting, locked_out):
    before = sandbox.ssh("vps2", "sha256sum /etc/ssh/sshd_config")
    run = invoke("provision.server", "--json", "--limit=vps2", "--var", f'ssh_extra_config=["{setting}"]')
    assert run.code == ExitCode.HOST_FAILED
    assert f"a fresh login failed after the change (as {locked_out}: " in run.host("vps2")["error"]
    assert sandbox.ssh("vps2", "sha256sum /etc/ssh/sshd_config") == before
    assert ssh_login(sandbox.addresses["vps2"], "ops").returncode == 0
    assert ssh_login(sandbox.addresses["vps2"], "deploy").returncode == 0
    # The interrupted reload is still pending: the next run finishes it, the one after changes nothing.
    assert invoke("provision.server", "--json", "--limit=vps2").code == 0
    assert invoke("provision.server", "--json", "--limit=vps2").host("vps2")["changed"] == 0


def test_a_port_already_taken_fails_that_host_with_the_reason_and_a_rerun_recovers(provisioned, sandbox):
    sandbox.ssh("vps2", "systemctl stop nginx && nohup timeout 120 python3 -m http.server 443 --bind 0.0.0.0 "
                        ">/dev/null 2>&1 & echo $! > /tmp/http443.pid; sleep 1")
    try:
        run = invoke("provision.server", "--json", "--limit=vps1,vps2")
        assert run.code == ExitCode.HOST_FAILED
        failed = run.host("vps2")
        assert "systemctl start nginx.service" in failed["error"]
        assert run.host("vps1")["failed"] == 0
    finally:
        sandbox.ssh("vps2", "kill $(cat /tmp/http443.pid) 2>/dev/null; rm -f /tmp/http443.pid; sleep 1")
    again = invoke("provision.server", "--json", "--limit=vps2")
    assert again.code == 0 and sandbox.ssh("vps2", "systemctl is-active nginx").strip() == "active"


def deploy_sudo(address: str, *command: str) -> subprocess.CompletedProcess:
    """Run `sudo -n COMMAND` as the deploy user, the way a deploy will."""
    return subprocess.run(["ssh", *SSH_OPTIONS, f"deploy@{address}", shlex.join(["sudo", "-n", *command])],
                          capture_output=True, text=True, timeout=60)


def test_the_deploy_users_sudo_covers_the_apps_units_and_nginx_reload_only(provisioned, sandbox):
    address = sandbox.addresses["vps2"]
    # Allowed: the app's units through the helper. Whether a color runs or not, systemctl answers
    # (0 active, 3 inactive), where sudo refusing would exit 1.
    status = deploy_sudo(address, "/usr/local/sbin/vigil-app-unit", "is-active", "together-pray-backend@blue.service")
    assert status.returncode in (0, 3) and status.stdout.strip() in ("active", "inactive"), status.stderr
    assert deploy_sudo(address, "/usr/sbin/nginx", "-t").returncode == 0
    assert deploy_sudo(address, "/usr/bin/systemctl", "reload", "nginx.service").returncode == 0
    # Switching an upstream's color, checked by nginx -t and reloaded.
    upstreams = "/etc/nginx/conf.d/together-pray-upstreams.conf"
    live = (
        "green" if "127.0.0.1:3002" in sandbox.ssh("vps2", f"grep backend {upstreams}") else "blue"
    )  # a deploy may have run
    other, other_port = ("blue", "3001") if live == "green" else ("green", "3002")
    switched = deploy_sudo(address, "/usr/local/sbin/vigil-switch-upstream", "backend", other)
    assert switched.returncode == 0 and f"127.0.0.1:{other_port}" in sandbox.ssh("vps2", f"grep backend {upstreams}"), (
        switched.stderr
    )
    assert deploy_sudo(address, "/usr/local/sbin/vigil-switch-upstream", "backend", live).returncode == 0  # as it was
    assert f"127.0.0.1:{other_port}" not in sandbox.ssh("vps2", f"grep backend {upstreams}")
    assert deploy_sudo(address, "/usr/local/sbin/vigil-switch-upstream", "backend", "/etc/passwd").returncode == 64
    # Refused: another unit through the helper, and anything else as root.
    other = deploy_sudo(address, "/usr/local/sbin/vigil-app-unit", "stop", "ssh.service")
    assert other.returncode == 77 and "not one of the app's units" in other.stderr
    for command in (["true"], ["sh", "-c", "id"], ["/usr/bin/systemctl", "stop", "nginx.service"],
                    ["cat", "/etc/together-pray/backend.env"], ["-u", "together-pray", "true"]):
        refused = deploy_sudo(address, *command)
        assert refused.returncode == 1 and ("a password is required" in refused.stderr
                                            or "is not allowed to execute" in refused.stderr), (command, refused.stderr)
    # The journal: only the app's units' logs, through the helper; not the systemd-journal group.
    assert "systemd-journal" not in sandbox.ssh("vps2", "id -nG deploy").split()
    logs = deploy_sudo(address, "/usr/local/sbin/vigil-app-unit", "logs", "together-pray-backend@blue.service")
    assert logs.returncode == 0, logs.stderr
    assert deploy_sudo(address, "/usr/local/sbin/vigil-app-unit", "logs", "ssh.service").returncode == 77
    # Outside the group, journalctl shows the deploy user its own processes' lines only: none of nginx's,
    # which root sees.
    reloads = "journalctl -q --no-pager -n 5 -u nginx.service"
    assert sandbox.ssh("vps2", reloads).strip()
    whole = subprocess.run(["ssh", *SSH_OPTIONS, f"deploy@{address}", reloads], capture_output=True, text=True,
                           timeout=60)
    assert whole.stdout.strip() == "", whole.stdout


def test_a_source_rule_added_later_goes_first_for_ipv6_too(provisioned, sandbox):
    # ufw refuses `insert 1` for an IPv6 rule while IPv4 rules lead; vigil prepends instead.
    sources = '--var=firewall_ssh_trusted_sources=["10.213.2.1", "fd00::7"]'
    added = invoke("provision.server", "--json", "--limit=vps2", sources)
    assert added.code == 0, added.stdout[-2000:] + added.stderr
    assert "ufw allow from fd00::7 to any port 22 proto tcp" in sandbox.ssh("vps2", "ufw show added")
    assert invoke("provision.server", "--json", "--limit=vps2", sources).host("vps2")["changed"] == 0
    back = invoke("provision.server", "--json", "--limit=vps2")
    assert back.code == 0 and "fd00::7" not in sandbox.ssh("vps2", "ufw show added")
