"""The env's error tracker as vigil derives it: where it is served, its DSN and token from one secret, the
DSN each web host's env files get, and the pages' connect-src that lets browsers report to it."""

import re

import pytest

from tests.support.inventories import layout
from vigil.core.errors import ConfigError
from vigil.core.roles import load_role
from vigil.deploy.edge import content_security_policy, error_tracker_origin, with_connect_source
from vigil.sandbox.paths import CA_DIR
from vigil.vault.derive import derive_values
from vigil.vault.error_tracking import api_token, dsn, errors_site, project_key
from vigil.vault.schema import load_schema

WATCHED = {"web": ["web1", "web2"], "db": ["db1"], "monitor": ["mon1"]}
KEY = "bugsink-secret-key-for-unit-tests-0123456789-abcdefghijklmnop"


def test_the_dsn_key_and_the_token_are_derived_apart_and_stable():
    key, token = project_key(KEY), api_token(KEY)
    assert re.fullmatch(r"[0-9a-f]{32}", key) and re.fullmatch(r"[0-9a-f]{40}", token)
    assert not token.startswith(key)  # neither gives the other away
    assert (project_key(KEY), api_token(KEY)) == (key, token)
    assert project_key(KEY + "x") != key and api_token(KEY + "x") != token
    with pytest.raises(ConfigError, match="BUGSINK_SECRET_KEY is empty"):
        project_key("")


@pytest.mark.parametrize("groups, host_vars, expected", [
    # (inventory groups, monitor host's vars, (host, server name, verify) or None)
    (WATCHED, {}, ("mon1", "203.0.113.4", True)),  # nginx_tls: certbot, from a public CA
    (WATCHED, {"nginx_tls": "local-ca"}, ("mon1", "203.0.113.4", str(CA_DIR / "ca.crt"))),
    (WATCHED, {"errors_server_name": "errors.example.org"}, ("mon1", "errors.example.org", True)),
    (WATCHED, {"errors_enabled": False}, None),
    ({"web": ["web1"], "db": ["db1"]}, {}, None),
])
def test_the_site_is_the_monitor_hosts_unless_turned_off(groups, host_vars, expected):
    inventory = layout(groups, host_vars={"mon1": host_vars})
    site = errors_site(inventory)
    assert (None if site is None else (site.host, site.server_name, site.verify)) == expected


def test_a_server_name_that_is_no_host_name_is_refused_naming_the_key():
    inventory = layout(WATCHED, host_vars={"mon1": {"errors_server_name": "errors.example.org/x"}})
    with pytest.raises(ConfigError, match="errors_server_name"):
        errors_site(inventory)


def test_every_web_host_gets_the_dsn_unless_the_env_sets_its_own(paths):
    schema = load_schema(paths)
    inventory = layout(WATCHED)
    topology = schema.topology(inventory)
    values = {"BUGSINK_SECRET_KEY": KEY, "DB_PASSWORD": "p" * 32}
    services = list(schema.services.values())
    expected = f"https://{project_key(KEY)}@203.0.113.4/1"
    for host in ("web1", "web2"):
        derived = derive_values(schema, values, topology, inventory.hosts[host], services)
        assert derived["SENTRY_DSN"] == derived["NEXT_PUBLIC_SENTRY_DSN"] == expected
    assert dsn(errors_site(inventory), KEY) == expected
    own = {**values, "SENTRY_DSN": "https://k@o1.ingest.sentry.io/2", "NEXT_PUBLIC_SENTRY_DSN": "https://k@o1.ingest.sentry.io/2"}
    derived = derive_values(schema, own, topology, inventory.hosts["web1"], services)
    assert "SENTRY_DSN" not in derived and "NEXT_PUBLIC_SENTRY_DSN" not in derived


def test_without_a_monitor_host_the_app_gets_no_dsn(paths):
    schema = load_schema(paths)
    inventory = layout({"web": ["web1"], "db": ["web1"]})
    derived = derive_values(schema, {"DB_PASSWORD": "p" * 32}, schema.topology(inventory), inventory.hosts["web1"],
                            list(schema.services.values()))
    assert "SENTRY_DSN" not in derived and "DATABASE_URL" in derived


@pytest.mark.parametrize("policy, expected", [
    ("default-src 'self'", "default-src 'self'; connect-src 'self' https://errors.example.org"),
    ("default-src 'self'; connect-src 'self' https://api.example.org",
     "default-src 'self'; connect-src 'self' https://api.example.org https://errors.example.org"),
    ("connect-src 'self' https://errors.example.org", "connect-src 'self' https://errors.example.org"),
])
def test_pages_may_connect_to_the_error_tracker(policy, expected):
    assert with_connect_source(policy, "https://errors.example.org") == expected


def nginx_vars(secrets: dict, **host_vars):
    inventory = layout(WATCHED, host_vars={"mon1": host_vars})
    return inventory.vars_for(inventory.hosts["web1"], [load_role("nginx")], secrets=lambda: secrets)


@pytest.mark.parametrize("secrets, monitor_vars, origin", [
    ({}, {}, "https://203.0.113.4"),
    ({}, {"errors_server_name": "errors.example.org"}, "https://errors.example.org"),
    ({}, {"errors_enabled": False}, None),
    ({"NEXT_PUBLIC_SENTRY_DSN": "https://abc@o1.ingest.sentry.io/42"}, {}, "https://o1.ingest.sentry.io"),
    ({"NEXT_PUBLIC_SENTRY_DSN": "https://abc@errors.example.org:8443/1"}, {}, "https://errors.example.org:8443"),
])
def test_the_origin_is_the_envs_own_dsn_else_its_bugsink(secrets, monitor_vars, origin):
    vars = nginx_vars(secrets, **monitor_vars)
    assert error_tracker_origin(vars) == origin
    assert (f"connect-src 'self' {origin}" in content_security_policy(vars)) is (origin is not None)


def test_a_dsn_whose_origin_could_break_nginxs_quotes_is_refused():
    vars = nginx_vars({"NEXT_PUBLIC_SENTRY_DSN": 'https://abc@errors.example.org"x/1'})
    with pytest.raises(ConfigError, match="NEXT_PUBLIC_SENTRY_DSN"):
        error_tracker_origin(vars)


def test_an_ipv6_site_is_bracketed_in_its_urls():
    inventory = layout(WATCHED, host_vars={"mon1": {"errors_server_name": "2001:db8::9"}})
    site = errors_site(inventory)
    assert site.origin == "https://[2001:db8::9]"
    assert dsn(site, KEY) == f"https://{project_key(KEY)}@[2001:db8::9]/1"
