"""Debian 12 hosts in the other supported layout: a web host and a database host of its own.

Two sandbox VPSes of its own boot Debian 12 (bookworm), apart from the session's
Debian 13 ones (marked `apart`: scripts/test runs it beside them): vps14 runs the
web roles, vps15 PostgreSQL. A scratch inventory names only them; vps16, on
Debian 13 and in no group, is the stranger the database host must turn away.

The web host gets its certificate the production way: certbot, HTTP-01
through nginx, from a local ACME server (pebble, Let's Encrypt's test server)
that stands in for Let's Encrypt, which cannot reach the sandbox.
"""

import socket
import ssl

import pytest
import requests

from tests.e2e.test_provision_roles import connect
from tests.support.acme import local_acme
from tests.support.sandbox_hosts import REPO, apart_layout, app_database_login, database_url_endpoint, invoke, tcp_probe

WEB, DB, STRANGER = "vps14", "vps15", "vps16"
pytestmark = pytest.mark.apart
CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
DOMAIN = "app.together-pray.test"


@pytest.fixture(scope="module")
def sandbox():
    """This module's VPSes, fresh, apart from the session's (tests/support/sandbox_hosts.py)."""
    with apart_layout("split-database", f"{WEB}-{STRANGER}", f"--debian={WEB}:12", f"--debian={DB}:12") as hosts:
        yield hosts


@pytest.fixture(scope="module")
def hosts(sandbox):
    """The web, database and stranger hosts' addresses by name."""
    return sandbox.addresses


@pytest.fixture(scope="module")
def acme(hosts, tmp_path_factory):
    """The local ACME server for the web host (tests/support/acme.py)."""
    with local_acme(WEB, tmp_path_factory.mktemp("acme")) as server:
        yield server


@pytest.fixture(scope="module")
def split(sandbox, hosts, acme, tmp_path_factory):
    """Both hosts onboarded twice, checked, and given their secrets, from a scratch inventory naming only them."""

    def only_the_split_hosts(data):
        data["hosts"] = {name: data["hosts"][name] for name in (WEB, DB)}
        data["groups"] = {"web": {"hosts": [WEB]}, "db": {"hosts": [DB]}}
        # The production way to a certificate, from the local ACME server.
        data["hosts"][WEB]["vars"].update({"nginx_tls": "certbot", "nginx_server_name": DOMAIN,
                                           "nginx_certbot_server": acme["directory"],
                                           "nginx_certbot_ca_certificate": str(CA)})

    inventory = sandbox.scratch_inventory(tmp_path_factory.mktemp("split"), only_the_split_hosts)
    runs = {
        "first": invoke("provision.server", "--json", inventory=inventory),
        "second": invoke("provision.server", "--json", inventory=inventory),
        "check": invoke("provision.server", "--json", "--check", inventory=inventory),
        "push": invoke("secrets.push", "--json", inventory=inventory),
    }
    return hosts, runs, acme


def test_debian_12_hosts_onboard_and_a_second_run_changes_nothing(split, sandbox):
    addresses, runs, *_ = split
    first = runs["first"]
    assert first.code == 0, first.stdout[-3000:] + first.stderr
    for name in (WEB, DB):
        assert first.host(name)["status"] == "changed"
        assert (runs["second"].host(name)["changed"], runs["second"].host(name)["failed"]) == (0, 0)
        assert runs["check"].host(name)["changed"] == 0
        assert sandbox.ssh_at(addresses[name], "cut -d. -f1 /etc/debian_version").strip() == "12"
    assert sandbox.ssh_at(addresses[WEB], "node --version").startswith("v18.")  # bookworm's, within >=18.18
    assert sandbox.ssh_at(addresses[DB], "pg_lsclusters -h | cut -d' ' -f1").split() == ["15"]
    assert sandbox.ssh_at(addresses[WEB], "command -v postgres || echo none").strip() == "none"


def test_the_database_host_listens_privately_and_admits_only_the_web_host(split, sandbox):
    addresses, runs, *_ = split
    assert runs["push"].code == 0, runs["push"].stdout[-3000:] + runs["push"].stderr
    db = addresses[DB]
    assert sandbox.ssh_at(db, "ss -ltnH 'sport = :5432' | awk '{print $4}' | sort").split() == [
        f"{db}:5432", "127.0.0.1:5432", "[::1]:5432"]
    assert f"ALLOW IN    {addresses[WEB]}" in sandbox.ssh_at(db, "ufw status verbose | grep '^5432/tcp'")
    # The web host's backend gets the private address with TLS required, and logs in with it over TLS.
    assert database_url_endpoint(addresses[WEB]) == (
        f"{db}:5432/together_pray?sslmode=verify-full&sslrootcert=/etc/together-pray/database-server.crt")
    assert app_database_login(addresses[WEB]) == "together_pray|t"
    assert "no encryption" in app_database_login(addresses[WEB], sslmode="disable")
    # Nobody else gets through: not the control machine, not a host outside the web group.
    assert connect(db, 5432) == "filtered"
    assert tcp_probe(addresses[STRANGER], db, 5432) == "filtered"
    assert tcp_probe(addresses[WEB], db, 5432) == "open"


def https_head(address: str, root_pem: str) -> tuple[str, str]:
    """(status line, headers) of GET / at `address`, the certificate verified for DOMAIN against `root_pem`."""
    context = ssl.create_default_context(cadata=root_pem)
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=DOMAIN) as tls_socket,
    ):
        tls_socket.sendall(f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := tls_socket.recv(65536):
            response += chunk
    head = response.split(b"\r\n\r\n", 1)[0].decode()
    return head.split("\r\n", 1)[0], head


def test_certbot_gets_the_web_hosts_certificate_over_http_01_and_renews_it(split, sandbox):
    addresses, runs, server = split
    web = addresses[WEB]
    # Verified against the ACME server's root, for the domain: a certificate certbot obtained through nginx.
    status, headers = https_head(web, server["root"])
    assert status == "HTTP/1.1 502 Bad Gateway"  # nginx and TLS answer; no app yet
    assert "Strict-Transport-Security: max-age=63072000" in headers
    assert "GET /.well-known/acme-challenge/" in sandbox.ssh_at(web, "cat /var/log/nginx/access.log")
    assert sandbox.ssh_at(web, "systemctl is-enabled certbot.timer; systemctl is-active certbot.timer").split() == [
        "enabled",
        "active",
    ]
    # certbot's timer renews from the server the certificate came from.
    renewal_config = sandbox.ssh_at(web, f"cat /etc/letsencrypt/renewal/{DOMAIN}.conf")
    assert f"server = {server['directory']}" in renewal_config.splitlines()
    # A renewal runs the whole HTTP-01 exchange again, through the site vigil installed.
    # (--server again: a dry run otherwise swaps in Let's Encrypt's staging server.)
    renewal = sandbox.ssh_at(
        web,
        f"certbot renew --dry-run --no-random-sleep-on-renew --server {server['directory']} 2>&1 | tail -3",
        check=False,
    )
    assert "Congratulations, all simulated renewals succeeded" in renewal, renewal
    # What a real renewal runs afterwards, so nginx serves the new certificate.
    assert (
        sandbox.ssh_at(web, "/etc/letsencrypt/renewal-hooks/deploy/vigil-reload-nginx && echo reloaded").strip()
        == "reloaded"
    )
    plain = requests.get(f"http://{web}/", headers={"Host": DOMAIN}, allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"] == f"https://{DOMAIN}/"

