"""The pgbackrest role: WAL archived continuously and backups kept in an encrypted pgBackRest
repository on a backup host of its own, so a lost database host takes at most `archive_timeout`
seconds of commits with it.

Two ends, picked by the host's groups: the database host (group db) pushes its WAL to the
repository over SSH as postgres, in the background from a local queue; the repository host (the
first host of `pgbackrest_repository_group`) holds the encrypted repository and logs in to the
database host as postgres to take backups. Each direction has its own key derived from the
PGBACKREST_SSH_SEED secret (vigil.vault.derived_keys), accepted only from the peer's address
(`restrict,from=`), and each end pins the other's host key from the inventory's known_hosts. The
firewall role opens SSH between the two without its rate limit (firewall_ssh_peer_groups).
The repository host also runs the weekly restore drill (files/vigil-pgbackrest-drill, which
`backup.branch` uses too) in a scratch cluster of PostgreSQL's binaries; the database host has
the restore point a deploy makes before it migrates (vigil-restore-point).
Nothing happens where the inventory has no repository group.
"""

import json

from vigil.core.commands import script
from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.core.roles import load_role
from vigil.core.topology import database_cluster, repository_ends
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.guarded import Guarded
from vigil.operations.postgresql import PostgresSettings, restart_under_patroni
from vigil.operations.systemd import DaemonReload, ServiceAction, SystemdUnit
from vigil.operations.users import User
from vigil.vault.derived_keys import derive_ssh_key

SSH_WRAPPER = "/usr/local/lib/vigil/pgbackrest-ssh"
CONFIG = "/etc/pgbackrest/pgbackrest.conf"
REPOSITORY_USER = "pgbackrest"
# The repository user's home (its SSH key); the repository itself is pgbackrest_repository_path.
REPOSITORY_HOME = "/var/lib/pgbackrest"
# pgBackRest's lock files on the backup host: one place for the timers and manual runs.
LOCK_PATH = f"{REPOSITORY_HOME}/lock"
BACKUP_UNIT = "/etc/systemd/system/vigil-pgbackrest-backup@.service"
S3_BACKUP_UNIT = "/etc/systemd/system/vigil-pgbackrest-backup-s3@.service"
# On the database host: the restore point a deploy makes before it migrates (vigil.deploy.safety).
RESTORE_POINT = "/usr/local/sbin/vigil-restore-point"
# The restore drill (files/vigil-pgbackrest-drill): its program, settings, working directory (a
# scratch cluster under it while it runs, its last result beside it) and unit.
DRILL = "/usr/local/lib/vigil/vigil-pgbackrest-drill"
DRILL_CONFIG = "/etc/vigil/pgbackrest-drill.json"
DRILL_UNIT = "vigil-pgbackrest-drill"
# Writes a scheduled job's success as a node-exporter textfile metric (files/vigil-record-success).
RECORD_SUCCESS = "/usr/local/lib/vigil/vigil-record-success"
# Debian creates and starts a "main" cluster when PostgreSQL's server is installed: the backup host
# wants only its binaries, for the drill's scratch cluster.
NO_MAIN_CLUSTER = "/etc/postgresql-common/createcluster.d/vigil-no-main-cluster.conf"
# The database host's end-to-end archiving check; its unit failed is WalArchivingFailing on the monitor host.
CHECK_UNIT = "vigil-pgbackrest-check"
CALENDAR = r"[A-Za-z0-9 ,:*./~-]{1,64}"
DATABASE_USER = "postgres"
DATABASE_HOME = "/var/lib/postgresql"
STANZA = r"[a-z][a-z0-9_-]{0,62}"
IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"
SIZE = r"[0-9]+(KiB|MiB|GiB|TiB|KB|MB|GB|TB)?"
# One key per direction of login: the database host's postgres pushing WAL to the repository, and
# the repository host's pgbackrest taking backups from the database.
DATABASE_TO_REPOSITORY = "pgbackrest archive: database to repository"
REPOSITORY_TO_DATABASE = "pgbackrest backup: repository to database"

