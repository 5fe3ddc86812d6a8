"""The postgresql role: the distribution's server, the app's role and database.

On a host that is also the only web host the server listens on localhost
only. When web hosts are other machines it also listens on this host's private
address, requires TLS and scram-sha-256 from exactly those hosts (pg_hba.conf),
and the firewall role opens 5432 to them alone (firewall_group_rules).

On a member of the database cluster (three or more database hosts) Patroni runs
the server (roles/patroni, after this role): it sets the listen addresses and
max_connections itself, the certificate is the member's from the cluster's CA
(the web hosts check it against that CA, dialling the leader through HAProxy on
their loopback), the members may stream from each other, the app's role and
database are written on the leader only, and a restart or reload goes through
Patroni rather than postgresql@.service.
"""

from vigil.core.commands import script
from vigil.core.topology import PREVIEW_GROUP, database_cluster
from vigil.facts.postgresql import psql
from vigil.operations.apt import AptPackages
from vigil.operations.files import Absent, Directory, File
from vigil.operations.guarded import Guarded, HandlerCommands
from vigil.operations.postgresql import (
    SERVER_CERTIFICATE,
    SERVER_KEY,
    TLS_DIR,
    PostgresClients,
    PostgresDatabase,
    PostgresRole,
    PostgresSettings,
    restart_under_patroni,
)
from vigil.operations.systemd import DaemonReload, ServiceAction, SystemdUnit
from vigil.vault.db_cluster import REPLICATION_USER, REWIND_USER, SEED, member_certificate

IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"


def tasks(role, vars):
    """The postgresql role's operations for one host, in order."""
    user = vars.string("postgresql_user", IDENTIFIER)
    database = vars.string("postgresql_database", IDENTIFIER)
    max_connections = vars["postgresql_max_connections"]
    if max_connections != "auto":
        max_connections = str(vars.integer("postgresql_max_connections", minimum=5))
    clients = vars.peer_addresses(
        vars.string("postgresql_client_group", r"[A-Za-z0-9_-]+"), vars.where("postgresql_client_group")
    )
    previews = None
    if vars.get("previews_domain"):
        # Where previews run (vigil.core.topology.preview_hosts): group preview, else web.
        group = PREVIEW_GROUP if vars.inventory.groups.get(PREVIEW_GROUP) else "web"
        previews = vars.peer_addresses(group, vars.where("previews_domain"))
    listen = vars.string("postgresql_listen_addresses", r"[a-z0-9.:, -]+")
    if listen == "auto":
        listen = ",".join(["localhost", vars.private_address()] if clients else ["localhost"])
    settings = {"listen_addresses": listen, "max_connections": max_connections, "password_encryption": "scram-sha-256"}
    members = database_cluster(vars.inventory)
    clustered = vars.host.name in members
    certificate = []
    if clustered:
        # Patroni passes both on its command line, which outranks ALTER SYSTEM (roles/patroni's defaults).
        del settings["listen_addresses"], settings["max_connections"]
        settings.update({"ssl": "on", "ssl_cert_file": SERVER_CERTIFICATE, "ssl_key_file": SERVER_KEY})
        certificate = cluster_certificate(vars)
    elif clients:
        # Clients verify the server (sslmode=verify-full, which node-postgres applies to `require` too), so
        # its certificate must name the address they dial: Debian's snakeoil one names the host name.
        settings.update({"ssl": "on", "ssl_cert_file": SERVER_CERTIFICATE, "ssl_key_file": SERVER_KEY})
        certificate = server_certificate(vars.private_address())
        # PostgreSQL binds the private address once, at start: after a reboot it must wait for it.
        certificate.append(Directory(NETWORK_DROPIN.rsplit("/", 1)[0], mode="0755"))
        certificate.append(
            File(
                NETWORK_DROPIN,
                "# Managed by vigil (roles/postgresql): listen on the private address.\n"
                "[Unit]\nWants=network-online.target\nAfter=network-online.target\n",
                notify=("reload systemd",),
                name="Ensure PostgreSQL starts once the network is up.",
            )
        )
    return [
        AptPackages(
            vars.string_list("postgresql_packages", r"[a-z0-9][a-z0-9+.-]+"), name="Ensure PostgreSQL is installed."
        ),
        SystemdUnit("postgresql.service", enabled=True, running=True),
        AptPackages(["age"], name="Ensure age is installed (backup.export encrypts its dump with it here)."),
        *retired_dump_backups(),
        *certificate,
        PostgresSettings(settings, notify=("restart postgresql",)),
        PostgresRole(user, vars.secret("DB_PASSWORD"), leader_only=clustered),
        PostgresDatabase(database, owner=user, leader_only=clustered),
        PostgresClients(database, user, clients, previews, notify=("reload postgresql",),
                        cluster=[vars.address_of(name) for name in members] if clustered else [],
                        cluster_roles=(REPLICATION_USER, REWIND_USER)),
    ]


