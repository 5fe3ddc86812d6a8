"""Inventory loading, validation (each error names file and key), --limit and var precedence."""

import textwrap

import pytest

from vigil.core.errors import ConfigError
from vigil.core.inventory import load_inventory, parse_cli_vars
from vigil.core.playbook import build_host_plans
from vigil.core.roles import load_playbook, load_role

GOOD = """
known_hosts: staging.known_hosts
defaults: {user: deploy, port: 22, ssh_key: keys/id_ed25519}
vars: {base_timezone: Etc/UTC, app_name: together-pray}
groups:
  web: {hosts: [web1, web2], vars: {base_timezone: Europe/Paris}}
  db: {hosts: [db1], vars: {app_name: db-app}}
hosts:
  web1: {address: 203.0.113.10, vars: {base_timezone: Asia/Tokyo}}
  web2: {address: web2.example.com, port: 2222}
  db1: {address: "2001:db8::1", user: root}
"""


def write_inventory(tmp_path, text, env="staging"):
    (tmp_path / f"{env}.yml").write_text(textwrap.dedent(text))
    return tmp_path


def test_good_inventory_loads(tmp_path):
    inventory = load_inventory("staging", write_inventory(tmp_path, GOOD))
    web2 = inventory.hosts["web2"]
    assert (web2.address, web2.port, web2.user, web2.groups) == ("web2.example.com", 2222, "deploy", ("web",))
    assert web2.ssh_key == (tmp_path / "keys" / "id_ed25519").resolve()
    assert inventory.hosts["db1"].user == "root"
    assert inventory.known_hosts == tmp_path / "staging.known_hosts"
    assert (web2.stall_timeout, web2.command_timeout) == (30.0, 900.0)


@pytest.mark.parametrize(
    "limit, selected",
    [
        (None, ["web1", "web2", "db1"]),
        ("all", ["web1", "web2", "db1"]),
        ("web", ["web1", "web2"]),
        ("db1", ["db1"]),
        ("db1,web2", ["web2", "db1"]),
        (" web1 , db ", ["web1", "db1"]),
    ],
)
def test_limit_selects_hosts_and_groups(tmp_path, limit, selected):
    inventory = load_inventory("staging", write_inventory(tmp_path, GOOD))
    assert [host.name for host in inventory.select(limit)] == selected


