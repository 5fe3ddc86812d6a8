"""The roles' plans for where the database runs: PostgreSQL's listen addresses and client rules, and the
firewall rules that let the web hosts (and no one else) reach it."""

import re
from pathlib import Path

import pytest

from tests.support.inventories import layout, role_vars
from vigil.core.errors import ConfigError
from vigil.core.inventory import Host, Inventory
from vigil.core.roles import load_role
from vigil.operations.apt import AptPackages
from vigil.operations.files import Absent
from vigil.operations.postgresql import PostgresClients, PostgresSettings
from vigil.operations.systemd import SystemdUnit

# --- a database host of its own ---------------------------------------------------------

SPLIT = layout(
    {"web": ["web1", "web2"], "db": ["db1"]}, private={"web1": "10.0.0.11", "web2": "10.0.0.12", "db1": "10.0.0.5"}
)
SHARED = layout({"web": ["web1"], "db": ["web1"]})
# The database on the first of two web hosts: the other reaches it over the private network.
FIRST_OF_TWO = layout({"web": ["web1", "web2"], "db": ["web1"]}, private={"web1": "10.0.0.11", "web2": "10.0.0.12"})


@pytest.mark.parametrize("inventory, host, listen, clients, ssl", [
    (SHARED, "web1", "localhost", [], None),
    (SPLIT, "db1", "localhost,10.0.0.5", ["10.0.0.11", "10.0.0.12"], "on"),
    (FIRST_OF_TWO, "web1", "localhost,10.0.0.11", ["10.0.0.12"], "on"),  # itself: over loopback
])
def test_postgresql_listens_and_admits_by_layout(inventory, host, listen, clients, ssl):
    role = load_role("postgresql")
    vars = inventory.vars_for(
        inventory.hosts[host], [role], secrets=lambda: {"DB_PASSWORD": "a-database-password-of-24+"}
    )
    operations = role.tasks(role, vars)
    settings = next(op for op in operations if isinstance(op, PostgresSettings)).settings
    assert (settings["listen_addresses"], settings.get("ssl")) == (listen, ssl)
    assert next(op for op in operations if isinstance(op, PostgresClients)).addresses == clients


PREVIEWS_ON = {"previews_domain": "preview.example.org"}


@pytest.mark.parametrize("groups, previews", [
    ({"web": ["web1", "web2"], "db": ["web1"]}, None),  # previews_domain unset: no rule for previews at all
    ({"web": ["web1", "web2"], "db": ["web1"], "preview": ["web2"]}, ["10.0.0.12"]),
    ({"web": ["web1", "web2"], "db": ["web1"]}, ["10.0.0.12"]),  # no preview group: the web hosts
    ({"web": ["web1", "web2"], "db": ["web1"], "preview": ["web1"]}, []),  # this host's previews: loopback
])
def test_previews_may_reach_their_own_databases_from_the_preview_hosts(groups, previews):
    host_vars = {"web1": PREVIEWS_ON} if previews is not None else {}
    inventory = layout(groups, private={"web1": "10.0.0.11", "web2": "10.0.0.12"}, host_vars=host_vars)
    role = load_role("postgresql")
    vars = inventory.vars_for(inventory.hosts["web1"], [role],
                              secrets=lambda: {"DB_PASSWORD": "a-database-password-of-24+"})
    clients = next(op for op in role.tasks(role, vars) if isinstance(op, PostgresClients))
    assert clients.previews == previews
    assert clients.addresses == ["10.0.0.12"]  # the app's own rule is the same either way


@pytest.mark.parametrize(
    "inventory, host, opened",
    [
        (SHARED, "web1", []),
        (
            SPLIT,
            "db1",
            ["allow from 10.0.0.11 to any port 5432 proto tcp", "allow from 10.0.0.12 to any port 5432 proto tcp"],
        ),
        (SPLIT, "web1", []),  # only hosts of `hosts: db` open anything
        (FIRST_OF_TWO, "web1", ["allow from 10.0.0.12 to any port 5432 proto tcp"]),  # never itself
    ],
)
def test_the_firewall_opens_the_database_port_to_the_web_hosts_only(inventory, host, opened):
    role = load_role("firewall")
    firewall = role.tasks(role, role_vars(role, inventory, host, firewall_ssh_port=22))[1]
    assert [rule for rule in firewall.rules if "5432" in rule] == opened


@pytest.mark.parametrize("rules, message", [
    ([{"hosts": "db", "port": 5432}], "firewall_group_rules[0]: expected {hosts: GROUP, port: PORT, from: GROUP}"),
    ([{"hosts": "db", "port": 0, "from": "web"}], "firewall_group_rules[0]: expected"),
    ([{"hosts": "db", "port": 5432, "from": "webs"}], "firewall_group_rules[0].from: no group 'webs' in the inventory"),
    ([{"hosts": "dbs", "port": 5432, "from": "web"}], "firewall_group_rules[0].hosts: no group 'dbs' in the inventory"),
    ("db:5432", "firewall_group_rules: expected a list"),
])
def test_bad_group_rules_name_the_rule(rules, message):
    role = load_role("firewall")
    with pytest.raises(ConfigError, match=re.escape(message)):
        role.tasks(role, role_vars(role, SPLIT, "db1", firewall_group_rules=rules))


def test_a_peer_known_only_by_name_needs_a_private_address():
    named = Inventory("sandbox", Path("inventory/sandbox.yml"), Path("k"),
                      {"db1": Host("db1", "10.0.0.5", 22, "deploy", None, ("db",), 5, 30),
                       "web1": Host("web1", "web1.example.com", 22, "deploy", None, ("web",), 5, 30)},
                      {"web": ["web1"], "db": ["db1"]}, {}, {}, {})
    role = load_role("firewall")
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "hosts.web1: its address 'web1.example.com' is a name; other hosts' "
            "firewall and database rules need an IP: set hosts.web1.private_address"
        ),
    ):
        role.tasks(role, role_vars(role, named, "db1"))




# --- what the dump backups left on hosts onboarded before pgBackRest ------------------------------


def test_the_database_host_stops_the_dump_backups_timers_then_removes_their_program_and_units_not_the_dumps():
    role = load_role("postgresql")
    vars = SHARED.vars_for(SHARED.hosts["web1"], [role], secrets=lambda: {"DB_PASSWORD": "a-database-password-of-24+"})
    operations = role.tasks(role, vars)
    stopped = [op for op in operations if isinstance(op, SystemdUnit) and op.unit.startswith("vigil-backup-")]
    assert [(op.unit, op.enabled, op.running) for op in stopped] == [
        ("vigil-backup-create.timer", False, False), ("vigil-backup-verify.timer", False, False)]
    removed = [op for op in operations if isinstance(op, Absent)]
    assert {op.path for op in removed} == {
        "/usr/local/sbin/vigil-backup", "/etc/vigil/backup.json", "/var/lib/vigil/backup-status.json",
        *(f"/etc/systemd/system/vigil-backup-{job}.{kind}" for job in ("create", "verify")
          for kind in ("timer", "service")),
    }
    assert [op.path for op in removed if op.notify == ("reload systemd",)] == [
        op.path for op in removed if op.path.startswith("/etc/systemd/system/")]
    # Stopped before their unit files go, or systemd would keep a running timer it can no longer describe.
    assert max(operations.index(op) for op in stopped) < min(operations.index(op) for op in removed)
    assert not any("/var/backups" in str(getattr(op, "path", "")) for op in operations)  # the dumps are the operator's
    assert any(isinstance(op, AptPackages) and list(op.packages) == ["age"] for op in operations)  # backup.export's