def cluster_certificate(vars) -> list:
    """The member's certificate from the cluster's CA, naming its private address and loopback."""
    issued = member_certificate(vars.secret(SEED), vars.string("vigil_env"), vars.host.name, vars.private_address())
    return [
        Directory(TLS_DIR, owner="postgres", group="postgres", mode="0755"),
        File(SERVER_CERTIFICATE, issued.certificate, owner="postgres", group="postgres", mode="0644",
             notify=("reload postgresql",),
             name="Ensure PostgreSQL's certificate is the member's, from the cluster's CA."),
        File(SERVER_KEY, issued.key.value, owner="postgres", group="postgres", mode="0600", secret=True,
             notify=("reload postgresql",), name="Ensure PostgreSQL's key is the member's, for postgres alone."),
    ]


# The dump backups' helper, timers and settings, from before pgBackRest (roles/backup, removed in December
# 2026): stopped and removed from hosts onboarded then. Their dumps in /var/backups/vigil stay, the
# operator's to keep or delete (docs/backup.md). Remove this once every host has run it.
RETIRED_TIMERS = ("vigil-backup-create.timer", "vigil-backup-verify.timer")
RETIRED_FILES = ("/usr/local/sbin/vigil-backup", "/etc/vigil/backup.json", "/var/lib/vigil/backup-status.json",
                 *(f"/etc/systemd/system/vigil-backup-{job}.{kind}" for job in ("create", "verify")
                   for kind in ("timer", "service")))


def retired_dump_backups() -> list:
    return [
        *(SystemdUnit(timer, enabled=False, running=False) for timer in RETIRED_TIMERS),
        # Only a unit file's removal needs systemd to forget it.
        *(Absent(path, notify=("reload systemd",) if path.startswith("/etc/systemd/") else ())
          for path in RETIRED_FILES),
    ]


NETWORK_DROPIN = "/etc/systemd/system/postgresql@.service.d/vigil-network.conf"
# A self-signed certificate for the address the web hosts dial, made on the host so its key never
# leaves it; secrets.push gives the web hosts this certificate to verify the server against.
MAKE_CERTIFICATE = (
    'umask 077; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 '
    '-subj "/CN=$1" -addext "subjectAltName=IP:$1" -keyout "$2.new" -out "$3.new" 2>/dev/null '
    '&& chmod 0644 "$3.new" && mv -f "$2.new" "$2" && mv -f "$3.new" "$3"'
)
# Fresh enough (a month left) and naming exactly this address.
CERTIFICATE_FITS = (
    'test -s "$2" && openssl x509 -in "$3" -noout -checkend 2592000 >/dev/null '
    '&& openssl x509 -in "$3" -noout -ext subjectAltName 2>/dev/null | grep -qx "[[:space:]]*IP Address:$1"'
)


def server_certificate(address: str) -> list:
    return [
        Directory(TLS_DIR, owner="postgres", group="postgres", mode="0755"),
        Guarded([script(MAKE_CERTIFICATE, address, SERVER_KEY, SERVER_CERTIFICATE, as_user="postgres")],
                unless=script(CERTIFICATE_FITS, address, SERVER_KEY, SERVER_CERTIFICATE, as_user="postgres"),
                notify=("restart postgresql",),
                name=f"Ensure PostgreSQL has a TLS certificate for {address}."),
    ]


# Under Patroni: a reload re-reads the files (TLS, pg_hba.conf) on this member, Patroni's PostgreSQL.
CLUSTER_RELOAD = "select pg_reload_conf()"


def handlers(role, vars):
    if vars.host.name in database_cluster(vars.inventory):
        return {
            "reload systemd": DaemonReload(),
            "restart postgresql": restart_under_patroni(vars.host.name),
            "reload postgresql": HandlerCommands([psql(CLUSTER_RELOAD)], name="Reload PostgreSQL's files."),
        }
    return {
        "reload systemd": DaemonReload(),
        "restart postgresql": ServiceAction("postgresql.service", "restart"),
        "reload postgresql": ServiceAction("postgresql.service", "reload"),
    }
