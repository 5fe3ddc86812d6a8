"""PostgreSQL: server settings, login roles, databases and client rules converged from facts.

A role's password never reaches the server in clear: vigil sends the SCRAM
verifier it computes, on psql's stdin (never argv), and compares an existing
role's verifier with the password it holds, in Python.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Mapping

from vigil.core.commands import Command, Secret, script
from vigil.core.errors import ConfigError
from vigil.core.operations import Operation, change, noop
from vigil.facts.host import memory_fact
from vigil.facts.postgresql import (
    database_fact,
    hba_fact,
    identifier,
    psql,
    recovery_fact,
    role_fact,
    settings_fact,
    sql_literal,
)
from vigil.operations.files import atomic_write, text_diff
from vigil.operations.guarded import HandlerCommands

# The server's own TLS certificate and key, for clients on other hosts (roles/postgresql).
TLS_DIR = "/etc/postgresql/vigil"
SERVER_CERTIFICATE = f"{TLS_DIR}/server.crt"
SERVER_KEY = f"{TLS_DIR}/server.key"
SETTING_NAME = re.compile(r"^[a-z_]+$")
# `%` and `=` for archive_command ("pgbackrest --stanza=x archive-push %p"); values travel as SQL literals.
SETTING_VALUE = re.compile(r"^[A-Za-z0-9_.,*:/ %=-]+$")


def psql_stdin(sql: str) -> Command:
    """psql reading `sql` from stdin: for statements that carry a password."""
    return Command(("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"), as_user="postgres", stdin=sql.encode())


def scram_matches(verifier: str, password: str) -> bool:
    """Whether `password` is the one behind a `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey` verifier (RFC 5802)."""
    match = re.match(r"^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$", verifier)
    if not match:
        return False
    iterations, salt, stored_key = (
        int(match.group(1)),
        base64.b64decode(match.group(2)),
        base64.b64decode(match.group(3)),
    )
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password`, computed here (RFC 5802/7677).

    Sending this instead of the password keeps the cleartext out of the server's
    logs, which record a failed statement whole.
    """
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    encode = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{encode(salt)}${encode(stored_key)}:{encode(server_key)}"