# The data directory PostgreSQL reports must be the one pgBackRest is told; otherwise say which to set.
PG_PATH_MATCHES = 'test "$(psql -XAtqc "show data_directory" 2>/dev/null)" = "$1"'
PG_PATH_MISMATCH = (
    'echo "pgbackrest_pg_path is $1 but PostgreSQL here keeps its data in '
    '$(psql -XAtqc "show data_directory" 2>/dev/null || echo "a directory it did not say (is it running?)"): '
    'set pgbackrest_pg_path to it" >&2; exit 1'
)
# Creating the stanza needs the database host onboarded (its key accepted, archiving on): hosts are
# onboarded side by side, so keep trying for a while before failing with pgBackRest's own error.
STANZA_CREATE = r'''
tries=0
until out=$(pgbackrest --stanza="$1" stanza-create 2>&1); do
    tries=$((tries + 1))
    if [ "$tries" -ge 24 ]; then printf '%s\n' "$out" >&2; exit 1; fi
    sleep 5
done
'''


# A new repository configuration must open the repository already there: a passphrase that is not the
# one it was encrypted with (PGBACKREST_CIPHER_PASS changed, or another env's) would leave every backup
# and archive-push failing. Read the repository's backup.info with it ($3, the new file) before it is
# written; a repository not created yet has nothing to open. Run as root: no log or lock is written.
OPENS_REPOSITORY = r'''
test -e "$2/backup/$1/backup.info" || exit 0
info=$(cd / && pgbackrest --config="$3" --stanza="$1" --repo=1 --log-level-file=off --log-level-console=off \
    repo-get "backup/$1/backup.info" 2>/dev/null)
code=$?
# A wrong key decrypts about one file in 256 into garbage without an error (AES-CBC's padding happens
# to look valid): only pgBackRest's own text proves the passphrase.
if [ "$code" -eq 0 ]; then
    case "$info" in
        "[backrest]"*) ;;
        *) code=95 ;;
    esac
fi
case $code in
    0) exit 0 ;;
    95) echo "the repository in $2 was encrypted with another passphrase than the env's PGBACKREST_CIPHER_PASS: \
set the secret back to the repository's (nothing was changed here)" >&2 ;;
    *) echo "the repository in $2 could not be opened with the new configuration (pgbackrest exit $code); \
nothing was changed here" >&2 ;;
esac
exit 1
'''


def tasks(role, vars):
    """The pgbackrest role's operations for one host, in order: the repository end, the database end, or none."""
    group = vars.string("pgbackrest_repository_group", r"[A-Za-z0-9_-]+")
    inventory = vars.inventory
    ends = repository_ends(inventory.groups, group) if inventory is not None else None
    if ends is None:
        return []
    repository, database = (inventory.hosts[name] for name in ends)
    # With a database cluster every member is a database end: whichever leads archives its WAL, and the
    # repository backs up from a replica (backup-standby).
    databases = [inventory.hosts[name] for name in database_cluster(inventory)] or [database]
    if repository.name in {host.name for host in databases}:
        raise ConfigError(f"{vars.where('pgbackrest_repository_group')}: {repository.name} is both a database "
                          "host and the repository's: backups must live on another host")
    if vars.host.name == repository.name:
        return repository_end(role, vars, databases)
    if vars.host.name in {host.name for host in databases}:
        return database_end(role, vars, repository, clustered=len(databases) > 1)
    return []


def settings(vars) -> dict:
    """What both ends' configuration shares, validated."""
    compress = vars.string("pgbackrest_compress_type", "zst|lz4|gz|none")
    return {
        "stanza": vars.string("pgbackrest_stanza", STANZA),
        "pg_path": vars.path("pgbackrest_pg_path"),
        "compress_type": compress,
        "process_max": vars.integer("pgbackrest_process_max", minimum=1),
        "ssh_wrapper": SSH_WRAPPER,
        "archive_wait": vars.integer("pgbackrest_archive_wait_seconds", minimum=5),
    }


