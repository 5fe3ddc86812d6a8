"""Push plans and derived values: env files whose values travel on stdin, and DATABASE_URL per host."""

from pathlib import Path

import pytest

from tests.support.inventories import layout as shared_layout
from vigil.core.errors import ConfigError
from vigil.core.inventory import Host, Inventory
from vigil.core.paths import REPO_ROOT
from vigil.facts.files import FileState
from vigil.vault.derive import derive_values, postgresql_url
from vigil.vault.env_files import parse_dotenv
from vigil.vault.push import push_plans
from vigil.vault.schema import check_rule
from vigil.vault.store import load

REPO = REPO_ROOT


# --- push plans --------------------------------------------------------------------


def test_push_plan_keeps_values_out_of_every_command_line(initialised, schema):
    values = load("sandbox", initialised)
    host = Host("vps1", "10.213.1.2", 22, "root", None, ("web", "db"), 5, 30)
    inventory = Inventory("sandbox", Path("inventory/sandbox.yml"), Path("k"), {"vps1": host},
                          {"web": ["vps1"], "db": ["vps1"]}, {}, {}, {})
    (plan,) = push_plans(inventory, schema, values, "sandbox", None)
    files = [op for op in plan.operations if type(op).__name__ == "File"]
    assert [(f.path, f.owner, f.mode, f.secret) for f in files] == [
        ("/etc/together-pray/backend.env", "together-pray", "0600", True),
        ("/etc/together-pray/frontend.env", "together-pray", "0600", True),
    ]
    backend = parse_dotenv(files[0].content.decode(), "backend")
    assert set(backend) == {"NODE_ENV", "DATABASE_URL", "JWT_SECRET", "JWT_REFRESH_SECRET", "FRONTEND_URL",
                            "SANDBOX_TEST_ROUTES"}  # the sandbox's alone
    assert "DB_PASSWORD" not in files[1].content.decode()
    fresh = {
        f"file:{p}": FileState(None) for p in ("/etc/together-pray/backend.env", "/etc/together-pray/frontend.env")
    }
    fresh["file:/etc/together-pray"] = FileState("directory", "0750", "root", "together-pray")
    for op in files:
        for command in op.plan(fresh).commands:
            rendered = command.render("deploy")
            assert all(value not in rendered for value in values.values() if len(value) > 8)
            assert command.stdin  # the content travels on stdin


def layout(web: list[str], db: list[str], private: dict | None = None) -> Inventory:
    return shared_layout({"web": web, "db": db}, private, {"db1": {"postgresql_user": "tp_app"}})


@pytest.mark.parametrize("inventory, host, url", [
    # The database on the web host itself: loopback, no TLS needed.
    (layout(["web1"], ["web1"]), "web1", "postgresql://together_pray:p%40ss@127.0.0.1:5432/together_pray"),
    # A separate database host: its private address, TLS required; the role name from its vars.
    (layout(["web1", "web2"], ["db1"], {"db1": "10.0.0.5"}), "web2",
     "postgresql://tp_app:p%40ss@10.0.0.5:5432/together_pray?sslmode=verify-full&sslrootcert=/etc/db.crt"),
    (layout(["web1"], ["db1"], {"db1": "fd00::5"}), "web1",
     "postgresql://tp_app:p%40ss@[fd00::5]:5432/together_pray?sslmode=verify-full&sslrootcert=/etc/db.crt"),
    # No private address: the public one.
    (layout(["web1"], ["db1"]), "web1",
     "postgresql://tp_app:p%40ss@203.0.113.2:5432/together_pray?sslmode=verify-full&sslrootcert=/etc/db.crt"),
])
def test_database_url_is_derived_per_host(schema, inventory, host, url):
    assert postgresql_url(schema.topology(inventory), inventory.hosts[host], "p@ss", "/etc/db.crt") == url
    assert check_rule(schema.keys["DATABASE_URL"], "production", url, {"DB_PASSWORD": "p@ss"}) == []


@pytest.mark.parametrize("inventory, fetched, certificate_on", [
    (layout(["web1"], ["web1"]), 0, []),  # all local: the database host is never asked
    (layout(["web1", "web2"], ["db1"], {"db1": "10.0.0.5"}), 1, ["web1", "web2"]),  # asked once for both
    (layout(["web1", "web2"], ["web1"]), 1, ["web2"]),
])
def test_web_hosts_on_other_machines_get_the_database_certificate_beside_the_url(
    initialised, schema, inventory, fetched, certificate_on
):
    calls = []

    def fetch(topology):
        calls.append(topology.database("the test needs one").name)
        return "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    plans = push_plans(inventory, schema, load("sandbox", initialised), "sandbox", "web", database_certificate=fetch)
    holders = [plan.host.name for plan in plans
               if any(getattr(op, "path", "") == "/etc/together-pray/database-server.crt" for op in plan.operations)]
    assert (len(calls), holders) == (fetched, certificate_on)
    # The backend reads it when it starts: a new certificate (a rebuilt database host) restarts it.
    for plan in plans:
        for op in plan.operations:
            if getattr(op, "path", "") == "/etc/together-pray/database-server.crt":
                assert op.notify == ("restart backend",) and "restart backend" in plan.handlers


def test_a_database_url_that_is_set_wins_and_two_database_hosts_need_one(schema):
    inventory = layout(["web1"], ["db1", "db2"])
    services = list(schema.services.values())
    explicit = {"DB_PASSWORD": "x" * 24, "DATABASE_URL": "postgresql://u:p@managed.example/app?sslmode=require"}
    topology = schema.topology(inventory)
    assert derive_values(schema, explicit, topology, inventory.hosts["web1"], services) == {}
    with pytest.raises(
        ConfigError,
        match=r"has 2 database hosts \(db1, db2\): DATABASE_URL is unset, and vigil derives it "
        r"for exactly one database host",
    ):
        derive_values(schema, {"DB_PASSWORD": "x" * 24}, topology, inventory.hosts["web1"], services)


def test_rotating_the_database_password_pushes_to_the_services_that_read_it_derived(schema):
    assert schema.services_using("DB_PASSWORD", {}) == ["backend"]
    assert schema.services_using("DB_PASSWORD", {"DATABASE_URL": "postgresql://u:p@h/app"}) == []
