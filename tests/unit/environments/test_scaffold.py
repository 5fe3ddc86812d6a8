"""env.new: hosts and groups from flags, the inventory it writes (the two example files are what it writes
for their commands), and all-or-nothing: a refused key, a taken name or a failure writes nothing."""

from pathlib import Path

import paramiko
import pytest

from vigil.core.connectors.trust import TrustPlan
from vigil.core.errors import ConfigError
from vigil.core.inventory import load_inventory
from vigil.core.paths import REPO_ROOT
from vigil.environments.scaffold import EnvRequest, NewHost, create_env, parse_hosts, render_inventory
from vigil.vault.schema import load_schema
from vigil.vault.store import load

EXAMPLE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample0 you@laptop"
TEAM_KEY = Path("~/.ssh/together-pray")


@pytest.mark.parametrize("hosts, groups, privates, expected", [
    (["web1=203.0.113.10"], [], [], [NewHost("web1", "203.0.113.10", ("web",))]),
    (["web1=203.0.113.10", "db1=203.0.113.20", "backup1=203.0.113.30", "monitor1=198.51.100.4"], [], [],
     [NewHost("web1", "203.0.113.10", ("web",)), NewHost("db1", "203.0.113.20", ("db",)),
      NewHost("backup1", "203.0.113.30", ("backup",)), NewHost("monitor1", "198.51.100.4", ("monitor",))]),
    (["alpha=app1.example.com"], ["alpha:web", "alpha:db"], [], [NewHost("alpha", "app1.example.com", ("web", "db"))]),
    (["web1=203.0.113.10"], [], ["web1=10.0.0.10"], [NewHost("web1", "203.0.113.10", ("web",), "10.0.0.10")]),
])
def test_hosts_and_their_groups_come_from_the_flags(hosts, groups, privates, expected):
    assert parse_hosts(hosts, groups, privates) == expected


