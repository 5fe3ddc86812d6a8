"""A preview's database and role on the env's database server: made, filled and dropped.

A new preview's data is the env's at a moment: a branch made by the backup host (backup.branch, owned by
the preview's role) where the env has one and it holds a backup, else a copy of the live database in one
snapshot. The role is a member of vigil_previews, whose pg_hba.conf rules (roles/postgresql) admit it to
its own database only. Every statement goes to psql on stdin (the password is on no command line), and
every name in it is a preview's database name (`preview_[a-z0-9_]+`, vigil/previews/model.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vigil.backup.branch import make_branch
from vigil.backup.pitr import Target, parse_target
from vigil.backup.repository import Repository, find_repository
from vigil.core.commands import Command
from vigil.core.errors import ConfigError, VigilError
from vigil.core.inventory import Host, Inventory
from vigil.core.redaction import REDACTOR
from vigil.operations.postgresql import PREVIEWS_GROUP, SERVER_CERTIFICATE

# As postgres: the preview's database filled from the env's in one snapshot, every object created as the
# preview's role. $1 the env's database, $2 the preview's role and database.
FILL = ('set -o pipefail; runuser -u postgres -- pg_dump --format=custom --no-owner --no-acl --dbname="$1" '
        '| runuser -u postgres -- pg_restore --no-owner --no-acl --exit-on-error --role="$2" --dbname="$2"')


class PreviewError(VigilError):
    """A preview could not be put up or taken down; the message names the host and the step."""


@dataclass
class Seed:
    """Where a new preview's data comes from, and, once it came, what to say about it."""

    env_database: str
    repository: Repository | None
    at: str
    moment: Target
    branched: dict = field(default_factory=dict)
    fallback: str = ""

    @classmethod
    def of(cls, inventory: Inventory, env_database: str, at: str) -> Seed:
        repository = find_repository(inventory)
        if repository is None and at != "latest":
            raise ConfigError(f"--at {at}: a preview starts from a moment of the env's data only where there are "
                              f"backups to branch: inventory/{inventory.env}.yml has no backup host (without one, "
                              "previews copy the live database)")
        return cls(env_database, repository, at, parse_target(at, flag="--at"))

    def branch(self, inventory: Inventory, name: str) -> bool:
        """The branch made as `name`, owned by its role; False when there is nothing to branch from yet (no
        backup: the live copy instead, and said so). A moment asked for that cannot be had is an error."""
        try:
            self.branched = make_branch(inventory, self.repository, self.moment, name, owner=name)
        except ConfigError as error:
            if self.at != "latest":
                raise
            self.fallback = str(error)
            return False
        return True

    def describe(self, made: bool) -> str:
        if not made:
            return "kept"
        if self.branched:
            return (f"{self.env_database} as of {self.branched['target']} (backup {self.branched['backup']}, last "
                    f"transaction {self.branched.get('last_transaction') or 'none replayed'})")
        return f"{self.env_database} copied live" + (f" ({self.fallback})" if self.fallback else "")


def prepare(transport, host: Host, database: str, password: str, fill: bool,
            branch=None, env_database: str = "") -> bool:
    """The preview's role (in vigil_previews before it may log in; its password set anew) and, when there is
    none, its database: by `branch(name) -> bool` where it makes one, else created and, with `fill`, filled
    from `env_database` live. True when this made the database. A failure drops only what this made."""
    sql = (f"SET log_statement = 'none';\nBEGIN;\n"
           f"SELECT format('CREATE ROLE %I NOLOGIN', '{PREVIEWS_GROUP}') WHERE NOT EXISTS "
           f"(SELECT 1 FROM pg_roles WHERE rolname = '{PREVIEWS_GROUP}') \\gexec\n"
           f"SELECT format('CREATE ROLE %I NOLOGIN', '{database}') WHERE NOT EXISTS "
           f"(SELECT 1 FROM pg_roles WHERE rolname = '{database}') \\gexec\n"
           # pg_hba.conf admits a member of this group to its own database only (roles/postgresql): the role
           # joins it before it may log in at all.
           f"GRANT \"{PREVIEWS_GROUP}\" TO \"{database}\";\n"
           f"ALTER ROLE \"{database}\" WITH LOGIN PASSWORD '{password}';\nCOMMIT;\n"
           f"SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{database}') AS new \\gset\n"
           f"\\echo new :new\n")
    if "new t" not in as_postgres(transport, host, sql, f"the preview's role {database}"):
        return False
    made = False
    try:
        # The branch program drops what it made if its copy fails, and refuses a name taken meanwhile.
        made = bool(fill and branch is not None and branch(database))
        if not made:
            as_postgres(transport, host, f'CREATE DATABASE "{database}" OWNER "{database}";\n',
                        f"the preview's database {database}")
            made = True
            if fill:
                filled = transport.run(Command(("bash", "-c", FILL, "vigil", env_database, database), sudo=True),
                                       timeout=7200)
                if not filled.ok:
                    raise PreviewError(f"{host.name}: copying {env_database} into {database} failed: "
                                       f"{filled.stderr.strip()[-300:]}")
        as_postgres(transport, host, f'REVOKE CONNECT ON DATABASE "{database}" FROM PUBLIC;\n',
                    f"the preview's database {database}")
    except BaseException:
        if made:
            drop(transport, host, database)
        else:
            drop_role_without_database(transport, host, database)
        raise
    return True


def drop(transport, host: Host, database: str) -> bool:
    """The preview's database and role gone; True when there was one."""
    check_name(database)
    sql = (f"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{database}') OR EXISTS "
           f"(SELECT 1 FROM pg_roles WHERE rolname = '{database}') AS was \\gset\n"
           f"DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE);\nDROP ROLE IF EXISTS \"{database}\";\n"
           f"\\echo was :was\n")
    return "was t" in as_postgres(transport, host, sql, f"dropping {database}")


def drop_role_without_database(transport, host: Host, database: str) -> None:
    """The preview's role gone, unless a database of its name is there (another run's: left to it)."""
    check_name(database)
    sql = (f"SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{database}') AS alone \\gset\n"
           f"\\if :alone\nDROP ROLE IF EXISTS \"{database}\";\n\\endif\n")
    as_postgres(transport, host, sql, f"dropping the role {database}")


def check_name(database: str) -> None:
    if not database.startswith("preview_"):
        raise PreviewError(f"{database!r} is not a preview's database")


def server_certificate(transport, host: Host) -> str:
    """The database server's certificate (public), which a preview on another host verifies it with."""
    done = transport.run(Command(("cat", "--", SERVER_CERTIFICATE), sudo=True), timeout=60)
    if not done.ok or not done.stdout.startswith("-----BEGIN CERTIFICATE-----"):
        raise PreviewError(f"{host.name}: no PostgreSQL certificate at {SERVER_CERTIFICATE}, which previews on "
                           f"other hosts verify the server with: run invoke provision.server first")
    return done.stdout


def as_postgres(transport, host: Host, sql: str, what: str) -> str:
    """`sql` through psql as postgres on the database host (on stdin: a password in it is on no command
    line); its output, or a PreviewError naming `what` (masked: psql may quote the statement)."""
    done = transport.run(Command(("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                                  "-d", "postgres"), sudo=True, stdin=sql.encode()), timeout=300)
    if not done.ok:
        raise PreviewError(REDACTOR.redact(f"{host.name}: {what}: {done.stderr.strip()[-300:]}"))
    return done.stdout