def auto_max_connections(memory_mb: int) -> int:
    """Room for about 32 MiB per connection (work memory, buffers), between 20 and 200."""
    return max(20, min(200, memory_mb // 32))


@dataclass
class PostgresSettings(Operation):
    """Server settings via ALTER SYSTEM; a change notifies the restart handler.

    settings: name -> value; the value "auto" for max_connections sizes it from the host's memory.
    Example:
        PostgresSettings({"listen_addresses": "localhost", "max_connections": "auto"}, notify=("restart postgresql",))
    """

    settings: Mapping[str, str]
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        for key, value in self.settings.items():
            if not SETTING_NAME.match(key) or not SETTING_VALUE.match(str(value)):
                raise ValueError(f"not a PostgreSQL setting vigil accepts: {key}={value!r}")
        self.name = self.name or "Ensure PostgreSQL's settings: " + ", ".join(
            f"{k}={v}" for k, v in self.settings.items()
        )

    def facts(self):
        return [settings_fact(list(self.settings)), memory_fact()]

    def wanted(self, memory_mb: int) -> dict[str, str]:
        return {
            key: str(auto_max_connections(memory_mb)) if key == "max_connections" and value == "auto" else str(value)
            for key, value in self.settings.items()
        }

    def plan(self, known):
        current = known[settings_fact(list(self.settings)).key]
        wanted = self.wanted(known["memory:total-mb"])
        if current is None:
            return change("configure PostgreSQL once it runs",
                          *[psql(f"alter system set {key} = {sql_literal(value)}") for key, value in wanted.items()])
        different = {key: value for key, value in wanted.items() if current.get(key) != value}
        if not different:
            return noop("PostgreSQL already runs with " + ", ".join(f"{k}={v}" for k, v in wanted.items()))
        return change(", ".join(f"{key} {current.get(key)} -> {value}" for key, value in different.items()),
                      *[psql(f"alter system set {key} = {sql_literal(value)}") for key, value in different.items()])


@dataclass
class PostgresRole(Operation):
    """A login role whose password is exactly `password` (compared through the SCRAM verifier).

    leader_only: on a replica of a cluster (in recovery) nothing is done: the leader's role reaches it by
    replication, and a replica cannot write.
    Example: PostgresRole("together_pray", Secret(db_password))
    """

    role: str
    password: Secret
    name: str = ""
    notify: tuple[str, ...] = ()
    leader_only: bool = False

    def __post_init__(self):
        identifier(self.role)
        self.name = self.name or f"Ensure PostgreSQL role {self.role} logs in with the password from secrets."

    def facts(self):
        return [role_fact(self.role), *([recovery_fact()] if self.leader_only else [])]

    def plan(self, known):
        if self.leader_only and known[recovery_fact().key]:
            return noop(f"a replica: role {self.role} comes from the leader by replication")
        state = known[f"postgresql:role:{self.role}"]
        verifier = scram_verifier(self.password.value)
        Secret(verifier)  # masked wherever it could show up
        password = sql_literal(verifier)
        if state is None:
            return change(f"create role {self.role} once PostgreSQL runs",
                          psql_stdin(f"create role {self.role} login password {password};"))
        exists, verifier = state
        if not exists:
            return change(f"create role {self.role}", psql_stdin(f"create role {self.role} login password {password};"))
        if not scram_matches(verifier, self.password.value):
            return change(f"set the password of {self.role} (it differs from secrets)",
                          psql_stdin(f"alter role {self.role} with login password {password};"))
        return noop(f"role {self.role} exists and its password matches secrets")


@dataclass
class PostgresDatabase(Operation):
    """A database owned by `owner`.

    leader_only: as for PostgresRole, nothing on a replica.
    Example: PostgresDatabase("together_pray", owner="together_pray")
    """

    database: str
    owner: str
    name: str = ""
    notify: tuple[str, ...] = ()
    leader_only: bool = False

    def __post_init__(self):
        identifier(self.database), identifier(self.owner)
        self.name = self.name or f"Ensure database {self.database} exists, owned by {self.owner}."

    def facts(self):
        return [database_fact(self.database), *([recovery_fact()] if self.leader_only else [])]

    def plan(self, known):
        if self.leader_only and known[recovery_fact().key]:
            return noop(f"a replica: database {self.database} comes from the leader by replication")
        owner = known[f"postgresql:database:{self.database}"]
        create = Command(("createdb", "--owner", self.owner, "--", self.database), as_user="postgres")
        if owner is None:
            return change(f"create database {self.database} once PostgreSQL runs", create)
        if owner == "":
            return change(f"create database {self.database}", create)
        if owner != self.owner:
            return change(
                f"owner {owner} -> {self.owner}", psql(f"alter database {self.database} owner to {self.owner}")
            )
        return noop(f"database {self.database} exists, owned by {self.owner}")


HBA_BEGIN = "# BEGIN vigil: app clients on other hosts, previews (roles/postgresql; edits are overwritten)"
HBA_END = "# END vigil"
# The group role every preview's role is a member of (vigil/previews): the rules below hold for each.
PREVIEWS_GROUP = "vigil_previews"


def with_hba_block(content: str, lines: list[str]) -> str:
    """`content` with vigil's block holding exactly `lines` first (no block when there are none).

    First, because pg_hba.conf's first matching line decides: the distribution's `host all all 127.0.0.1/32`
    would otherwise let a preview's role reach every database over loopback. A block of an older vigil
    (its BEGIN line worded otherwise), wherever it is, is replaced.
    """
    kept, inside = [], False
    for line in content.splitlines():
        if line.startswith("# BEGIN vigil:"):
            inside = True
        elif inside and line == HBA_END:
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        # Everything after it would be taken for vigil's and replaced.
        raise ConfigError(f"pg_hba.conf has a '# BEGIN vigil:' line without its {HBA_END!r}: mend it by hand")
    while kept and not kept[-1].strip():
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    if lines:
        kept = [HBA_BEGIN, *lines, HBA_END, "", *kept]
    return "\n".join(kept) + "\n"


def cidr(address: str) -> str:
    return f"{address}/{128 if ':' in address else 32}"


@dataclass
class PostgresClients(Operation):
    """The app's role may log in to its database over TLS (hostssl, scram-sha-256) from exactly these addresses;
    with `previews` (a list, empty included: previews are on), each preview's role to its own database only.

    A preview's role is a member of vigil_previews and its database bears its name (`samerole`): it logs in
    over loopback or, from the preview hosts other than this one (`previews`), over TLS; to any other
    database, or from anywhere else, it is rejected. With `cluster` (the members' addresses, this one's
    included: any may lead), the replication role streams and the rewind role reads from them over TLS.
    Lines vigil adds live in one marked block at the start of pg_hba.conf; the distribution's own lines
    (local peer, localhost scram) are left as they are.
    Example: PostgresClients("together_pray", "together_pray", ["10.0.0.11"], notify=("reload postgresql",))
    """

    database: str
    role: str
    addresses: list[str]
    previews: list[str] | None = None
    name: str = ""
    notify: tuple[str, ...] = ()
    cluster: list[str] = field(default_factory=list)
    cluster_roles: tuple[str, str] = ("replicator", "rewinder")

    def __post_init__(self):
        identifier(self.database), identifier(self.role), [identifier(role) for role in self.cluster_roles]
        for address in [*self.addresses, *(self.previews or []), *self.cluster]:
            if not re.fullmatch(r"[0-9a-fA-F.:]+", address):
                raise ValueError(f"not an IP address: {address!r}")
        self.name = self.name or (f"Ensure only {', '.join(self.addresses)} may log in to {self.database} over TLS"
                                  if self.addresses else f"Ensure no other host may log in to {self.database}")
        self.name += ", and each preview to its own database only." if self.previews is not None else "."

    def lines(self) -> list[str]:
        previews = [] if self.previews is None else [
            f"local   all      +{PREVIEWS_GROUP} reject",
            f"host    samerole +{PREVIEWS_GROUP} 127.0.0.1/32 scram-sha-256",
            f"host    samerole +{PREVIEWS_GROUP} ::1/128 scram-sha-256",
            *(f"hostssl samerole +{PREVIEWS_GROUP} {cidr(address)} scram-sha-256" for address in self.previews),
            f"host    all      +{PREVIEWS_GROUP} all reject",
        ]
        replication, rewind = self.cluster_roles
        members = [line for address in self.cluster for line in (
            f"hostssl replication {replication} {cidr(address)} scram-sha-256",
            f"hostssl postgres {rewind} {cidr(address)} scram-sha-256")]
        return [*previews, *members, *(f"hostssl {self.database} {self.role} {cidr(address)} scram-sha-256"
                                       for address in self.addresses)]

    def facts(self):
        return [hba_fact()]

    def plan(self, known):
        state = known[hba_fact().key]
        allowed = ", ".join(self.addresses) or "no other host"
        allowed += "; previews to their own databases" if self.previews is not None else ""
        if state is None:
            if not self.lines():
                return noop("no client rules to add")
            return change("add client rules once PostgreSQL runs",
                          script('echo "PostgreSQL does not answer: cannot find pg_hba.conf" >&2; exit 1'))
        path, content = state
        after = with_hba_block(content, self.lines())
        if after == content:
            return noop(f"{path} already allows exactly {allowed}")
        return change(f"allow {allowed} in {path}",
                      atomic_write(path, after.encode(), "postgres", "postgres", "0640"),
                      diff=text_diff(path, content.encode(), after.encode(), False))


# Under Patroni (the database cluster) PostgreSQL is Patroni's process: a setting that needs a restart is
# applied by Patroni's restart of this member, and only when PostgreSQL says one is pending.
PATRONI_RESTART = r"""
set -eu
config=$(ls /etc/patroni/*-*.yml 2>/dev/null | head -n 1)
if [ -n "$config" ] && systemctl is-active --quiet "patroni@$(basename "$config" .yml).service"; then
    patronictl -c "$config" restart "$(sed -n 's/^scope: //p' "$config")" "$1" --pending --force >/dev/null
fi
"""


def restart_under_patroni(member: str):
    """The "restart postgresql" handler on member `member` of the database cluster."""
    return HandlerCommands([script(PATRONI_RESTART, member)],
                           name="Restart PostgreSQL through Patroni where a restart is pending.")
