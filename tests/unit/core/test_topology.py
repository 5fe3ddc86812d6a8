"""Topology: the one answer to which hosts run the apps and which is the database, from onboard.yml's plays
and the app's services."""

import textwrap

import pytest

from vigil.core.errors import ConfigError
from vigil.core.inventory import load_inventory
from vigil.core.topology import Topology

SERVICES = {"backend": "web", "frontend": "web"}


def topology(tmp_path, groups: str, hosts: str, services=SERVICES) -> Topology:
    (tmp_path / "staging.yml").write_text(textwrap.dedent(f"""
        defaults: {{user: deploy}}
        groups: {groups}
        hosts: {hosts}
    """))
    return Topology.read(load_inventory("staging", tmp_path), services, "secrets/schema.yml")


def names(hosts) -> list[str]:
    return [host.name for host in hosts]


@pytest.mark.parametrize("groups, hosts, web, database", [
    # Split: two web hosts and a database host.
    ("{web: {hosts: [web1, web2]}, db: {hosts: [db1]}}",
     "{web1: {address: 10.0.0.1}, web2: {address: 10.0.0.2}, db1: {address: 10.0.0.3}}", ["web1", "web2"], "db1"),
    # One host doing everything.
    ("{web: {hosts: [vps1]}, db: {hosts: [vps1]}}", "{vps1: {address: 10.0.0.1}}", ["vps1"], "vps1"),
    # A database vigil does not run (managed elsewhere): no db group, no database host.
    ("{web: {hosts: [web1]}}", "{web1: {address: 10.0.0.1}}", ["web1"], None),
])
def test_web_and_database_hosts(tmp_path, groups, hosts, web, database):
    layout = topology(tmp_path, groups, hosts)
    assert names(layout.app_hosts()) == web == names(layout.app_hosts("backend"))
    assert names(layout.running("nginx")) == web
    assert getattr(layout.database_or_none(), "name", None) == database
    assert names(layout.running("postgresql")) == ([database] if database else [])
    assert all(layout.runs_app(name) for name in web) and not layout.runs_app("nobody")


def test_services_may_run_on_different_groups(tmp_path):
    layout = topology(tmp_path, "{web: {hosts: [web1]}, edge: {hosts: [edge1]}, db: {hosts: [db1]}}",
                      "{web1: {address: 10.0.0.1}, edge1: {address: 10.0.0.2}, db1: {address: 10.0.0.3}}",
                      {"backend": "web", "frontend": "edge"})
    assert (names(layout.app_hosts("backend")), names(layout.app_hosts("frontend"))) == (["web1"], ["edge1"])
    assert names(layout.app_hosts()) == ["web1", "edge1"]


@pytest.mark.parametrize("groups, hosts, message", [
    # No db group: the message says which pattern of onboard.yml found nothing.
    ("{web: {hosts: [web1]}}", "{web1: {address: 10.0.0.1}}",
     "has 0 database hosts (none; playbooks/onboard.yml installs PostgreSQL on 'db', which is neither a group "
     "nor a host there): "),
    ("{web: {hosts: [web1]}, db: {hosts: []}}", "{web1: {address: 10.0.0.1}}", "has 0 database hosts (none): "),
    ("{web: {hosts: [web1]}, db: {hosts: [db1, db2]}}",
     "{web1: {address: 10.0.0.1}, db1: {address: 10.0.0.2}, db2: {address: 10.0.0.3}}",
     "has 2 database hosts (db1, db2): "),
])
def test_a_task_that_needs_one_database_host_says_why(tmp_path, groups, hosts, message):
    layout = topology(tmp_path, groups, hosts)
    with pytest.raises(ConfigError) as raised:
        layout.database("backup.export dumps the env's one database")
    assert str(raised.value).endswith(f"staging.yml {message}backup.export dumps the env's one database")


def test_a_service_naming_an_unknown_group_names_the_schema_key_when_its_hosts_are_needed(tmp_path):
    layout = topology(tmp_path, "{web: {hosts: [web1]}, db: {hosts: [db1]}}",
                      "{web1: {address: 10.0.0.1}, db1: {address: 10.0.0.2}}", {"backend": "web", "frontend": "webz"})
    # A task that needs only the database host works without the web groups.
    assert layout.database("backups").name == "db1"
    with pytest.raises(ConfigError, match=r"secrets/schema.yml: services.frontend.hosts"):
        layout.app_hosts()
