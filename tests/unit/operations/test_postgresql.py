"""PostgreSQL: SCRAM verifiers, and the plans for roles, databases, settings and client rules."""

import base64
import hashlib
import hmac

import pytest

from vigil.core.commands import Secret
from vigil.core.errors import ConfigError
from vigil.facts.postgresql import settings_fact
from vigil.operations.postgresql import (
    HBA_BEGIN,
    HBA_END,
    PostgresClients,
    PostgresDatabase,
    PostgresRole,
    PostgresSettings,
    scram_matches,
)


def verifier(password: str, salt: bytes = b"0123456789abcdef", iterations: int = 4096) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return (
        f"SCRAM-SHA-256${iterations}:{base64.b64encode(salt).decode()}"
        f"${base64.b64encode(stored).decode()}:{base64.b64encode(server).decode()}"
    )


def test_scram_verifier_check():
    assert scram_matches(verifier("right-password-1"), "right-password-1")
    assert not scram_matches(verifier("right-password-1"), "wrong-password-1")
    assert not scram_matches("md5abcdef", "anything")


@pytest.mark.parametrize("state, summary", [
    (None, "create role app_user once PostgreSQL runs"),
    ((False, ""), "create role app_user"),
    ((True, verifier("old-password-9")), "set the password of app_user (it differs from secrets)"),
])
def test_role_plan_keeps_the_password_on_stdin(state, summary):
    password = Secret("new-password-9'quote")
    plan = PostgresRole("app_user", password).plan({"postgresql:role:app_user": state})
    (command,) = plan.commands
    assert plan.summary == summary
    assert "new-password" not in command.render("root") and b"new-password" not in command.stdin
    sent = command.stdin.decode().split("password '")[1].split("'")[0]
    assert scram_matches(sent, "new-password-9'quote")  # the verifier PostgreSQL will store


def test_role_with_the_right_password_is_left_alone():
    plan = PostgresRole("app_user", Secret("same-password-1")).plan(
        {"postgresql:role:app_user": (True, verifier("same-password-1"))}
    )
    assert not plan.changes


@pytest.mark.parametrize(
    "owner, commands",
    [
        ("", ["sudo -n -H -u postgres -- createdb --owner app -- appdb"]),
        ("app", []),
        (
            "postgres",
            ["sudo -n -H -u postgres -- psql -X -q -t -A -v ON_ERROR_STOP=1 -c 'alter database appdb owner to app'"],
        ),
    ],
)
def test_database_plan(owner, commands):
    plan = PostgresDatabase("appdb", owner="app").plan({"postgresql:database:appdb": owner})
    assert [c.display("root") for c in plan.commands] == commands


def test_settings_plan_sizes_connections_from_memory():
    op = PostgresSettings({"listen_addresses": "localhost", "max_connections": "auto"})
    key = settings_fact(["listen_addresses", "max_connections"]).key
    assert not op.plan(
        {key: {"listen_addresses": "localhost", "max_connections": "64"}, "memory:total-mb": 2048}
    ).changes
    plan = op.plan({key: {"listen_addresses": "*", "max_connections": "100"}, "memory:total-mb": 1024})
    assert [c.display("root").split(" -c ")[1] for c in plan.commands] == [
        "'alter system set listen_addresses = '\"'\"'localhost'\"'\"''",
        "'alter system set max_connections = '\"'\"'32'\"'\"''",
    ]


@pytest.mark.parametrize("build", [
    lambda: PostgresRole("App-User", Secret("x" * 8)),
    lambda: PostgresDatabase("db; drop", owner="app"),
    lambda: PostgresSettings({"listen_addresses": "'; drop table x; --"}),
])
def test_postgres_operations_refuse_unsafe_names(build):
    with pytest.raises(ValueError):
        build()


DEBIAN_HBA = "local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n"


def block(*lines: str) -> str:
    return "\n".join([HBA_BEGIN, *lines, HBA_END]) + "\n\n"


APP_FROM_11 = "hostssl app app_user 10.0.0.11/32 scram-sha-256"
# A preview's role: its own database only, over loopback or TLS from the other preview hosts; else rejected.
PREVIEW_RULES = ("local   all      +vigil_previews reject",
                 "host    samerole +vigil_previews 127.0.0.1/32 scram-sha-256",
                 "host    samerole +vigil_previews ::1/128 scram-sha-256")
