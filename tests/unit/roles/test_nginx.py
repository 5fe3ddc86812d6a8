"""roles/nginx: certificates from certbot (Let's Encrypt or a private ACME server), and the helper that
switches one upstream, checked by nginx -t."""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.inventories import layout, role_vars
from vigil.core.errors import ConfigError
from vigil.core.roles import load_role
from vigil.sandbox import ca as sandbox_ca

# --- nginx: certificates from certbot, from Let's Encrypt or a private ACME server -------------

def nginx_operations(**overrides):
    role = load_role("nginx")
    settings = {"nginx_tls": "certbot", "nginx_server_name": "app.example.org",
                "nginx_cors_origins": ["https://app.example.org"], **overrides}
    vars = role_vars(role, layout({"web": ["web1"]}), "web1", **settings)
    return role.tasks(role, vars)


@pytest.mark.parametrize("overrides, server_args, trusts_ca", [
    ({}, [], False),
    ({"nginx_certbot_server": "https://acme.internal:14000/dir", "nginx_certbot_ca_certificate": "{ca}"},
     ["--server", "https://acme.internal:14000/dir"], True),
])
def test_certbot_mode_issues_through_the_webroot_and_reloads_nginx_on_renewal(
    tmp_path, overrides, server_args, trusts_ca
):
    ca = tmp_path / "ca.crt"
    ca.write_bytes(sandbox_ca.host_certificate("acme", ["acme.internal"], directory=tmp_path / "ca").chain)
    operations = nginx_operations(**{key: value.format(ca=ca) for key, value in overrides.items()})
    (certbot,) = [op for op in operations if type(op).__name__ == "Guarded" and "certbot" in op.commands[0].argv]
    assert list(certbot.commands[0].argv) == ["certbot", "certonly", "--non-interactive", "--agree-tos", "--email",
                                              "ops@together-pray.invalid", "--webroot", "-w", "/var/www/html",
                                              "-d", "app.example.org", *server_args]
    assert certbot.creates == "/etc/letsencrypt/live/app.example.org/fullchain.pem"
    paths = [getattr(op, "path", "") for op in operations]
    assert "/etc/letsencrypt/renewal-hooks/deploy/vigil-reload-nginx" in paths
    assert ("/usr/local/share/ca-certificates/vigil-acme-ca.crt" in paths) is trusts_ca
    # The CA goes in before certbot needs it.
    if trusts_ca:
        assert paths.index("/usr/local/share/ca-certificates/vigil-acme-ca.crt") < operations.index(certbot)


@pytest.mark.parametrize("overrides, message", [
    ({"nginx_certbot_server": "http://acme.internal/dir"}, "nginx_certbot_server"),
    ({"nginx_certbot_server": "https://acme.internal/dir;reboot"}, "nginx_certbot_server"),
    ({"nginx_certbot_ca_certificate": "/no/such/ca.crt"}, "nginx_certbot_ca_certificate: cannot read /no/such/ca.crt"),
    ({"nginx_certbot_ca_certificate": "README.md"}, "README.md: not a PEM certificate"),
    ({"nginx_certbot_ca_certificate": "{key_and_cert}"}, "holds more than certificates"),
])
def test_bad_certbot_settings_name_the_key(tmp_path, overrides, message):
    issued = sandbox_ca.host_certificate("acme", ["acme.internal"], directory=tmp_path / "ca")
    (tmp_path / "both.pem").write_bytes(issued.chain + issued.key)
    with pytest.raises(ConfigError, match=re.escape(message)):
        nginx_operations(**{key: value.format(key_and_cert=tmp_path / "both.pem") for key, value in overrides.items()})