def s3_repository(vars) -> dict | None:
    """The second repository on S3-compatible storage, when pgbackrest_s3_bucket is set (else None): the
    settings and secrets both ends' configurations give it."""
    bucket = vars.string("pgbackrest_s3_bucket", r"|[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
    if not bucket:
        return None
    return {
        "bucket": bucket,
        "endpoint": vars.string("pgbackrest_s3_endpoint", r"[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?"),
        "region": vars.string("pgbackrest_s3_region", r"[a-z0-9][a-z0-9-]{0,31}"),
        "path": vars.path("pgbackrest_s3_path"),
        "uri_style": vars.string("pgbackrest_s3_uri_style", "host|path"),
        "key": vars.secret("PGBACKREST_S3_KEY").value,
        "key_secret": vars.secret("PGBACKREST_S3_KEY_SECRET").value,
        "cipher_pass": vars.secret("PGBACKREST_S3_CIPHER_PASS").value,
    }


def hardening(role) -> str:
    """The sandboxing every unit of this role shares (each adds the paths it may write), rated OK by
    `systemd-analyze security`."""
    return role.template("hardening.j2")


def peer_of(vars, peer) -> tuple[str, int]:
    """The address and SSH port this host reaches `peer` on: its private address."""
    return vars.address_of(peer.name), peer.port


def pinned_host_keys(vars, peer, address: str) -> str:
    """known_hosts lines for `peer` at `address`, with the keys the inventory's known_hosts pins for it."""
    path = vars.inventory.known_hosts
    wanted = {peer.address, f"[{peer.address}]:{peer.port}"}
    name = address if peer.port == 22 else f"[{address}]:{peer.port}"
    lines = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#") and wanted & set(fields[0].split(",")):
            lines.append(f"{name} {fields[1]} {fields[2]}")
    if not lines:
        raise ConfigError(f"{vars.where('pgbackrest_repository_group')}: inventory/{path.name} pins no host key for "
                          f"{peer.name} ({peer.address}): run `invoke provision.trust --limit={peer.name}` first")
    return "\n".join(lines) + "\n"


def login(role, vars, user: str, home: str, own_key: str, peers: list) -> list:
    """The user's key for logging in to `peers` (hosts), their pinned host keys, and pgBackRest's ssh wrapper."""
    key = derive_ssh_key(vars.secret("PGBACKREST_SSH_SEED"), own_key)
    ssh_dir = f"{home}/.ssh"
    names = ", ".join(peer.name for peer in peers)
    return [
        Directory(ssh_dir, owner=user, group=user, mode="0700"),
        File(f"{ssh_dir}/vigil-pgbackrest", key.private_pem.value, owner=user, group=user, mode="0600", secret=True,
             name=f"Ensure {user} has its key for logging in to {names} (pgBackRest)."),
        File(f"{ssh_dir}/vigil-pgbackrest.known_hosts",
             "".join(pinned_host_keys(vars, peer, peer_of(vars, peer)[0]) for peer in peers), owner=user,
             group=user, mode="0644", name=f"Ensure {user} knows {names}'s host keys."),
        Directory("/usr/local/lib/vigil", mode="0755"),
        # One pgBackRest user per host (a host is never both ends), so the wrapper names its files.
        File(SSH_WRAPPER, render_template(role.template("pgbackrest-ssh.j2"), {
            "key": f"{ssh_dir}/vigil-pgbackrest", "known_hosts": f"{ssh_dir}/vigil-pgbackrest.known_hosts"}),
            mode="0755",
            name=f"Ensure {SSH_WRAPPER} logs in with pgBackRest's own key and pinned host keys."),
    ]


def accepted_key(vars, purpose: str, addresses: list[str]) -> str:
    """The authorized_keys line for the peers' key: from their addresses only, no pty or forwarding."""
    return (f'restrict,from="{",".join(addresses)}" '
            f'{derive_ssh_key(vars.secret("PGBACKREST_SSH_SEED"), purpose).public_line}')


def database_end(role, vars, repository, clustered: bool = False) -> list:
    """A database host's end; `clustered`: a member of the database cluster (its check runs on the leader)."""
    shared = settings(vars)
    address, port = peer_of(vars, repository)
    archive_timeout = vars.integer("pgbackrest_archive_timeout", minimum=1)
    s3 = s3_repository(vars)
    config = render_template(role.template("pgbackrest.conf.j2"), {
        **shared, "side": "database", "peer": address, "peer_user": REPOSITORY_USER, "peer_port": port,
        "archive_queue_max": vars.string("pgbackrest_archive_queue_max", SIZE), "s3": s3})
    return [
        AptPackages(["pgbackrest"], name="Ensure pgBackRest is installed."),
        Guarded([script(PG_PATH_MISMATCH, shared["pg_path"], as_user=DATABASE_USER)],
                unless=script(PG_PATH_MATCHES, shared["pg_path"], as_user=DATABASE_USER),
                name=f"Ensure PostgreSQL keeps its data in {shared['pg_path']} (pgbackrest_pg_path)."),
        *login(role, vars, DATABASE_USER, DATABASE_HOME, DATABASE_TO_REPOSITORY, [repository]),
        File(f"{DATABASE_HOME}/.ssh/authorized_keys", accepted_key(vars, REPOSITORY_TO_DATABASE, [address]) + "\n",
             owner=DATABASE_USER, group=DATABASE_USER, mode="0600",
             name=f"Ensure postgres accepts the backup host {repository.name}'s pgBackRest key, from it alone."),
        Directory("/var/spool/pgbackrest", owner=DATABASE_USER, group=DATABASE_USER, mode="0750"),
        Directory("/var/log/pgbackrest", owner=DATABASE_USER, group=DATABASE_USER, mode="0750"),
        Directory("/etc/pgbackrest", mode="0755"),
        File(CONFIG, config, group=DATABASE_USER, mode="0640", secret=s3 is not None,
             name=f"Ensure pgBackRest pushes WAL to the repository on {repository.name}"
                  f"{' and to S3 bucket ' + s3['bucket'] if s3 else ''}."),
        File(f"/etc/systemd/system/{CHECK_UNIT}.service", render_template(role.template("check.service.j2"), {
            "stanza": shared["stanza"], "archive_wait": shared["archive_wait"], "hardening": hardening(role),
            "timeout": shared["archive_wait"] + 60, "leader_only": clustered}),
            notify=("reload systemd",), name="Ensure WAL archiving can be checked end to end, as postgres, hardened."),
        File(f"/etc/systemd/system/{CHECK_UNIT}.timer", render_template(role.template("check.timer.j2"), {
            "every": vars.integer("pgbackrest_check_interval", minimum=60)}),
            notify=("reload systemd",), name="Ensure WAL archiving is checked on a schedule."),
        SystemdUnit(f"{CHECK_UNIT}.timer", enabled=True, running=True),
        File(RESTORE_POINT, render_template(role.template("restore-point.j2"), {"stanza": shared["stanza"]}),
             mode="0755", name=f"Ensure {RESTORE_POINT} makes and archives a restore point before a migration."),
        PostgresSettings({
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"pgbackrest --stanza={shared['stanza']} archive-push %p",
            "archive_timeout": str(archive_timeout),
        }, notify=("restart postgresql",), name=f"Ensure PostgreSQL archives its WAL through pgBackRest "
                                                f"(at least every {archive_timeout} s)."),
    ]


def repository_end(role, vars, databases: list) -> list:
    """The repository host's end, backing up `databases` (the one database host, or the cluster's members:
    pgBackRest finds the primary among them, and copies from a standby)."""
    shared = settings(vars)
    database = databases[0]
    address, port = peer_of(vars, database)
    addresses = [peer_of(vars, host)[0] for host in databases]
    repository_path = vars.path("pgbackrest_repository_path")
    config = render_template(role.template("pgbackrest.conf.j2"), {
        **shared, "side": "repository", "peer": address, "peer_user": DATABASE_USER, "peer_port": port,
        "pg_hosts": [{"index": index, "address": peer_of(vars, host)[0], "port": peer_of(vars, host)[1]}
                     for index, host in enumerate(databases, 1)],
        "repository_path": repository_path, "cipher_pass": vars.secret("PGBACKREST_CIPHER_PASS").value,
        "window_days": vars.integer("pgbackrest_window_days", minimum=1), "lock_path": LOCK_PATH,
        "s3": s3_repository(vars)})
    unit = {"stanza": shared["stanza"], "repository_path": repository_path, "lock_path": LOCK_PATH,
            "timeout": vars.integer("pgbackrest_backup_timeout_seconds", minimum=60), "repo_option": "", "into": "",
            "hardening": hardening(role), "record_success": RECORD_SUCCESS, "repository": "local"}
    service = render_template(role.template("backup@.service.j2"), unit)
    timers = drill(role, vars, database, shared["stanza"], repository_path)
    schedules = [(backup_type, vars.string(f"pgbackrest_{backup_type}_schedule", CALENDAR),
                  f"vigil-pgbackrest-backup@{backup_type}.service") for backup_type in ("full", "incr")]
    if s3_repository(vars) is not None:
        # The second repository's weekly full: pgBackRest backs up into one repository per run.
        timers.append(File(S3_BACKUP_UNIT, render_template(role.template("backup@.service.j2"), {
            **unit, "repo_option": " --repo=2", "into": " into S3", "repository": "s3"}), notify=("reload systemd",),
            name="Ensure backups into the S3 repository run as pgbackrest, hardened, with a deadline."))
        schedules.append(("s3-full", vars.string("pgbackrest_s3_full_schedule", CALENDAR),
                          "vigil-pgbackrest-backup-s3@full.service"))
    for name, calendar, started in schedules:
        timers += [
            File(f"/etc/systemd/system/vigil-pgbackrest-{name}.timer",
                 render_template(role.template("backup.timer.j2"), {"type": name, "calendar": calendar,
                                                                    "unit": started}),
                 notify=("reload systemd",), name=f"Ensure a {name} backup is taken at {calendar}."),
            SystemdUnit(f"vigil-pgbackrest-{name}.timer", enabled=True, running=True),
        ]
    return [
        AptPackages(["pgbackrest"], name="Ensure pgBackRest is installed."),
        User(REPOSITORY_USER, shell="/bin/sh", home=REPOSITORY_HOME, system=True,
             name="Ensure the pgbackrest user exists to own the repository."),
        # Searchable by all, as before; what is in it is closed on its own (the repository 0750, the keys 0700).
        Directory(REPOSITORY_HOME, owner=REPOSITORY_USER, group=REPOSITORY_USER, mode="0755"),
        Directory(repository_path, owner=REPOSITORY_USER, group=REPOSITORY_USER, mode="0750"),
        *login(role, vars, REPOSITORY_USER, REPOSITORY_HOME, REPOSITORY_TO_DATABASE, databases),
        File(RECORD_SUCCESS, role.file("vigil-record-success"), mode="0755",
             name="Ensure the backups and the drill can record their success for the monitor host."),
        File(f"{REPOSITORY_HOME}/.ssh/authorized_keys", accepted_key(vars, DATABASE_TO_REPOSITORY, addresses) + "\n",
             owner=REPOSITORY_USER, group=REPOSITORY_USER, mode="0600",
             name=f"Ensure pgbackrest accepts the pgBackRest key of {', '.join(h.name for h in databases)}, "
                  "from them alone."),
        Directory("/var/log/pgbackrest", owner=REPOSITORY_USER, group=REPOSITORY_USER, mode="0750"),
        # The package makes it postgres's; a restore here (the drill's) cleans its queue as pgbackrest.
        Directory("/var/spool/pgbackrest", owner=REPOSITORY_USER, group=REPOSITORY_USER, mode="0750"),
        Directory(LOCK_PATH, owner=REPOSITORY_USER, group=REPOSITORY_USER, mode="0750"),
        Directory("/etc/pgbackrest", mode="0755"),
        File(CONFIG, config, group=REPOSITORY_USER, mode="0640", secret=True,
             validate=("sh", "-c", OPENS_REPOSITORY, "vigil", shared["stanza"], repository_path),
             name=f"Ensure the repository is encrypted, keeps {vars['pgbackrest_window_days']} days and backs up "
                  f"{', '.join(host.name for host in databases)}."),
        Guarded([script(STANZA_CREATE, shared["stanza"], as_user=REPOSITORY_USER)],
                creates=f"{repository_path}/backup/{shared['stanza']}/backup.info",
                name=f"Ensure the repository holds stanza {shared['stanza']}, checked against {database.name}."),
        File(BACKUP_UNIT, service, notify=("reload systemd",),
             name="Ensure the scheduled backups run as pgbackrest, hardened, with a deadline."),
        *timers,
    ]


def drill(role, vars, database, stanza: str, repository_path: str) -> list:
    """The restore drill on the backup host: PostgreSQL's binaries (no cluster of their own), the
    program, its settings, and its unit and weekly timer. Run after the repository exists."""
    path = vars.path("pgbackrest_drill_path")
    calendar = vars.string("pgbackrest_drill_schedule", CALENDAR)
    address, ssh_port = peer_of(vars, database)
    # The app's database as the database host's own postgresql role creates it.
    database_vars = vars.inventory.vars_for(database, [load_role("postgresql")])
    port = vars.integer("pgbackrest_drill_port", minimum=1024)
    if port > 65535:
        raise ConfigError(f"{vars.where('pgbackrest_drill_port')}: {port} is not a port")
    settings = {
        "stanza": stanza, "database": database_vars.string("postgresql_database", IDENTIFIER),
        "owner": database_vars.string("postgresql_user", IDENTIFIER),
        "peer_address": address, "peer_port": ssh_port, "ssh": SSH_WRAPPER, "scratch": f"{path}/scratch",
        "result": f"{path}/last.json", "lock": f"{LOCK_PATH}/vigil-drill.lock", "port": port,
        "lock_wait_seconds": vars.integer("pgbackrest_drill_lock_wait_seconds", minimum=1),
        "recovery_deadline_seconds": vars.integer("pgbackrest_drill_timeout_seconds", minimum=60),
    }
    unit = render_template(role.template("drill.service.j2"), {
        "stanza": stanza, "drill": DRILL, "repository_path": repository_path, "lock_path": LOCK_PATH,
        "drill_path": path, "timeout": settings["recovery_deadline_seconds"] + 900, "hardening": hardening(role),
        "record_success": RECORD_SUCCESS})
    return [
        Directory("/etc/postgresql-common/createcluster.d", mode="0755"),
        File(NO_MAIN_CLUSTER, "# Managed by vigil (roles/pgbackrest): PostgreSQL here serves only the restore drill.\n"
                              "create_main_cluster = false\n",
             name="Ensure installing PostgreSQL here creates no cluster of its own."),
        AptPackages(vars.string_list("pgbackrest_drill_packages"),
                    name="Ensure PostgreSQL's server binaries are here for the restore drill."),
        # Readable by all: incident.status reads the last result (no secret is in it).
        Directory(path, owner=REPOSITORY_USER, group=REPOSITORY_USER, mode="0755"),
        Directory("/etc/vigil", mode="0755"),
        File(DRILL_CONFIG, json.dumps(settings, indent=2, sort_keys=True) + "\n", group=REPOSITORY_USER, mode="0640",
             name=f"Ensure the restore drill knows where {database.name}'s database and its scratch cluster are."),
        File(DRILL, role.file("vigil-pgbackrest-drill"), mode="0755", name=f"Ensure {DRILL} is installed."),
        File(f"/etc/systemd/system/{DRILL_UNIT}.service", unit, notify=("reload systemd",),
             name="Ensure the restore drill runs as pgbackrest, hardened, with a deadline."),
        File(f"/etc/systemd/system/{DRILL_UNIT}.timer", render_template(role.template("drill.timer.j2"), {
            "calendar": calendar}), notify=("reload systemd",), name=f"Ensure the restore drill runs at {calendar}."),
        SystemdUnit(f"{DRILL_UNIT}.timer", enabled=True, running=True),
    ]


def handlers(role, vars):
    if vars.inventory is not None and vars.host.name in database_cluster(vars.inventory):
        return {"restart postgresql": restart_under_patroni(vars.host.name), "reload systemd": DaemonReload()}
    return {"restart postgresql": ServiceAction("postgresql.service", "restart"), "reload systemd": DaemonReload()}