def test_unknown_limit_names_flag_and_inventory(tmp_path):
    inventory = load_inventory("staging", write_inventory(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"--limit: unknown host or group 'web9' in .*staging.yml"):
        inventory.select("web1,web9")


def test_var_precedence_defaults_all_group_host_cli(tmp_path):
    role_dir = tmp_path / "roles" / "base"
    role_dir.mkdir(parents=True)
    (role_dir / "defaults.yml").write_text("base_timezone: Etc/UTC\nbase_motd_contact: a@b\nbase_swap_size_mb: 1024\n")
    (role_dir / "tasks.py").write_text("def tasks(role, vars):\n    return []\n")
    role = load_role("base", tmp_path / "roles")
    inventory = load_inventory("staging", write_inventory(tmp_path, GOOD))
    hosts = inventory.hosts
    cli = parse_cli_vars(["base_swap_size_mb=2048"])

    web1 = inventory.vars_for(hosts["web1"], [role], cli)
    assert web1["base_timezone"] == "Asia/Tokyo"  # host beats group
    assert web1.where("base_timezone").endswith("hosts.web1.vars.base_timezone")
    assert web1["base_swap_size_mb"] == 2048 and web1.where("base_swap_size_mb") == "--var base_swap_size_mb"
    web2 = inventory.vars_for(hosts["web2"], [role], {})
    assert web2["base_timezone"] == "Europe/Paris"  # group beats all-hosts vars
    assert (
        web2["base_motd_contact"] == "a@b"
        and "roles/base/defaults.yml" in web2.where("base_motd_contact")
        or web2.where("base_motd_contact").endswith("defaults.yml: base_motd_contact")
    )
    db1 = inventory.vars_for(hosts["db1"], [role], {})
    assert db1["base_timezone"] == "Etc/UTC"  # all-hosts vars beat role defaults
    assert db1["app_name"] == "db-app"
    assert db1["vigil_env"] == "staging"


BAD = [
    # (inventory text, the error must contain this)
    ("hosts: {web1: {address: 10.0.0.1}\n", "staging.yml:2:1: YAML syntax error"),
    ("hosts:\n  web1:\n    address: [10.0.0.1\n", "staging.yml:4:1: YAML syntax error"),
    ("hosts: {'web1; rm -rf /': {address: 10.0.0.1}}\n", "staging.yml: hosts: a name must be"),
    ("hosts: {web1: {address: '$(id)'}}\n", "hosts.web1.address: an address must be"),
    ("hosts: {web1: {address: '`id`.example.com'}}\n", "hosts.web1.address"),
    ("hosts: {web1: {address: 10.0.0.1, user: 'root;id'}}\n", "hosts.web1.user: a user must match"),
    ("defaults: {user: '$(id)'}\nhosts: {web1: {address: 10.0.0.1}}\n", "staging.yml: defaults.user"),
    ("hosts: {web1: {address: 10.0.0.1, port: 0}}\n", "hosts.web1.port: a port must be"),
    ("hosts: {web1: {address: 10.0.0.1, port: '22; id'}}\n", "hosts.web1.port"),
    ("hosts: {web1: {address: 10.0.0.1, ssh_key: 'k;rm -rf ~'}}\n", "hosts.web1.ssh_key"),
    ("hosts: {web1: {adress: 10.0.0.1}}\n", "hosts.web1.adress: unknown key"),
    ("hosts: {web1: {}}\n", "hosts.web1.address: missing"),
    ("groups: {web: {hosts: [web2]}}\nhosts: {web1: {address: 10.0.0.1}}\n", "groups.web.hosts: unknown host 'web2'"),
    ("groups: {'../etc': {hosts: []}}\nhosts: {web1: {address: 10.0.0.1}}\n", "groups: a name must be"),
    ("hosts: {}\n", "hosts: no hosts defined"),
    (
        "hosts:\n  web1: {address: 10.0.0.1}\n  web1: {address: 10.0.0.2}\n",
        "staging.yml:3:3: YAML error: duplicate key 'web1'",
    ),
    (
        "groups: {web: {hosts: [[web1]]}}\nhosts: {web1: {address: 10.0.0.1}}\n",
        "groups.web.hosts: unknown host ['web1']",
    ),
    (
        "defaults: {command_timeout: .nan}\nhosts: {web1: {address: 10.0.0.1}}\n",
        "defaults.command_timeout: expected a number of seconds",
    ),
    (
        "defaults: {connect_timeout: soon}\nhosts: {web1: {address: 10.0.0.1}}\n",
        "defaults.connect_timeout: expected a number of seconds",
    ),
    (
        "hosts: {web1: {address: 10.0.0.1, stall_timeout: 0}}\n",
        "hosts.web1.stall_timeout: expected a number of seconds above 0",
    ),
    (
        "known_hosts: ../../etc/passwd\nhosts: {web1: {address: 10.0.0.1}}\n",
        "known_hosts: a file name inside inventory/",
    ),
    ("hostz: {}\n", "hostz: unknown key"),
    ("- web1\n", "expected a mapping"),
    ("vars: {'bad key': 1}\nhosts: {web1: {address: 10.0.0.1}}\n", "vars.bad key: a variable name"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m for _, m in BAD])
def test_bad_inventory_names_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as raised:
        load_inventory("staging", write_inventory(tmp_path, text))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_fractional_host_timeout_is_kept(tmp_path):
    inventory = load_inventory(
        "staging", write_inventory(tmp_path, "hosts: {web1: {address: 10.0.0.1, connect_timeout: 0.5}}\n")
    )
    assert inventory.hosts["web1"].connect_timeout == 0.5


@pytest.mark.parametrize("breakage, message", [
    (lambda p: (p / "staging.yml").mkdir(), "staging.yml: cannot read"),
    (lambda p: (p / "staging.yml").write_bytes(b"hosts: {web1: {address: caf\xe9}}\n"), "staging.yml: not UTF-8 text"),
])
def test_unreadable_inventory_is_one_line(tmp_path, breakage, message):
    breakage(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_inventory("staging", tmp_path)


def test_playbook_naming_an_unknown_group_is_refused(tmp_path):
    inventory = load_inventory("staging", write_inventory(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"'webz' is neither a group nor a host"):
        inventory.hosts_in("web,webz")


@pytest.mark.parametrize("env, message", [
    ("production", "--env: unknown environment 'production'"),
    ("../etc", "--env: '../etc' is not a valid environment name"),
    ("sandbox", "run `invoke sandbox.up` first"),
])
def test_unknown_env(tmp_path, env, message):
    write_inventory(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_inventory(env, tmp_path)


@pytest.mark.parametrize("pairs, result", [
    (["a=1"], {"a": 1}), (["a=true"], {"a": True}), (["a=x=y"], {"a": "x=y"}), (["a="], {"a": ""}),
])
def test_cli_vars(pairs, result):
    assert parse_cli_vars(pairs) == result


@pytest.mark.parametrize("pairs", [["novalue"], ["=1"], ["bad-key=1"]])
def test_bad_cli_vars(pairs):
    with pytest.raises(ConfigError, match="--var"):
        parse_cli_vars(pairs)


@pytest.mark.parametrize("accessor, value, message", [
    ("path", "/etc/../shadow", "no '..'"),
    ("path", "/tmp/$(id)", "a path must be absolute"),
    ("path", "relative/path", "a path must be absolute"),
    ("user", "Root", "a user must match"),
    ("integer", "12", "expected a whole number"),
    ("boolean", "yes", r"expected true or false, got 'yes' \(yes, no, on and off are text in YAML 1.2\)"),
    ("boolean", "maybe", "expected true or false, got 'maybe'$"),
])
def test_host_var_accessors_name_the_origin(tmp_path, accessor, value, message):
    inventory = load_inventory("staging", write_inventory(tmp_path, GOOD))
    host_vars = inventory.vars_for(inventory.hosts["web1"], [], {"some_key": value})
    with pytest.raises(ConfigError, match=f"--var some_key: .*{message}"):
        getattr(host_vars, accessor)("some_key")


def test_role_defaults_must_be_prefixed(tmp_path):
    role_dir = tmp_path / "base"
    role_dir.mkdir()
    (role_dir / "defaults.yml").write_text("timezone: UTC\n")
    (role_dir / "tasks.py").write_text("def tasks(role, vars):\n    return []\n")
    with pytest.raises(ConfigError, match=r"defaults.yml: timezone: role defaults must be prefixed 'base_'"):
        load_role("base", tmp_path)


def test_playbook_errors_name_the_play(tmp_path):
    (tmp_path / "site.yml").write_text("- name: x\n  hosts: all\n")
    with pytest.raises(ConfigError, match=r"site.yml: \[0\].roles: missing"):
        load_playbook("site", tmp_path, tmp_path)


def test_shipped_roles_and_playbooks_load():
    """Every shipped role's defaults are prefixed and every playbook names existing roles."""
    plays = load_playbook("onboard")
    assert [role.name for play in plays for role in play.roles] == [
        "base",
        "users",
        "ssh",
        "firewall",
        "nodejs",
        "nginx",
        "app",
        "previews",
        "analytics",
        "haproxy",
        "balancer",
        "etcd",
        "postgresql",
        "patroni",
        "pgbackrest",
        "exporters",
        "journal",
        "monitoring",
        "errors",
    ]


@pytest.mark.parametrize("pairs, refused", [
    # Known names: a role default, an inventory var at any level, what vigil sets itself.
    (["base_swap_size_mb=2048", "app_name=x", "base_timezone=UTC", "vigil_env=x"], None),
    # A typo is refused with the closest known name, not ignored.
    (["base_swap_size=2048"], r"--var base_swap_size: no role of the playbook and nothing in .*staging.yml defines "
                              r"'base_swap_size': did you mean 'base_swap_size_mb'\?"),
    (["zzz=1"], r"--var zzz: .* defines 'zzz' \(role defaults.yml files list what is\)"),
])
def test_a_cli_var_nothing_defines_is_refused_with_the_closest_name(tmp_path, pairs, refused):
    role_dir = tmp_path / "roles" / "base"
    role_dir.mkdir(parents=True)
    (role_dir / "defaults.yml").write_text("base_swap_size_mb: 1024\n")
    (role_dir / "tasks.py").write_text("def tasks(role, vars):\n    return []\n")
    inventory = load_inventory("staging", write_inventory(tmp_path, GOOD))
    roles = [load_role("base", tmp_path / "roles")]
    if refused is None:
        inventory.check_cli_vars(parse_cli_vars(pairs), roles)
    else:
        with pytest.raises(ConfigError, match=refused):
            inventory.check_cli_vars(parse_cli_vars(pairs), roles)


def test_onboarding_refuses_a_mistyped_var_before_planning_any_host(tmp_path):
    inventory = load_inventory("staging", write_inventory(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"--var nginx_server_nam: .*did you mean 'nginx_server_name'\?"):
        build_host_plans(inventory, "onboard", None, parse_cli_vars(["nginx_server_nam=x"]), lambda: {})
