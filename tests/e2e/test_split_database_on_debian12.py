"""Debian 12 hosts in the other supported layout: a web host and a database host of its own.

Two more sandbox VPSes boot Debian 12 (bookworm) next to the session's Debian
13 ones: vps3 runs the web roles, vps4 PostgreSQL. A scratch inventory names
only them, so the session's hosts keep their own layout. Runs last (by name)
because it adds hosts to the generated sandbox inventory.
"""

import pytest
import requests
import yaml

from conftest import INVENTORY, REPO, app_database_login, database_url_endpoint, invoke, tcp_probe
from test_provision_roles import connect

WEB, DB = "vps3", "vps4"
CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"


@pytest.fixture(scope="module")
def split(sandbox, tmp_path_factory):
    started = invoke("sandbox.up", "--hosts=4", f"--debian={WEB}:12", f"--debian={DB}:12", timeout=1200)
    assert started.code == 0, started.stdout + started.stderr
    addresses = {name: spec["address"] for name, spec in yaml.safe_load((INVENTORY / "sandbox.yml").read_text())["hosts"].items()}

    def only_the_split_hosts(data):
        data["hosts"] = {name: data["hosts"][name] for name in (WEB, DB)}
        data["groups"] = {"web": {"hosts": [WEB]}, "db": {"hosts": [DB]}}

    inventory = sandbox.scratch_inventory(tmp_path_factory.mktemp("split"), only_the_split_hosts)
    runs = {
        "first": invoke("provision.server", "--json", inventory=inventory),
        "second": invoke("provision.server", "--json", inventory=inventory),
        "check": invoke("provision.server", "--json", "--check", inventory=inventory),
        "push": invoke("secrets.push", "--json", inventory=inventory),
    }
    return addresses, runs


def test_debian_12_hosts_onboard_and_a_second_run_changes_nothing(split, sandbox):
    addresses, runs = split
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
    addresses, runs = split
    assert runs["push"].code == 0, runs["push"].stdout[-3000:] + runs["push"].stderr
    db = addresses[DB]
    assert sandbox.ssh_at(db, "ss -ltnH 'sport = :5432' | awk '{print $4}' | sort").split() == [
        f"{db}:5432", "127.0.0.1:5432", "[::1]:5432"]
    assert f"ALLOW IN    {addresses[WEB]}" in sandbox.ssh_at(db, "ufw status verbose | grep '^5432/tcp'")
    # The web host's backend gets the private address with TLS required, and logs in with it over TLS.
    assert database_url_endpoint(addresses[WEB]) == f"{db}:5432/together_pray?sslmode=require"
    assert app_database_login(addresses[WEB]) == "together_pray|t"
    assert "no encryption" in app_database_login(addresses[WEB], sslmode="disable")
    # Nobody else gets through: not the control machine, not a host outside the web group.
    assert connect(db, 5432) == "filtered"
    assert tcp_probe(addresses["vps1"], db, 5432) == "filtered"
    assert tcp_probe(addresses[WEB], db, 5432) == "open"


def test_the_web_host_on_debian_12_serves_https_with_hsts(split):
    addresses, _ = split
    response = requests.get(f"https://{addresses[WEB]}/", verify=str(CA), allow_redirects=False, timeout=10)
    assert response.status_code == 502  # nginx and TLS answer; no app yet
    assert response.headers["Strict-Transport-Security"].startswith("max-age=63072000")
    plain = requests.get(f"http://{addresses[WEB]}/", allow_redirects=False, timeout=10)
    assert plain.status_code == 301
