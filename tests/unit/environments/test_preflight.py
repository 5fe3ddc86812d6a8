"""env.check: each item judged from what the host, the network and DNS answered (given here as data)."""


import pytest

from vigil.core.errors import ConfigError
from vigil.core.inventory import Host
from vigil.environments import preflight
from vigil.vault.schema import load_schema
from vigil.vault.store import init_env, load, save

HOST = Host(name="web1", address="203.0.113.10", port=22, user="ops", ssh_key=None, groups=("web",),
            connect_timeout=10, command_timeout=60)
GIB = 1024**3


@pytest.mark.parametrize("output, facts", [
    ("os debian 13\ndisk 19327352832\nmemory 2058407936\n",
     {"os": "debian 13", "disk": "19327352832", "memory": "2058407936"}),
    ("os ubuntu 24.04\ndisk 1\nmemory 2\n", {"os": "ubuntu 24.04", "disk": "1", "memory": "2"}),
    ("os debian \ndisk \nnoise\n", {"os": "debian"}),
    ("", {}),
])
def test_host_facts_parse(output, facts):
    assert preflight.parse_host_facts(output) == facts


@pytest.mark.parametrize("facts, runs_both, failing", [
    ({"os": "debian 13", "disk": str(20 * GIB), "memory": str(2 * GIB)}, True, []),
    ({"os": "debian 12", "disk": str(20 * GIB), "memory": str(1 * GIB)}, False, []),
    ({"os": "ubuntu 24.04", "disk": str(20 * GIB), "memory": str(2 * GIB)}, False, []),
    ({"os": "debian 11", "disk": str(20 * GIB), "memory": str(2 * GIB)}, False, ["os"]),
    ({"os": "centos 9", "disk": str(20 * GIB), "memory": str(2 * GIB)}, False, ["os"]),
    ({"os": "debian 13", "disk": str(2 * GIB), "memory": str(2 * GIB)}, False, ["disk"]),
    # A "1 GB" VPS runs the app or the database, not both.
    ({"os": "debian 13", "disk": str(20 * GIB), "memory": str(1 * GIB)}, True, ["memory"]),
    ({}, False, ["os", "disk", "memory"]),
])
def test_host_items(facts, runs_both, failing):
    items = preflight.host_items(HOST, "root", facts, runs_both)
    assert [item.kind for item in items] == ["ssh", "os", "disk", "memory"]
    assert [item.kind for item in items if not item.ok] == failing


@pytest.mark.parametrize("state, ok, says", [
    ("open", True, "80 answers from here"),
    ("refused", True, "nothing listens yet"),
    ("timed out", False, "open 80 and 443 to the world in the provider's firewall"),
    ("No route to host", False, "(No route to host)"),
])
def test_ports_reachable_or_refused_pass_and_silence_fails(state, ok, says):
    item = preflight.port_item(HOST, 80, lambda address, port: state)
    assert item.ok == ok and says in item.detail, item


@pytest.mark.parametrize("found, ok, says", [
    ({"203.0.113.10"}, True, "points at 203.0.113.10"),
    ({"203.0.113.10", "203.0.113.11"}, True, "points at 203.0.113.10, 203.0.113.11"),
    ({"76.76.21.21"}, False, "points at 76.76.21.21, not a web host of the env"),
    ({"203.0.113.10", "76.76.21.21"}, False, "points at 76.76.21.21"),
    (set(), False, "has no A or AAAA record"),
])
def test_the_domain_must_point_at_the_web_hosts_only(found, ok, says):
    item = preflight.dns_item("app.example.com", {"203.0.113.10", "203.0.113.11"}, lambda name: found)
    assert item.ok == ok and says in item.detail, item


@pytest.mark.parametrize("server, nameservers, port", [
    ("1.1.1.1", ["1.1.1.1"], 53),
    ("127.0.0.1:8053", ["127.0.0.1"], 8053),
    ("2606:4700:4700::1111", ["2606:4700:4700::1111"], 53),
])
def test_a_chosen_resolver(server, nameservers, port):
    resolver = preflight.resolver_for(server)
    assert ([str(n) for n in resolver.nameservers], resolver.port) == (nameservers, port)


@pytest.mark.parametrize("server", ["dns.example.com", "1.1.1.1:dns", "300.1.1.1"])
def test_a_resolver_that_is_no_address_is_refused(server):
    with pytest.raises(ConfigError, match="--resolver"):
        preflight.resolver_for(server)


def test_an_unknown_item_to_skip_is_refused_before_anything_is_asked():
    with pytest.raises(ConfigError, match="--skip: unknown item 'dsn'"):
        preflight.check_env(inventory=None, schema=None, skip=["dsn"])


def test_a_failing_item_says_fail_first():
    assert preflight.Item("dns", "app.example.com", False, "x").line().startswith("FAIL")
    assert preflight.Item("dns", "app.example.com", True, "x").line().startswith("ok")


def test_secrets_are_complete_or_the_missing_keys_are_named(paths):
    schema = load_schema(paths)
    assert "no secrets for env 'staging'" in preflight.secrets_item("staging", schema).detail
    init_env("staging", paths, schema, "unit test")
    item = preflight.secrets_item("staging", schema)
    assert not item.ok and "FRONTEND_URL: missing" in item.detail and "NEXT_PUBLIC_API_URL: missing" in item.detail
    values = load("staging", paths)
    values.update(NODE_ENV="production", FRONTEND_URL="https://staging.example.com",
                  NEXT_PUBLIC_API_URL="https://staging.example.com/api")
    save("staging", values, schema, paths)
    assert preflight.secrets_item("staging", schema).ok