PREVIEWS_REJECTED = "host    all      +vigil_previews all reject"


@pytest.mark.parametrize(
    "content, addresses, previews, expected",
    [
        (DEBIAN_HBA, [], None, DEBIAN_HBA),
        # First in the file: the distribution's loopback line must not admit a preview's role to every database.
        (DEBIAN_HBA, ["10.0.0.11"], None, block(APP_FROM_11) + DEBIAN_HBA),
        # The block is replaced, not added twice; an emptied list removes it.
        (block("hostssl app app_user 10.0.0.9/32 scram-sha-256") + DEBIAN_HBA, ["fd00::1"], None,
         block("hostssl app app_user fd00::1/128 scram-sha-256") + DEBIAN_HBA),
        (block("hostssl app app_user 10.0.0.9/32 scram-sha-256") + DEBIAN_HBA, [], None, DEBIAN_HBA),
        # An older vigil's block, at the end under another heading, moves first.
        (DEBIAN_HBA + "\n# BEGIN vigil: app clients on other hosts (roles/postgresql; edits are overwritten)\n"
         + APP_FROM_11 + "\n" + HBA_END + "\n", ["10.0.0.11"], None, block(APP_FROM_11) + DEBIAN_HBA),
        # Previews on, all on this host: loopback only.
        (DEBIAN_HBA, [], [], block(*PREVIEW_RULES, PREVIEWS_REJECTED) + DEBIAN_HBA),
        (DEBIAN_HBA, ["10.0.0.11"], ["10.0.0.11"],
         block(*PREVIEW_RULES, "hostssl samerole +vigil_previews 10.0.0.11/32 scram-sha-256", PREVIEWS_REJECTED,
               APP_FROM_11) + DEBIAN_HBA),
    ],
)
def test_pg_hba_block(content, addresses, previews, expected):
    clients = PostgresClients("app", "app_user", addresses, previews)
    plan = clients.plan({"postgresql:hba": ("/etc/postgresql/15/main/pg_hba.conf", content)})
    if expected == content:
        assert not plan.changes
    else:
        assert plan.changes and plan.commands[0].stdin.decode() == expected
        # Applying it converges: the next plan changes nothing.
        assert not clients.plan({"postgresql:hba": ("/etc/postgresql/15/main/pg_hba.conf", expected)}).changes




def test_a_vigil_block_left_without_its_end_is_refused_not_taken_for_the_rest_of_the_file():
    cut = block(APP_FROM_11).replace(HBA_END + "\n", "") + DEBIAN_HBA
    with pytest.raises(ConfigError, match="without its '# END vigil': mend it by hand"):
        PostgresClients("app", "app_user", ["10.0.0.11"]).plan({"postgresql:hba": ("/etc/pg_hba.conf", cut)})


def test_cluster_members_may_stream_and_rewind_from_each_other_over_tls_only():
    clients = PostgresClients("app", "app_user", ["10.0.0.11"], cluster=["10.0.0.1", "10.0.0.2"])
    expected = block("hostssl replication replicator 10.0.0.1/32 scram-sha-256",
                     "hostssl postgres rewinder 10.0.0.1/32 scram-sha-256",
                     "hostssl replication replicator 10.0.0.2/32 scram-sha-256",
                     "hostssl postgres rewinder 10.0.0.2/32 scram-sha-256", APP_FROM_11) + DEBIAN_HBA
    plan = clients.plan({"postgresql:hba": ("/etc/postgresql/17/main/pg_hba.conf", DEBIAN_HBA)})
    assert plan.commands[0].stdin.decode() == expected


@pytest.mark.parametrize("operation, facts", [
    (PostgresRole("app", Secret("new-password"), leader_only=True), {"postgresql:role:app": (False, "")}),
    (PostgresDatabase("appdb", owner="app", leader_only=True), {"postgresql:database:appdb": ""}),
])
def test_on_a_replica_the_leader_only_role_and_database_are_left_to_replication(operation, facts):
    assert not operation.plan({**facts, "postgresql:in-recovery": True}).changes
    # On the leader (or a lone server) the same state is a change.
    assert operation.plan({**facts, "postgresql:in-recovery": False}).changes
