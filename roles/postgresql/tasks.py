"""The postgresql role: the distribution's server, the app's role and database.

On a host that is also the only web host the server listens on localhost
only. When web hosts are other machines it also listens on this host's private
address, requires TLS and scram-sha-256 from exactly those hosts (pg_hba.conf),
and the firewall role opens 5432 to them alone (firewall_group_rules).
"""

from vigil.operations import AptPackages, ServiceAction, SystemdUnit
from vigil.postgresql import PostgresClients, PostgresDatabase, PostgresRole, PostgresSettings

IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"


def tasks(role, vars):
    """The postgresql role's operations for one host, in order."""
    user = vars.string("postgresql_user", IDENTIFIER)
    database = vars.string("postgresql_database", IDENTIFIER)
    max_connections = vars["postgresql_max_connections"]
    if max_connections != "auto":
        max_connections = str(vars.integer("postgresql_max_connections", minimum=5))
    clients = vars.peer_addresses(vars.string("postgresql_client_group", r"[A-Za-z0-9_-]+"), vars.where("postgresql_client_group"))
    listen = vars.string("postgresql_listen_addresses", r"[a-z0-9.:, -]+")
    if listen == "auto":
        listen = ",".join(["localhost", vars.private_address()] if clients else ["localhost"])
    settings = {"listen_addresses": listen, "max_connections": max_connections, "password_encryption": "scram-sha-256"}
    if clients:
        # Debian's server has TLS on with its snakeoil certificate; say so, since pg_hba demands it.
        settings["ssl"] = "on"
    return [
        AptPackages(vars.string_list("postgresql_packages", r"[a-z0-9][a-z0-9+.-]+"), name="Ensure PostgreSQL is installed."),
        SystemdUnit("postgresql.service", enabled=True, running=True),
        PostgresSettings(settings, notify=("restart postgresql",)),
        PostgresRole(user, vars.secret("DB_PASSWORD")),
        PostgresDatabase(database, owner=user),
        PostgresClients(database, user, clients, notify=("reload postgresql",)),
    ]


def handlers(role, vars):
    return {
        "restart postgresql": ServiceAction("postgresql.service", "restart"),
        "reload postgresql": ServiceAction("postgresql.service", "reload"),
    }
