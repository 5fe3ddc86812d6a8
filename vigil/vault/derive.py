"""Values derived per host: the app's DATABASE_URL, which vigil writes for each web host when the env
leaves it unset (over loopback on the database host, over verified TLS from the others), and the DSN of
the env's own error tracker (SENTRY_DSN, NEXT_PUBLIC_SENTRY_DSN; vigil/vault/error_tracking.py)."""

from __future__ import annotations

import urllib.parse

from vigil.core.commands import Command, Secret
from vigil.core.fanout import connect
from vigil.core.inventory import Host, HostVars
from vigil.core.roles import load_role
from vigil.core.topology import LEADER_PORT, Topology, database_cluster
from vigil.operations.postgresql import SERVER_CERTIFICATE
from vigil.vault.error_tracking import SECRET_KEY, dsn, errors_site
from vigil.vault.masking import register
from vigil.vault.paths import SecretsError
from vigil.vault.schema import DERIVATIONS, Schema, Service

# Why a derived DATABASE_URL needs exactly one database host, as the error says it.
ONE_DATABASE = ("DATABASE_URL is unset, and vigil derives it for exactly one database host; "
                "set it with `invoke secrets.set DATABASE_URL`")

POSTGRESQL_PORT = 5432


def postgresql_url(topology: Topology, host: Host, password: str, root_certificate: str) -> str:
    """The app's DATABASE_URL as seen from `host`: over loopback on the database host itself, else to the
    database host's private address over TLS (its pg_hba.conf accepts only hostssl from web hosts), the
    server checked against `root_certificate` (a path on `host`) and the address it names. With a database
    cluster, to HAProxy on `host`'s loopback, which forwards to whichever member leads (roles/haproxy), the
    server checked against the cluster's CA: a failover changes nothing here."""
    members = database_cluster(topology.inventory)
    db = topology.inventory.hosts[members[0]] if members else topology.database(ONE_DATABASE)
    db_vars = topology.inventory.vars_for(db, [load_role("postgresql")])
    user = db_vars.string("postgresql_user", r"[a-z_][a-z0-9_]{0,62}")
    database = db_vars.string("postgresql_database", r"[a-z_][a-z0-9_]{0,62}")
    if members:
        return (f"postgresql://{credentials_of(user, password)}@127.0.0.1:{LEADER_PORT}/{database}"
                f"?sslmode=verify-full&sslrootcert={urllib.parse.quote(root_certificate)}")
    return database_url(db_vars, host, user, password, database, root_certificate)


def credentials_of(user: str, password: str) -> str:
    return f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"


def cluster_root_certificate(values: dict[str, str], env: str) -> str:
    """The database cluster's CA, which the web hosts check the leader's certificate against."""
    from vigil.vault.db_cluster import SEED, cluster_ca  # noqa: PLC0415 (cryptography, only with a cluster)
    if SEED not in values:
        raise SecretsError(f"the database cluster's CA is derived from {SEED}, which the secrets lack: "
                           f"run `invoke secrets.generate --env={env}`")
    return cluster_ca(Secret(values[SEED]), env).certificate


def database_url(db_vars: HostVars, host: Host, user: str, password: str, database: str,
                 root_certificate: str) -> str:
    """`user`'s URL of `database` on the database host of `db_vars`, as seen from `host` (see postgresql_url)."""
    credentials = credentials_of(user, password)
    if db_vars.host.name == host.name:
        return f"postgresql://{credentials}@127.0.0.1:{POSTGRESQL_PORT}/{database}"
    address = db_vars.private_address()
    address = f"[{address}]" if ":" in address else address
    return (f"postgresql://{credentials}@{address}:{POSTGRESQL_PORT}/{database}"
            f"?sslmode=verify-full&sslrootcert={urllib.parse.quote(root_certificate)}")


def fetch_database_certificate(topology: Topology) -> str:
    """The database server's TLS certificate (public), read from the database host as the admin user."""
    db, inventory = topology.database(ONE_DATABASE), topology.inventory
    with connect(inventory, db, bootstrap_fallback=True) as transport:
        result = transport.run(Command(("cat", "--", SERVER_CERTIFICATE)))
    if not result.ok or not result.stdout.startswith("-----BEGIN CERTIFICATE-----"):
        raise SecretsError(
            f"{db.name}: no PostgreSQL certificate at {SERVER_CERTIFICATE} yet, which the web hosts "
            f"verify the database with: run `invoke provision.server --env={inventory.env} --limit={db.name}` first"
        )
    return result.stdout


def database_root_certificate(schema: Schema) -> str:
    """Where web hosts keep the database server's certificate to verify it (DATABASE_URL's sslrootcert)."""
    return f"{schema.config_dir}/database-server.crt"


def derive_values(schema: Schema, values: dict[str, str], topology: Topology, host: Host,
                  services: list[Service]) -> dict[str, str]:
    """The derived keys `host`'s services need and the env leaves unset, computed for that host."""
    derived = {}
    for key, rule in schema.keys.items():
        if not rule.derive or key in values or not any(service.name in rule.services for service in services):
            continue
        site = errors_site(topology.inventory) if rule.derive == "errors" else None
        if rule.derive == "errors" and site is None:
            continue  # no error tracker of the env's own: the app runs without a DSN
        missing = [source for source in DERIVATIONS[rule.derive] if source not in values]
        if missing:
            raise SecretsError(f"{key} is derived from {', '.join(missing)}, which the secrets lack")
        if site is not None:
            derived[key] = dsn(site, values[SECRET_KEY])
        else:
            derived[key] = postgresql_url(topology, host, values["DB_PASSWORD"], database_root_certificate(schema))
    register(derived, schema)
    return derived
