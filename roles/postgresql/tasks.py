"""The postgresql role: the distribution's server on localhost, the app's role and database."""

from vigil.operations import AptPackages, ServiceAction, SystemdUnit
from vigil.postgresql import PostgresDatabase, PostgresRole, PostgresSettings

IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"


def tasks(role, vars):
    """The postgresql role's operations for one host, in order."""
    user = vars.string("postgresql_user", IDENTIFIER)
    database = vars.string("postgresql_database", IDENTIFIER)
    max_connections = vars["postgresql_max_connections"]
    if max_connections != "auto":
        max_connections = str(vars.integer("postgresql_max_connections", minimum=5))
    return [
        AptPackages(vars.string_list("postgresql_packages", r"[a-z0-9][a-z0-9+.-]+"), name="Ensure PostgreSQL is installed."),
        SystemdUnit("postgresql.service", enabled=True, running=True),
        PostgresSettings(
            {"listen_addresses": vars.string("postgresql_listen_addresses", r"[a-z0-9.:, -]+"),
             "max_connections": max_connections,
             "password_encryption": "scram-sha-256"},
            notify=("restart postgresql",),
        ),
        PostgresRole(user, vars.secret("DB_PASSWORD")),
        PostgresDatabase(database, owner=user),
    ]


def handlers(role, vars):
    return {"restart postgresql": ServiceAction("postgresql.service", "restart")}
