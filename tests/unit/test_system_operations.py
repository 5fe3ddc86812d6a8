"""Plans and parsers for ufw, Node.js and PostgreSQL operations (no host)."""

import base64
import hashlib
import hmac
import os
import re
from pathlib import Path

import pytest

from vigil import postgresql as P
from vigil.commands import Secret
from vigil.config import Host, Inventory, load_role
from vigil.errors import ConfigError
from vigil.nodejs import NodeVersion, parse_node_version, satisfies
from vigil.operations import OperationError
from vigil.ufw import Firewall, UfwState, parse_ufw

ACTIVE = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     LIMIT IN    Anywhere
Default: drop (incoming), accept (outgoing)
@@added
Added user rules (see 'ufw status' for running firewall):
ufw allow from 10.0.0.5 to any port 22 proto tcp
ufw limit 22/tcp
ufw allow 8080/tcp
"""
INACTIVE = """Status: inactive
Default: drop (incoming), accept (outgoing)
@@added
Added user rules (see 'ufw status' for running firewall):
(None)
"""


def layout(groups: dict[str, list[str]], private: dict[str, str] | None = None, host_vars: dict | None = None) -> Inventory:
    """An inventory of web/db hosts at 203.0.113.N, with optional private addresses."""
    names = list(dict.fromkeys(name for members in groups.values() for name in members))
    hosts = {name: Host(name, f"203.0.113.{index}", 22, "deploy", None,
                        tuple(group for group, members in groups.items() if name in members), 5, 30,
                        private_address=(private or {}).get(name)) for index, name in enumerate(names, 1)}
    return Inventory("sandbox", Path("inventory/sandbox.yml"), Path("k"), hosts, groups, {}, {}, host_vars or {})


def role_vars(role, inventory: Inventory | None = None, host: str = "web1", **overrides):
    inventory = inventory or layout({"web": ["web1"], "db": ["web1"]})
    return inventory.vars_for(inventory.hosts[host], [role], overrides)


def test_parse_ufw_active_and_inactive():
    assert parse_ufw(ACTIVE, 0) == UfwState(True, True, {"incoming": "deny", "outgoing": "allow", "routed": "deny"},
                                            ("allow from 10.0.0.5 to any port 22 proto tcp", "limit 22/tcp", "allow 8080/tcp"))
    assert parse_ufw(INACTIVE, 0) == UfwState(True, False, {"incoming": "drop", "outgoing": "accept"}, ())
    assert parse_ufw("", 127) == UfwState(False)


WANTED = ["allow from 10.0.0.5 to any port 22 proto tcp", "limit 22/tcp", "allow 80/tcp", "allow 443/tcp"]


@pytest.mark.parametrize("state, commands", [
    (parse_ufw(INACTIVE, 0), ["ufw allow from 10.0.0.5 to any port 22 proto tcp", "ufw limit 22/tcp", "ufw allow 80/tcp",
                              "ufw allow 443/tcp", "ufw --force enable"]),
    # Rules are added (a source rule on top) before any is removed; SSH is never without a rule.
    (parse_ufw(ACTIVE, 0), ["ufw allow 80/tcp", "ufw allow 443/tcp", "ufw delete allow 8080/tcp"]),
    (UfwState(True, True, {"incoming": "deny", "outgoing": "allow"}, ("limit 22/tcp",)),
     ["ufw prepend allow from 10.0.0.5 to any port 22 proto tcp", "ufw allow 80/tcp", "ufw allow 443/tcp"]),
    (UfwState(True, True, {"incoming": "allow", "outgoing": "allow"}, tuple(WANTED)), ["ufw default deny incoming"]),
    (UfwState(True, True, {"incoming": "deny", "outgoing": "allow"}, tuple(WANTED)), []),
])
def test_firewall_plan(state, commands):
    plan = Firewall(WANTED).plan({"ufw": state})
    assert [c.display("root") for c in plan.commands] == commands


@pytest.mark.parametrize("rule", ["allow 22", "allow 22/tcp; reboot", "allow from $(id) to any port 22 proto tcp", "open 80/tcp"])
def test_firewall_refuses_odd_rules(rule):
    with pytest.raises(ValueError, match="not a firewall rule"):
        Firewall([rule])


@pytest.mark.parametrize("version, engines, ok", [
    ((20, 19, 2), ">=20", True), ((18, 19, 0), ">=20", False), ((20, 1, 0), "^20.11", False), ((20, 12, 0), "^20.11", True),
    ((22, 0, 0), "18.x || >=20 <23", True), ((23, 0, 0), "18.x || >=20 <23", False), ((18, 5, 0), "18.x || >=20 <23", True),
    ((20, 0, 0), "20", True), ((21, 0, 0), "20", False), ((20, 9, 9), "~20.9", True), ((20, 10, 0), "~20.9", False),
    ((5, 0, 0), "*", True),
])
def test_engines_ranges(version, engines, ok):
    assert satisfies(version, engines) is ok


def test_node_version_check():
    assert parse_node_version("v20.19.2\n", 0) == (20, 19, 2)
    assert parse_node_version("", 127) is None
    apps = {"backend/package.json": ">=18.18", "frontend/package.json": ">=20"}
    assert not NodeVersion(apps).plan({"node:version": (20, 19, 2)}).changes
    # The first range the version misses is named with the file that declares it.
    with pytest.raises(OperationError, match=r"Node.js v18.19.0 does not satisfy engines.node '>=20' of frontend/package.json"):
        NodeVersion(apps).plan({"node:version": (18, 19, 0)})
    with pytest.raises(ValueError):
        NodeVersion({"x": "latest please"})


@pytest.mark.parametrize("content, message", [
    (None, "nodejs_app_manifests[0]: {path} does not exist"),
    ("{not json", "not a readable package.json"),
    ('{"name": "x"}', "declares no engines.node"),
    ('{"engines": {"node": "latest"}}', "engines.node: not an npm engines range: 'latest'"),
])
def test_an_app_manifest_without_a_usable_engines_range_is_a_clear_error(tmp_path, content, message):
    from vigil.config import REPO_ROOT
    from vigil.errors import ConfigError

    nodejs_role = load_role("nodejs")
    manifest = tmp_path / "package.json"
    if content is not None:
        manifest.write_text(content)
    path = os.path.relpath(manifest, REPO_ROOT)
    with pytest.raises(ConfigError, match=re.escape(message.format(path=path))):
        nodejs_role.tasks(nodejs_role, role_vars(nodejs_role, nodejs_app_manifests=[path]))


def test_the_shipped_app_manifests_set_the_node_range():
    nodejs_role = load_role("nodejs")
    check = nodejs_role.tasks(nodejs_role, role_vars(nodejs_role))[-1]
    assert check.requirements == {"examples/together-pray/backend/package.json": ">=18.18",
                                  "examples/together-pray/frontend/package.json": ">=18.18"}
    assert not check.plan({"node:version": (18, 19, 0)}).changes  # Debian 12's Node.js


def verifier(password: str, salt: bytes = b"0123456789abcdef", iterations: int = 4096) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{base64.b64encode(salt).decode()}${base64.b64encode(stored).decode()}:{base64.b64encode(server).decode()}"


def test_scram_verifier_check():
    assert P.scram_matches(verifier("right-password-1"), "right-password-1")
    assert not P.scram_matches(verifier("right-password-1"), "wrong-password-1")
    assert not P.scram_matches("md5abcdef", "anything")


@pytest.mark.parametrize("state, summary", [
    (None, "create role app_user once PostgreSQL runs"),
    ((False, ""), "create role app_user"),
    ((True, verifier("old-password-9")), "set the password of app_user (it differs from secrets)"),
])
def test_role_plan_keeps_the_password_on_stdin(state, summary):
    password = Secret("new-password-9'quote")
    plan = P.PostgresRole("app_user", password).plan({"postgresql:role:app_user": state})
    (command,) = plan.commands
    assert plan.summary == summary
    assert "new-password" not in command.render("root") and b"new-password" not in command.stdin
    sent = command.stdin.decode().split("password '")[1].split("'")[0]
    assert P.scram_matches(sent, "new-password-9'quote")  # the verifier PostgreSQL will store


def test_role_with_the_right_password_is_left_alone():
    plan = P.PostgresRole("app_user", Secret("same-password-1")).plan({"postgresql:role:app_user": (True, verifier("same-password-1"))})
    assert not plan.changes


@pytest.mark.parametrize("owner, commands", [
    ("", ["sudo -n -H -u postgres -- createdb --owner app -- appdb"]),
    ("app", []),
    ("postgres", ["sudo -n -H -u postgres -- psql -X -q -t -A -v ON_ERROR_STOP=1 -c 'alter database appdb owner to app'"]),
])
def test_database_plan(owner, commands):
    plan = P.PostgresDatabase("appdb", owner="app").plan({"postgresql:database:appdb": owner})
    assert [c.display("root") for c in plan.commands] == commands


def test_settings_plan_sizes_connections_from_memory():
    op = P.PostgresSettings({"listen_addresses": "localhost", "max_connections": "auto"})
    key = P.settings_fact(["listen_addresses", "max_connections"]).key
    assert not op.plan({key: {"listen_addresses": "localhost", "max_connections": "64"}, "memory:total-mb": 2048}).changes
    plan = op.plan({key: {"listen_addresses": "*", "max_connections": "100"}, "memory:total-mb": 1024})
    assert [c.display("root").split(" -c ")[1] for c in plan.commands] == [
        "'alter system set listen_addresses = '\"'\"'localhost'\"'\"''", "'alter system set max_connections = '\"'\"'32'\"'\"''"]


@pytest.mark.parametrize("build", [
    lambda: P.PostgresRole("App-User", Secret("x" * 8)),
    lambda: P.PostgresDatabase("db; drop", owner="app"),
    lambda: P.PostgresSettings({"listen_addresses": "'; drop table x; --"}),
])
def test_postgres_operations_refuse_unsafe_names(build):
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize("given, stored", [
    ("203.0.113.7/32", "203.0.113.7"), ("203.0.113.7", "203.0.113.7"), ("10.0.0.1/8", "10.0.0.0/8"),
    ("2001:DB8::1", "2001:db8::1"), ("2001:db8::1/128", "2001:db8::1"),
])
def test_trusted_sources_are_written_the_way_ufw_lists_them(given, stored):
    from vigil.ufw import ufw_source

    assert ufw_source(given, "firewall_ssh_trusted_sources") == stored


@pytest.mark.parametrize("bad", ["dead", "::::", "1.2.3.4/99", "10.0.0.1; reboot"])
def test_bad_trusted_sources_name_the_key(bad):
    from vigil.errors import ConfigError
    from vigil.ufw import ufw_source

    with pytest.raises(ConfigError, match="firewall_ssh_trusted_sources: .* is not an IP address"):
        ufw_source(bad, "firewall_ssh_trusted_sources")


# --- a database host of its own ---------------------------------------------------------

SPLIT = layout({"web": ["web1", "web2"], "db": ["db1"]}, private={"web1": "10.0.0.11", "web2": "10.0.0.12", "db1": "10.0.0.5"})
SHARED = layout({"web": ["web1"], "db": ["web1"]})
# The database on the first of two web hosts: the other reaches it over the private network.
FIRST_OF_TWO = layout({"web": ["web1", "web2"], "db": ["web1"]}, private={"web1": "10.0.0.11", "web2": "10.0.0.12"})


@pytest.mark.parametrize("inventory, host, listen, clients, ssl", [
    (SHARED, "web1", "localhost", [], None),
    (SPLIT, "db1", "localhost,10.0.0.5", ["10.0.0.11", "10.0.0.12"], "on"),
    (FIRST_OF_TWO, "web1", "localhost,10.0.0.11", ["10.0.0.12"], "on"),  # itself: over loopback
])
def test_postgresql_listens_and_admits_by_layout(inventory, host, listen, clients, ssl, monkeypatch):
    from vigil.config import HostVars
    monkeypatch.setattr(HostVars, "secret", lambda self, key: Secret("a-database-password-of-24+"))
    role = load_role("postgresql")
    operations = role.tasks(role, role_vars(role, inventory, host))
    settings = next(op for op in operations if isinstance(op, P.PostgresSettings)).settings
    assert (settings["listen_addresses"], settings.get("ssl")) == (listen, ssl)
    assert next(op for op in operations if isinstance(op, P.PostgresClients)).addresses == clients


@pytest.mark.parametrize("inventory, host, opened", [
    (SHARED, "web1", []),
    (SPLIT, "db1", ["allow from 10.0.0.11 to any port 5432 proto tcp", "allow from 10.0.0.12 to any port 5432 proto tcp"]),
    (SPLIT, "web1", []),  # only hosts of `hosts: db` open anything
    (FIRST_OF_TWO, "web1", ["allow from 10.0.0.12 to any port 5432 proto tcp"]),  # never itself
])
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
    with pytest.raises(ConfigError, match=re.escape("hosts.web1: its address 'web1.example.com' is a name; other hosts' "
                                                    "firewall and database rules need an IP: set hosts.web1.private_address")):
        role.tasks(role, role_vars(role, named, "db1"))


DEBIAN_HBA = "local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n"


@pytest.mark.parametrize("content, addresses, expected", [
    (DEBIAN_HBA, [], DEBIAN_HBA),
    (DEBIAN_HBA, ["10.0.0.11"], DEBIAN_HBA + "\n" + P.HBA_BEGIN + "\nhostssl app app_user 10.0.0.11/32 scram-sha-256\n" + P.HBA_END + "\n"),
    # The block is replaced, not added twice; an emptied list removes it.
    (DEBIAN_HBA + "\n" + P.HBA_BEGIN + "\nhostssl app app_user 10.0.0.9/32 scram-sha-256\n" + P.HBA_END + "\n", ["fd00::1"],
     DEBIAN_HBA + "\n" + P.HBA_BEGIN + "\nhostssl app app_user fd00::1/128 scram-sha-256\n" + P.HBA_END + "\n"),
    (DEBIAN_HBA + "\n" + P.HBA_BEGIN + "\nhostssl app app_user 10.0.0.9/32 scram-sha-256\n" + P.HBA_END + "\n", [], DEBIAN_HBA),
])
def test_pg_hba_block(content, addresses, expected):
    clients = P.PostgresClients("app", "app_user", addresses)
    plan = clients.plan({"postgresql:hba": ("/etc/postgresql/15/main/pg_hba.conf", content)})
    if expected == content:
        assert not plan.changes
    else:
        assert plan.changes and plan.commands[0].stdin.decode() == expected
        # Applying it converges: the next plan changes nothing.
        assert not clients.plan({"postgresql:hba": ("/etc/postgresql/15/main/pg_hba.conf", expected)}).changes


# --- users: an admin for provisioning, a deploy user scoped to deploys -------------------------

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJ6mJdzBZ4cQ6Yh0XpB2a3Vn9y1x7S3dF0eKqL8t5Wm team"


def users_vars(admin_user="ops", **overrides):
    inventory = layout({"web": ["web1"]})
    host = inventory.hosts["web1"]
    host = Host(host.name, host.address, 22, "deploy", None, ("web",), 5, 30, admin_user=admin_user).as_admin()
    role = load_role("users")
    values = {"users_admin_authorized_keys": [KEY], "users_deploy_authorized_keys": [KEY], **overrides}
    return role, inventory.vars_for(host, [role], values)


@pytest.mark.parametrize("admin_user, overrides, message", [
    (None, {}, "web1 is provisioned as deploy, not as the admin user ops; set admin_user: ops"),
    ("ops", {"users_admin_user": "deploy"}, "the admin, deploy and app users must be three different users"),
    ("ops", {"users_admin_authorized_keys": []}, "users_admin_authorized_keys: no key for ops"),
    ("ops", {"users_deploy_units": ["-x.service"]}, "users_deploy_units: '-x.service' does not match"),
    ("ops", {"users_deploy_units": ["a b.service"]}, "does not match"),
])
def test_users_role_refuses_what_would_lock_out_or_unscope_the_deploy_user(admin_user, overrides, message):
    role, vars = users_vars(admin_user, **overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        role.tasks(role, vars)


def test_the_deploy_users_sudoers_allows_only_the_helper_and_nginx():
    role, vars = users_vars()
    files = {op.path: op.content.decode() for op in role.tasks(role, vars) if hasattr(op, "content")}
    assert "ops ALL=(ALL:ALL) NOPASSWD: ALL" in files["/etc/sudoers.d/vigil-ops"]
    deploy = [line for line in files["/etc/sudoers.d/vigil-deploy"].splitlines() if line and not line.startswith("#")]
    assert deploy == [
        "Cmnd_Alias VIGIL_DEPLOY = /usr/local/sbin/vigil-app-unit, /usr/local/sbin/vigil-switch-upstream, "
        "/usr/local/sbin/vigil-backup create *, /usr/sbin/nginx -t, /usr/bin/systemctl reload nginx.service",
        "deploy ALL=(root) NOPASSWD: VIGIL_DEPLOY",
        "Defaults:deploy !requiretty",
    ]


@pytest.mark.parametrize("args, code, output", [
    (["restart", "together-pray-backend@blue.service"], 0, "systemctl --no-pager restart -- together-pray-backend@blue.service"),
    (["is-active", "together-pray-backend@blue.service", "together-pray-frontend@green.service"], 0,
     "systemctl --no-pager is-active -- together-pray-backend@blue.service together-pray-frontend@green.service"),
    (["restart", "ssh.service"], 77, "ssh.service is not one of the app's units"),
    (["restart", "together-pray-backend@blue.service", "ssh.service"], 77, "ssh.service is not one of the app's units"),
    (["restart", "together-pray-x.service;reboot"], 77, "is not a unit name"),
    (["restart", "--root=/tmp", "together-pray-backend.service"], 77, "is not a unit name"),
    (["restart", "together-pray-../../x.service"], 77, "is not a unit name"),
    (["edit", "together-pray-backend.service"], 64, "usage"),
    (["daemon-reload"], 64, "usage"),
])
def test_the_app_unit_helper_acts_on_the_apps_units_only(tmp_path, args, code, output):
    import subprocess
    role, vars = users_vars()
    helper = next(op for op in role.tasks(role, vars) if getattr(op, "path", "") == "/usr/local/sbin/vigil-app-unit")
    # The real script, with systemctl swapped for echo so what it would run shows.
    script = tmp_path / "vigil-app-unit"
    script.write_text(helper.content.decode().replace("exec /usr/bin/systemctl", "exec echo systemctl"))
    result = subprocess.run(["sh", str(script), *args], capture_output=True, text=True)
    assert result.returncode == code and output in (result.stdout + result.stderr)


# --- nginx: certificates from certbot, from Let's Encrypt or a private ACME server -------------

def nginx_operations(**overrides):
    from vigil.config import HostVars
    role = load_role("nginx")
    vars = role_vars(role, layout({"web": ["web1"]}), "web1", nginx_tls="certbot", nginx_server_name="app.example.org",
                     nginx_cors_origins=["https://app.example.org"], **overrides)
    return role.tasks(role, vars)


@pytest.mark.parametrize("overrides, server_args, trusts_ca", [
    ({}, [], False),
    ({"nginx_certbot_server": "https://acme.internal:14000/dir", "nginx_certbot_ca_certificate": "{ca}"},
     ["--server", "https://acme.internal:14000/dir"], True),
])
def test_certbot_mode_issues_through_the_webroot_and_reloads_nginx_on_renewal(tmp_path, overrides, server_args, trusts_ca):
    from vigil import tls
    ca = tmp_path / "ca.crt"
    ca.write_bytes(tls.host_certificate("acme", ["acme.internal"], directory=tmp_path / "ca").chain)
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
    from vigil import tls
    issued = tls.host_certificate("acme", ["acme.internal"], directory=tmp_path / "ca")
    (tmp_path / "both.pem").write_bytes(issued.chain + issued.key)
    with pytest.raises(ConfigError, match=re.escape(message)):
        nginx_operations(**{key: value.format(key_and_cert=tmp_path / "both.pem") for key, value in overrides.items()})


@pytest.mark.parametrize("deploy_has_our_key, confirmed", [(True, ("deploy",)), (False, ())])
def test_the_lock_out_check_logs_in_as_deploy_only_with_a_key_deploy_accepts(tmp_path, deploy_has_our_key, confirmed):
    import subprocess
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    ours = (tmp_path / "id.pub").read_text().strip()
    inventory = layout({"web": ["web1"]})
    host = Host("web1", "203.0.113.1", 22, "deploy", tmp_path / "id", ("web",), 5, 30, admin_user="ops").as_admin()
    ssh_role, users_role = load_role("ssh"), load_role("users")
    vars = inventory.vars_for(host, [users_role, ssh_role], {
        "users_admin_authorized_keys": [ours], "users_deploy_authorized_keys": [ours if deploy_has_our_key else KEY]})
    assert ssh_role.handlers(ssh_role, vars)["confirm ssh login"].also_users == confirmed


@pytest.mark.parametrize("args, nginx_accepts, code, backend, frontend", [
    (["backend", "green"], True, 0, 3002, 3101),
    (["frontend", "green"], True, 0, 3001, 3102),
    (["backend", "blue"], True, 0, 3001, 3101),
    (["backend", "green"], False, 1, 3001, 3101),  # nginx -t refuses: the previous file is back
    (["backend", "purple"], True, 64, 3001, 3101),
    (["backend;reboot", "green"], True, 64, 3001, 3101),
    (["backend"], True, 64, 3001, 3101),
])
def test_the_upstream_switch_helper_rewrites_one_upstream_checked(tmp_path, args, nginx_accepts, code, backend, frontend):
    import subprocess
    role = load_role("nginx")
    vars = role_vars(role, layout({"web": ["web1"]}), "web1", nginx_tls="certbot", nginx_server_name="app.example.org",
                     nginx_cors_origins=["https://app.example.org"])
    files = {getattr(op, "path", ""): op for op in role.tasks(role, vars)}
    upstreams = tmp_path / "upstreams.conf"
    upstreams.write_bytes(files["/etc/nginx/conf.d/together-pray-upstreams.conf"].content)
    helper = files["/usr/local/sbin/vigil-switch-upstream"].content.decode()
    # The real script, on a scratch file, with nginx and systemctl stubbed.
    helper = (helper.replace("/etc/nginx/conf.d/together-pray-upstreams.conf", str(upstreams))
              .replace("nginx -t -q", "true" if nginx_accepts else "false")
              .replace("systemctl reload nginx.service", "echo reloaded"))
    script = tmp_path / "switch"
    script.write_text(helper)
    result = subprocess.run(["sh", str(script), *args], capture_output=True, text=True)
    assert result.returncode == code, result.stderr
    text = upstreams.read_text()
    assert f"upstream together_pray_backend {{ server 127.0.0.1:{backend}; keepalive 16; }}" in text
    assert f"upstream together_pray_frontend {{ server 127.0.0.1:{frontend}; keepalive 16; }}" in text
    assert ("reloaded" in result.stdout) is (code == 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["switch", "upstreams.conf"]  # no temporary file left


# What the ufw fact prints when every rule in ufw's files is of a form vigil writes (no `ufw show added`).
FROM_TUPLES = """Status: active
Default: drop (incoming), accept (outgoing)
@@tuples
### tuple ### allow tcp 22 0.0.0.0/0 any 10.213.1.1 in
### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in
### tuple ### allow tcp 5432 0.0.0.0/0 any 10.213.2.2 in
### tuple ### limit tcp 22 ::/0 any ::/0 in
### tuple ### allow udp 51820 ::/0 any 2001:db8::/64 in
"""


def test_rules_read_from_ufw_files_are_worded_as_ufw_show_added_words_them():
    state = parse_ufw(FROM_TUPLES, 0)
    assert state.rules == ("allow from 10.213.1.1 to any port 22 proto tcp", "limit 22/tcp",
                           "allow from 10.213.2.2 to any port 5432 proto tcp", "allow from 2001:db8::/64 to any port 51820 proto udp")
    assert (state.active, state.defaults) == (True, {"incoming": "drop", "outgoing": "accept"})
    # Nothing to do against the rules vigil wants: the same words as `ufw show added` would give.
    wanted = Firewall(["allow from 10.213.1.1 to any port 22 proto tcp", "limit 22/tcp",
                       "allow from 10.213.2.2 to any port 5432 proto tcp", "allow from 2001:db8::/64 to any port 51820 proto udp"])
    assert not wanted.plan({"ufw": state}).changes


@pytest.mark.parametrize("line, simple", [
    ("### tuple ### allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in", True),
    ("### tuple ### limit tcp 22 ::/0 any ::/0 in", True),
    ("### tuple ### allow tcp 5432 0.0.0.0/0 any 10.0.0.0/8 in", True),
    # Anything else makes the fact ask `ufw show added`, which words every kind of rule.
    ("### tuple ### allow any 22 0.0.0.0/0 any 0.0.0.0/0 in", False),
    ("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in_eth0", False),
    ("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 out", False),
    ("### tuple ### allow tcp 80 10.0.0.1 any 0.0.0.0/0 in", False),
    ("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in comment=7765620a", False),
    ("### tuple ### allow tcp 8000:8010 0.0.0.0/0 any 0.0.0.0/0 in", False),
])
def test_only_rules_in_the_forms_vigil_writes_are_read_from_ufw_files(line, simple):
    import re
    from vigil.ufw import SIMPLE_TUPLE
    assert bool(re.match(SIMPLE_TUPLE, line)) is simple


@pytest.mark.parametrize("node, version", [
    # A node that is not Debian's /usr/bin/node is asked itself.
    ("#!/bin/sh\necho v22.3.1\n", (22, 3, 1)),
    (None, None),  # none on PATH
])
def test_the_node_version_fact_asks_a_node_that_dpkg_does_not_own(tmp_path, node, version):
    import subprocess
    from vigil.nodejs import node_version_fact
    if node:
        (tmp_path / "node").write_text(node)
        (tmp_path / "node").chmod(0o755)
    fact = node_version_fact()
    import shutil
    (tmp_path / "sh").symlink_to(shutil.which("sh"))
    done = subprocess.run([str(tmp_path / "sh"), *fact.command.argv[1:]], capture_output=True, text=True,
                          env={"PATH": str(tmp_path)}, timeout=10)
    assert fact.parse(done.stdout, done.returncode) == version


@pytest.mark.parametrize("stdout, version", [
    ("v20.19.2\n", (20, 19, 2)),  # Debian's 20.19.2+dfsg-1~deb13u1, as the fact words it
    ("v18.19.0\n", (18, 19, 0)),
])
def test_node_versions_parse(stdout, version):
    from vigil.nodejs import parse_node_version
    assert parse_node_version(stdout, 0) == version