@pytest.mark.parametrize("hosts, groups, privates, message", [
    ([], [], [], "give at least one"),
    (["web1"], [], [], "--host web1: an address must be"),
    (["web1=203.0.113.10", "web1=203.0.113.11"], [], [], "web1 is given twice"),
    (["web1=bad address"], [], [], "--host web1=bad address"),
    (["alpha=203.0.113.10"], [], [], "cannot tell its group from its name; add --group alpha:web"),
    (["web1=203.0.113.10"], ["web2:db"], [], "--group web2:db: 'web2' is not one of the --host names"),
    (["web1=203.0.113.10"], ["web1:cache"], [], "unknown group 'cache'"),
    (["web1=203.0.113.10"], [], ["web1=private.example"], "--private web1=private.example"),
    (["db1=203.0.113.20"], [], [], "no web host"),
])
def test_bad_flags_name_the_flag(hosts, groups, privates, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_hosts(hosts, groups, privates)


def test_one_web_host_runs_the_database_too_and_a_db_host_takes_it():
    assert EnvRequest("staging", parse_hosts(["web1=203.0.113.10", "web2=203.0.113.11"], [], []),
                      TEAM_KEY).layout == {"web": ["web1", "web2"], "db": ["web1"]}
    assert EnvRequest("production", parse_hosts(["web1=203.0.113.10", "db1=203.0.113.20"], [], []),
                      TEAM_KEY).layout == {"web": ["web1"], "db": ["db1"]}


EXAMPLES = {
    "staging.example.yml": EnvRequest("staging", parse_hosts(["web1=203.0.113.10"], [], []), TEAM_KEY.expanduser(),
                                      "staging.example.com", "ops@example.com"),
    "production.example.yml": EnvRequest(
        "production",
        parse_hosts(["web1=203.0.113.10", "web2=203.0.113.11", "db1=203.0.113.20", "backup1=203.0.113.30",
                     "monitor1=203.0.113.40"], [],
                    ["web1=10.0.0.10", "web2=10.0.0.11", "db1=10.0.0.20", "backup1=10.0.0.30", "monitor1=10.0.0.40"]),
        TEAM_KEY.expanduser(), "app.example.com", "ops@example.com"),
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_example_inventories_are_what_env_new_writes_and_load(name, tmp_path):
    request = EXAMPLES[name]
    text = (REPO_ROOT / "inventory" / name).read_text()
    header, _, body = text.partition("\n\n")
    # The header shows the command; the body is exactly what env.new writes for it.
    for host in request.hosts:
        assert f"--host {host.name}={host.address}" in header
    assert body == render_inventory(request, REPO_ROOT / "inventory", EXAMPLE_KEY)
    (tmp_path / f"{request.env}.yml").write_text(body)
    inventory = load_inventory(request.env, tmp_path)
    assert {name: host.groups for name, host in inventory.hosts.items()} == {
        host.name: tuple(g for g in request.layout if host.name in request.layout[g]) for host in request.hosts}


# --- create_env: the files, all or nothing ------------------------------------------------------------

@pytest.fixture
def scratch(tmp_path, paths):
    """A scratch inventory/ and secrets/ (tests/unit/conftest.py), and a team key."""
    private = tmp_path / "id_team"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(private))
    return tmp_path / "inventory", paths, private


def offered_keys(names):
    """What each host offers when scanned: a key of its own (no network: the scan is given)."""
    keys = {name: paramiko.RSAKey.generate(1024) for name in names}
    return keys, lambda host, known_hosts: TrustPlan(host, keys[host.name], None)


def request_for(private, *hosts, domain="staging.example.com"):
    return EnvRequest("staging", parse_hosts(list(hosts), [], []), private, domain)


def test_a_new_env_gets_its_inventory_pinned_keys_and_secrets(scratch):
    inventory_dir, paths, private = scratch
    keys, scan = offered_keys(["web1", "db1"])
    shown = []
    created = create_env(request_for(private, "web1=203.0.113.10", "db1=203.0.113.20"), inventory_dir, paths,
                         load_schema(paths), "unit test", lambda plan, known: shown.append(plan.host.name) or True,
                         scan)
    assert shown == ["web1", "db1"]
    inventory = load_inventory("staging", inventory_dir)
    assert inventory.hosts["web1"].ssh_key == private.resolve()
    pinned = paramiko.HostKeys(str(inventory.known_hosts))
    assert pinned.lookup("203.0.113.10")["ssh-rsa"] == keys["web1"]
    assert pinned.lookup("203.0.113.20")["ssh-rsa"] == keys["db1"]
    values = load("staging", paths)
    assert {"DB_PASSWORD", "JWT_SECRET", "JWT_REFRESH_SECRET"} <= set(created.generated) <= set(values)
    assert (values["FRONTEND_URL"], values["NEXT_PUBLIC_API_URL"], values["NODE_ENV"]) == (
        "https://staging.example.com", "https://staging.example.com/api", "production")
    # Only what a person must still bring is listed: here, production's Sentry DSN is not needed.
    assert created.to_set == []


def test_a_key_not_accepted_writes_nothing(scratch):
    inventory_dir, paths, private = scratch
    _, scan = offered_keys(["web1", "db1"])
    with pytest.raises(ConfigError, match="the key of db1 was not accepted; nothing was written"):
        create_env(request_for(private, "web1=203.0.113.10", "db1=203.0.113.20"), inventory_dir, paths,
                   load_schema(paths), "unit test", lambda plan, known: plan.host.name != "db1", scan)
    assert not inventory_dir.exists() or list(inventory_dir.iterdir()) == []
    assert sorted(p.name for p in paths.root.rglob("*")) == ["schema.yml"]


def test_an_existing_env_is_never_overwritten(scratch):
    inventory_dir, paths, private = scratch
    _, scan = offered_keys(["web1"])
    create_env(request_for(private, "web1=203.0.113.10"), inventory_dir, paths, load_schema(paths), "unit test",
               lambda plan, known: True, scan)
    before = {path: path.read_bytes() for path in [*inventory_dir.iterdir(), *paths.root.rglob("*.*")]}
    with pytest.raises(ConfigError, match="staging exists already"):
        create_env(request_for(private, "web1=203.0.113.99"), inventory_dir, paths, load_schema(paths),
                   "unit test", lambda plan, known: True, scan)
    assert {path: path.read_bytes() for path in before} == before


def test_a_failure_while_writing_removes_what_it_wrote(scratch, monkeypatch):
    inventory_dir, paths, private = scratch
    _, scan = offered_keys(["web1"])

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("vigil.environments.scaffold.save", broken_save)
    with pytest.raises(OSError):
        create_env(request_for(private, "web1=203.0.113.10"), inventory_dir, paths, load_schema(paths),
                   "unit test", lambda plan, known: True, scan)
    assert list(inventory_dir.iterdir()) == []
    assert sorted(p.name for p in paths.root.rglob("*") if p.is_file()) == ["schema.yml"]


@pytest.mark.parametrize("change, message", [
    (dict(env="sandbox"), "the sandbox is written by `invoke sandbox.up`"),
    (dict(env="bad name"), "env.new NAME"),
    (dict(domain="not a domain"), "--domain: 'not a domain' is not a domain name"),
    (dict(email="nobody"), "--email: 'nobody' is not an email address"),
    (dict(ssh_key=Path("/nonexistent/key")), "--ssh-key: /nonexistent/key does not exist"),
])
def test_bad_requests_are_refused_before_any_host_is_asked(scratch, change, message):
    inventory_dir, paths, private = scratch
    request = request_for(private, "web1=203.0.113.10")
    for key, value in change.items():
        setattr(request, key, value)

    def no_scan(host, known_hosts):
        raise AssertionError("no host may be asked")

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        create_env(request, inventory_dir, paths, load_schema(paths), "unit test", lambda plan, known: True, no_scan)