def switch_helper(tmp_path, check: str, reload: str, pid_file: str = "/run/nginx.pid"):
    """The real switch helper, on a scratch upstreams file, with `nginx -t` and the reload stubbed."""
    role = load_role("nginx")
    vars = role_vars(role, layout({"web": ["web1"]}), "web1", nginx_tls="certbot", nginx_server_name="app.example.org",
                     nginx_cors_origins=["https://app.example.org"])
    files = {getattr(op, "path", ""): op for op in role.tasks(role, vars)}
    upstreams = tmp_path / "upstreams.conf"
    upstreams.write_bytes(files["/etc/nginx/conf.d/together-pray-upstreams.conf"].content)
    helper = files["/usr/local/sbin/vigil-switch-upstream"].content.decode()
    helper = (helper.replace("/etc/nginx/conf.d/together-pray-upstreams.conf", str(upstreams))
              .replace("nginx -t -q", check)
              .replace("systemctl reload nginx.service", reload)
              .replace("/run/nginx.pid", pid_file)
              .replace("/run/vigil", str(tmp_path / "run"))
              .replace("/var/log/vigil", str(tmp_path / "log")))
    script = tmp_path / "switch"
    script.write_text(helper)
    return script


@pytest.mark.parametrize("args, nginx_accepts, code, backend, frontend", [
    (["backend", "green"], True, 0, 3002, 3101),
    (["frontend", "green"], True, 0, 3001, 3102),
    (["backend", "blue"], True, 0, 3001, 3101),
    (["backend", "green"], False, 1, 3001, 3101),  # nginx -t refuses: the previous file is back
    (["backend", "purple"], True, 64, 3001, 3101),
    (["backend;reboot", "green"], True, 64, 3001, 3101),
    (["backend"], True, 64, 3001, 3101),
])
def test_the_upstream_switch_helper_rewrites_one_upstream_checked(
    tmp_path, args, nginx_accepts, code, backend, frontend
):
    script = switch_helper(tmp_path, "true" if nginx_accepts else "false", "echo reloaded")
    result = subprocess.run(["sh", str(script), *args], capture_output=True, text=True)
    assert result.returncode == code, result.stderr
    text = (tmp_path / "upstreams.conf").read_text()
    assert f"upstream together_pray_backend {{ server 127.0.0.1:{backend}; keepalive 16; }}" in text
    assert f"upstream together_pray_frontend {{ server 127.0.0.1:{frontend}; keepalive 16; }}" in text
    assert ("reloaded" in result.stdout) is (code == 0)
    # No temporary file left; the lock (not taken for a usage error) in a directory only its owner may enter.
    left = {0: ["log", "run", "switch", "upstreams.conf"], 64: ["switch", "upstreams.conf"]}.get(
        code, ["run", "switch", "upstreams.conf"])
    trail = tmp_path / "log" / "deploy-actions.jsonl"
    assert trail.exists() is (code == 0)  # a switch that happened is on root's record, one refused is not
    if code == 0:
        assert json.loads(trail.read_text())["args"] == " ".join(args)
    assert sorted(p.name for p in tmp_path.iterdir()) == left
    if code != 64:
        assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700


def site_conf(**overrides) -> str:
    (site,) = [op for op in nginx_operations(**overrides) if getattr(op, "path", "").endswith("/together-pray.conf")
               and "sites-available" in op.path]
    return site.content.decode() if isinstance(site.content, bytes) else site.content


@pytest.mark.parametrize("overrides, present, absent", [
    # The edge: no version, the client's X-Forwarded-For replaced, the redirect to the configured name.
    ({}, ["server_tokens off;", "proxy_set_header X-Forwarded-For $remote_addr;",
          "return 301 https://app.example.org$request_uri;"],
     ["$proxy_add_x_forwarded_for", "https://$host", "set_real_ip_from"]),
    # Behind a balancer: only its X-Forwarded-For is believed.
    ({"nginx_trusted_proxies": ["10.0.0.5", "10.1.0.0/16"]},
     ["set_real_ip_from 10.0.0.5/32;", "set_real_ip_from 10.1.0.0/16;", "real_ip_header X-Forwarded-For;"],
     ["$proxy_add_x_forwarded_for"]),
    ({"nginx_server_name": "2001:db8::7"}, ["return 301 https://[2001:db8::7]$request_uri;"], []),
])
def test_the_site_answers_as_the_edge(overrides, present, absent):
    site = site_conf(**overrides)
    # Per server, never at http level, where Debian's nginx.conf may set it already (nginx -t: "duplicate").
    assert site.count("server_tokens off;") == site.count("\nserver {")
    assert not [line for line in site.splitlines() if line.startswith("server_tokens")]
    for line in present:
        assert line in site
    for line in absent:
        assert line not in site


