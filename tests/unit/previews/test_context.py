"""Which hosts previews run on, read from the env's inventory: the example production one, with previews on."""

import pytest

from tests.support.sandbox_hosts import REPO
from vigil.core.errors import ConfigError
from vigil.previews.lifecycle import Context


@pytest.fixture
def inventory_with(tmp_path, monkeypatch):
    def write(preview_hosts: str | None, domain: str = "preview.example.com", more_vars: str = "",
              second_domain: str | None = "two.preview.example.com"):
        text = (REPO / "inventory" / "production.example.yml").read_text()
        text = text.replace("\nvars:\n", f"\nvars:\n  previews_domain: '{domain}'\n{more_vars}", 1)
        if second_domain is not None:  # web2 under a domain (and a wildcard record) of its own
            text = text.replace("private_address: 10.0.0.11}",
                                f"private_address: 10.0.0.11, vars: {{previews_domain: '{second_domain}'}}}}", 1)
        if preview_hosts is not None:
            text = text.replace("\ngroups:\n", f"\ngroups:\n  preview:\n    hosts: [{preview_hosts}]\n", 1)
        (tmp_path / "production.yml").write_text(text)
        monkeypatch.setenv("VIGIL_INVENTORY", str(tmp_path))
    return write


@pytest.mark.parametrize("preview_hosts, expected", [
    (None, ["web1", "web2"]),  # no preview group: the web hosts
    ("web2", ["web2"]),
])
def test_previews_run_on_the_preview_group_else_the_web_hosts(inventory_with, preview_hosts, expected):
    inventory_with(preview_hosts)
    context = Context.of("production")
    assert [host.name for host in context.hosts] == expected
    # Each under its own host's domain, which its wildcard DNS record points at it.
    assert context.name_of("x-0a1b2c3d", "web2") == "x-0a1b2c3d.two.preview.example.com"


@pytest.mark.parametrize("preview_hosts, domain, second_domain, message", [
    # Onboarding gives only web hosts the apps' runtime, the database's certificate and its firewall opening.
    ("web1, db1", "preview.example.com", "two.preview.example.com", "groups.preview: db1 not in group web"),
    (None, "", "two.preview.example.com", "previews_domain is not set for web1"),
    # One wildcard record for two hosts would send a preview's name to the host that does not run it.
    (None, "preview.example.com", None, "the preview hosts web1, web2 share a previews_domain"),
])
def test_previews_refuse_an_inventory_they_cannot_run_in(inventory_with, preview_hosts, domain, second_domain,
                                                         message):
    inventory_with(preview_hosts, domain, second_domain=second_domain)
    with pytest.raises(ConfigError, match=message):
        Context.of("production")



@pytest.mark.parametrize("more_vars, expected", [
    ("", None),  # wildcard: one certificate (DNS-01) serves every preview
    ("  previews_certificates: per-name\n", {"name": "feature-x-0a1b2c3d.preview.example.com",
                                             "acme_root": "/var/www/html", "email": "ops@example.com", "server": ""}),
    ("  previews_certificates: per-name\n  nginx_tls: local-ca\n", None),  # the sandbox CA's wildcard serves all
])
def test_a_preview_gets_a_certificate_of_its_own_only_when_asked_and_certbot_issues(inventory_with, more_vars,
                                                                                     expected):
    inventory_with(None, more_vars=more_vars)
    assert Context.of("production").certificate("feature-x-0a1b2c3d", "web1") == expected


def test_an_unknown_certificate_mode_is_refused_naming_the_key(inventory_with):
    inventory_with(None, more_vars="  previews_certificates: per-host\n")
    with pytest.raises(ConfigError, match="previews_certificates"):
        Context.of("production")
