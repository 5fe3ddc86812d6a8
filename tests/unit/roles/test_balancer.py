"""roles/balancer and what it changes around it: HAProxy on group lb terminating HTTPS in front of every web
host (TLS to each checked, both services' health checked, GET retried), the web hosts' firewall open to
the balancers alone, nginx trusting their X-Forwarded-For alone, and a rolling deploy draining each web host
first and putting it back whatever happened."""

from __future__ import annotations

import pytest

import vigil.deploy.balancer as rotation
from tests.support.inventories import layout
from vigil.core.errors import ConfigError
from vigil.core.fanout import Unreachable
from vigil.core.playbook import build_host_plans
from vigil.deploy.edge import trusted_proxies
from vigil.operations.files import File
from vigil.operations.guarded import Guarded

LAYOUT = {"lb": ["lb1"], "web": ["web1", "web2"], "db": ["db1"], "monitor": ["mon1"]}
PRIVATE = {"lb1": "10.0.2.1", "web1": "10.0.1.1", "web2": "10.0.1.2", "db1": "10.0.0.1", "mon1": "10.0.3.1"}
SECRETS = {"FRONTEND_URL": "https://app.example", "DB_PASSWORD": "app-password-0123456789ab"}


def operations(groups=None, host="lb1", roles=("balancer",), **cli_vars):
    inventory = layout(groups or LAYOUT, private=PRIVATE)
    plans = build_host_plans(inventory, "onboard", host, {"nginx_tls": "local-ca", **cli_vars},
                             lambda: dict(SECRETS), only_roles=list(roles))
    return plans[0].operations if plans else []


def config() -> str:
    return next(op for op in operations() if isinstance(op, File) and op.path == "/etc/haproxy/haproxy.cfg"
                ).content.decode()


def test_nothing_is_installed_without_a_balancer_or_off_its_hosts():
    assert operations({"web": ["web1"], "db": ["db1"]}, host="web1") == []
    assert operations(host="web1") == []


def test_haproxy_terminates_https_and_checks_each_web_hosts_certificate_and_both_services():
    text = config()
    assert "bind :443 ssl crt /etc/haproxy/certs/site.pem" in text
    assert "redirect scheme https code 301 unless { ssl_fc }" in text
    for index in (1, 2):
        address = f"203.0.113.{index + 1}"  # each web host's site name: its own address in this layout
        assert (f"server web{index} 10.0.1.{index}:443 check sni str({address}) check-sni {address} "
                f"verifyhost {address}") in text
    assert "ssl verify required ca-file /etc/haproxy/tls/web-hosts-ca.crt" in text
    assert "uri /api/health" in text and "send meth GET uri / " in text
    # Only requests that change nothing are sent again after reaching a host.
    assert "retry-on conn-failure empty-response response-timeout 502 503 504" in text
    assert "http-request disable-l7-retry unless METH_GET" in text
    # A client's own X-Forwarded-For is dropped before the balancer adds the real one.
    assert text.index("http-request del-header X-Forwarded-For") < text.index("option forwardfor")
    certificate = next(op for op in operations() if isinstance(op, File) and op.path == "/etc/haproxy/certs/site.pem")
    assert certificate.secret and certificate.mode == "0600" and b"PRIVATE KEY" in certificate.content


def test_with_certbot_the_challenge_route_is_loaded_before_the_first_certificate_is_asked_for():
    certbot = {"nginx_tls": "certbot", "nginx_server_name": "app.example.org", "nginx_certbot_email": "ops@example.org"}
    ops = operations(**certbot)
    text = next(op for op in ops if isinstance(op, File) and op.path == "/etc/haproxy/haproxy.cfg").content.decode()
    assert "use_backend acme if acme" in text and "server certbot 127.0.0.1:8402" in text
    guarded = [op for op in ops if isinstance(op, Guarded)]
    commands = [[command.display() for command in op.commands] for op in guarded]
    reload_at = commands.index(["haproxy -c -q -f /etc/haproxy/haproxy.cfg", "systemctl reload haproxy.service"])
    issue_at = next(index for index, run in enumerate(commands) if run[0].startswith("certbot certonly"))
    # The reload the new configuration notified comes at the end of the run: certbot's challenge would meet
    # the old one. Both only until the certificate exists, so a second run does neither.
    assert reload_at < issue_at
    live = "/etc/letsencrypt/live/app.example.org/fullchain.pem"
    assert guarded[reload_at].creates == guarded[issue_at].creates == live
    assert "--standalone --http-01-address 127.0.0.1 --http-01-port 8402" in commands[issue_at][0]


@pytest.mark.parametrize("groups, message", [
    ({"lb": ["web1"], "web": ["web1"], "db": ["db1"]}, "cannot also be a web host"),
    ({"lb": ["lb1"], "db": ["db1"]}, "the inventory has none"),
])
def test_a_balancer_without_web_hosts_or_on_one_is_refused_naming_the_host(groups, message):
    host = groups["lb"][0]
    with pytest.raises(ConfigError, match=f"{host}: .*{message}"):
        operations(groups, host=host)


@pytest.mark.parametrize("host, port, sources", [
    ("web1", 443, ["10.0.2.1", "10.0.3.1"]),   # the balancer and the monitor host's probes, nobody else
    ("web1", 80, ["10.0.2.1", "10.0.3.1"]),
    ("lb1", 443, ["any"]),                    # the balancer serves the public
])
def test_behind_a_balancer_a_web_host_takes_web_traffic_from_it_alone(host, port, sources):
    rules = operations(host=host, roles=("firewall",))[1].rules
    if sources == ["any"]:
        assert f"allow {port}/tcp" in rules
    else:
        assert f"allow {port}/tcp" not in rules
        assert sorted(rule.split()[2] for rule in rules if rule.endswith(f"to any port {port} proto tcp")) == sources


def test_nginx_trusts_the_forwarded_address_from_the_balancers_alone():
    inventory = layout(LAYOUT, private=PRIVATE)
    from vigil.core.roles import load_role  # noqa: PLC0415 (this test alone)
    vars = inventory.vars_for(inventory.hosts["web1"], [load_role("nginx")])
    assert trusted_proxies(vars) == ["10.0.2.1/32"]
    alone = layout({"web": ["web1"], "db": ["db1"]}, private=PRIVATE)
    assert trusted_proxies(alone.vars_for(alone.hosts["web1"], [load_role("nginx")])) == []


def test_a_drained_host_is_put_back_whatever_its_deploy_did_and_a_refused_drain_touches_nothing(monkeypatch):
    inventory = layout(LAYOUT, private=PRIVATE)
    asked = []

    def on_hosts(inventory, hosts, ask):
        class Transport:
            def run(self, command, timeout=None):
                asked.append(command.argv[2].split("state ")[1].split('"')[0] + " " + command.argv[4])
                return type("Result", (), {"ok": True})()
        return {host.name: ask(Transport(), host) for host in hosts}

    monkeypatch.setattr(rotation, "on_hosts", on_hosts)
    with pytest.raises(RuntimeError), rotation.out_of_rotation(inventory, "web2", 5):
        raise RuntimeError("the deploy failed its gate")
    assert asked == ["drain web2", "ready web2"]
    monkeypatch.setattr(rotation, "on_hosts", lambda inventory, hosts, ask: {"lb1": Unreachable("timed out")})
    touched = []
    with pytest.raises(rotation.BalancerError, match="web2 could not be drained on lb1: timed out"):
        with rotation.out_of_rotation(inventory, "web2", 5):
            touched.append("deploy")
    assert touched == []