def test_a_cors_preflight_answer_keeps_the_security_headers():
    site = site_conf()
    preflight = site[site.index("if ($request_method = OPTIONS)"):]
    preflight = preflight[:preflight.index("return 204;")]
    assert "include /etc/nginx/snippets/vigil-security-headers.conf;" in preflight


@pytest.mark.parametrize("proxies", [["10.0.0.0/33"], ["lb.example"], "10.0.0.5"])
def test_a_bad_trusted_proxy_names_the_key(proxies):
    with pytest.raises(ConfigError, match="nginx_trusted_proxies"):
        site_conf(nginx_trusted_proxies=proxies)


# --- the Content-Security-Policy, in one place ---------------------------------------------------------------

def test_the_policy_is_set_once_and_a_page_that_brings_its_own_nonce_keeps_it():
    policy = "default-src 'self'; script-src 'self'; object-src 'none'"
    operations = {getattr(op, "path", ""): op for op in nginx_operations(nginx_content_security_policy=policy)}
    snippet = operations["/etc/nginx/snippets/vigil-security-headers.conf"].content.decode()
    assert "add_header Content-Security-Policy $vigil_content_security_policy always;" in snippet
    assert policy not in snippet
    chosen = operations["/etc/nginx/conf.d/vigil-content-security-policy.conf"].content.decode()
    # No policy from the upstream (the API, static files, the maintenance page): this one; else the page's.
    assert f'map $upstream_http_content_security_policy $vigil_content_security_policy {{\n    ""      "{policy}";\n' \
           '    default "";\n}' in chosen
    site = operations["/etc/nginx/sites-available/together-pray.conf"].content.decode()
    assert f'proxy_set_header X-Vigil-Content-Security-Policy "{policy}";' in site


def test_a_policy_that_would_break_out_of_its_quotes_is_refused():
    with pytest.raises(ConfigError, match="nginx_content_security_policy"):
        nginx_operations(nginx_content_security_policy='default-src \'self\'"; add_header X "y')


def test_the_switch_returns_once_no_worker_from_before_the_reload_takes_connections(tmp_path):
    # A stand-in nginx master with one child titled as its worker; the stubbed reload ends that worker half a
    # second later, as nginx's own reload does once its new workers run (the helper's wait, not timed here).
    master = subprocess.Popen(["bash", "-c", 'bash -c \'exec -a "nginx: worker process" sleep 60\' & wait'])
    try:
        children = Path(f"/proc/{master.pid}/task/{master.pid}/children")
        for _ in range(100):
            if children.read_text().split():
                break
            time.sleep(0.02)
        [worker] = children.read_text().split()
        (tmp_path / "nginx.pid").write_text(f"{master.pid}\n")
        script = switch_helper(tmp_path, "true", f"{{ ( sleep 0.5; kill {worker} ) >/dev/null 2>&1 & }}",
                               pid_file=str(tmp_path / "nginx.pid"))
        result = subprocess.run(["sh", str(script), "backend", "green"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        # When it returned, the worker from before was gone already (a zombie has no title).
        title = Path(f"/proc/{worker}/cmdline")
        assert not title.exists() or title.read_bytes() == b"", title.read_bytes()
    finally:
        master.kill()
        master.wait()
