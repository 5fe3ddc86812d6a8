"""The patroni role: Debian's patroni managing PostgreSQL on each member of the database cluster (see
defaults.yml); nothing on other hosts, nor with fewer than three database hosts.

Forming the cluster keeps the first member's data. roles/postgresql has already set up a plain server on
every member; here the first member hands its running server over to Patroni (start.conf manual, its
postgresql@ unit stopped and masked, patroni@ started: with no cluster in etcd yet, Patroni adopts the
data directory as the leader's, as its docs describe for existing data). Every other member waits until
etcd holds the cluster's system identifier, and empties its own data directory only when it holds another
system's (never one holding tables of the app's database), so Patroni copies the leader into it. A marker
beside the data directory records the cluster a member joined; later runs leave it alone.

The roles Patroni logs in with (replication, pg_rewind) are created on the leader only, from a file the
run writes (their SCRAM verifiers use a derived salt, so a check compares them without the passwords);
the dynamic settings (synchronous mode, timings) are kept in line with patronictl edit-config.
"""

from __future__ import annotations

import json

from vigil.core.commands import script
from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.core.topology import ETCD_CLIENT_PORT, PATRONI_REST_PORT, database_cluster
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.guarded import Guarded
from vigil.operations.postgresql import scram_verifier
from vigil.operations.systemd import ServiceAction, SystemdUnit
from vigil.vault.db_cluster import (
    REPLICATION_USER,
    REST_USER,
    REWIND_USER,
    SEED,
    ClusterSecrets,
    fixed_salt,
    member_tls_files,
)

TLS_DIR = "/etc/patroni/tls"
CA, CERTIFICATE, KEY = f"{TLS_DIR}/ca.crt", f"{TLS_DIR}/member.crt", f"{TLS_DIR}/member.key"
USERS_SQL, USERS_CHECK = "/etc/patroni/vigil-users.sql", "/etc/patroni/vigil-users-check.sql"
DYNAMIC = "/etc/patroni/vigil-dynamic.json"
ETCD_TLS = "--cacert=/etc/etcd/tls/ca.crt --cert=/etc/etcd/tls/member.crt --key=/etc/etcd/tls/member.key"

# The roles Patroni needs, created or brought in line in one transaction (pg_rewind's grants are those
# Patroni's docs list for a non-superuser rewind role).
USERS = """\
-- Managed by vigil (roles/patroni): the roles Patroni logs in with. Run on the leader only.
\\set ON_ERROR_STOP on
BEGIN;
SELECT format('CREATE ROLE %I', :'replication_user') WHERE NOT EXISTS
    (SELECT FROM pg_roles WHERE rolname = :'replication_user') \\gexec
SELECT format('CREATE ROLE %I', :'rewind_user') WHERE NOT EXISTS
    (SELECT FROM pg_roles WHERE rolname = :'rewind_user') \\gexec
ALTER ROLE :"replication_user" WITH LOGIN REPLICATION PASSWORD :'replication_verifier';
ALTER ROLE :"rewind_user" WITH LOGIN NOREPLICATION PASSWORD :'rewind_verifier';
GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO :"rewind_user";
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO :"rewind_user";
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO :"rewind_user";
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO :"rewind_user";
COMMIT;
"""
# 't' when both roles are as USERS leaves them, or when this member is a replica (the leader's roles
# reach it by replication, and it could not write them).
USERS_MATCH = """\
-- Managed by vigil (roles/patroni): whether the roles Patroni logs in with are in place.
SELECT pg_is_in_recovery() OR (
    (SELECT count(*) FROM pg_authid WHERE rolname = :'replication_user' AND rolcanlogin AND rolreplication
        AND rolpassword = :'replication_verifier') = 1
    AND (SELECT count(*) FROM pg_authid WHERE rolname = :'rewind_user' AND rolcanlogin
        AND rolpassword = :'rewind_verifier') = 1
    AND has_function_privilege(:'rewind_user', 'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)',
                               'execute'));
"""
# psql with the variables both files use. The verifiers reach psql as \set lines on its standard input
# (printf is the shell's own), read from a root-only file: never on a command line.
FEED_USERS = r"""
{ printf '\\set replication_verifier %s\n\\set rewind_verifier %s\n' "'$(sed -n 1p "$4")'" "'$(sed -n 2p "$4")'"
  cat -- "$1"; } | runuser -u postgres -- psql -X -q -t -A -d postgres -v replication_user="$2" \
    -v rewind_user="$3" -f -
"""
RUN_USERS = "set -eu\n" + FEED_USERS
USERS_IN_PLACE = r"""
[ -r "$1" ] && [ -r "$4" ] || exit 1
answer=$(""" + FEED_USERS.strip() + r""" 2>/dev/null)
[ "$answer" = t ]
"""
VERIFIERS = "/etc/patroni/vigil-verifiers"

# Joined: the marker names this cluster and Patroni is enabled.
JOINED = r'[ "$(cat -- "$1" 2>/dev/null)" = "$2" ] && systemctl is-enabled --quiet "patroni@$3.service"'
# Hand PostgreSQL over to Patroni; $6 = "first" on the member whose data the cluster keeps.
# $1 instance, $2 data dir, $3 marker, $4 token, $5 etcd key of the cluster's system id, $6 first|other,
# $7 etcd endpoints, $8 seconds to wait, $9 Patroni's REST URL.
HAND_OVER = r"""
set -eu
instance=$1 data=$2 marker=$3 token=$4 key=$5 role=$6 endpoints=$7 wait=$8 rest=$9
version=${instance%%-*} cluster=${instance#*-}
etcd() { ETCDCTL_API=3 etcdctl --endpoints="$endpoints" __ETCD_TLS__ --command-timeout=5s "$@"; }
deadline=$(( $(date +%s) + wait ))
if [ "$role" = other ]; then
    until cluster_id=$(etcd get "$key" --print-value-only 2>/dev/null) && [ -n "$cluster_id" ]; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "patroni: the cluster's first member has not formed it within $wait s ($key is not in etcd)" >&2
            exit 1
        fi
        sleep 2
    done
    own_id=$(/usr/lib/postgresql/"$version"/bin/pg_controldata "$data" 2>/dev/null \
             | sed -n 's/^Database system identifier: *//p' || true)
    if [ -n "$own_id" ] && [ "$own_id" != "$cluster_id" ]; then
        # Any table of its own in any database: data someone may need, not the package's empty cluster.
        for database in $(runuser -u postgres -- psql -X -t -A -c "select datname from pg_database where not
                          datistemplate and datname <> 'postgres'" 2>/dev/null); do
            tables=$(runuser -u postgres -- psql -X -t -A -d "$database" -c "select count(*) from pg_class c join
                     pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p') and n.nspname not in
                     ('pg_catalog', 'information_schema')" 2>/dev/null || echo 0)
            if [ "${tables:-0}" != 0 ]; then
                echo "patroni: $data holds $tables tables in database $database, another system's than the" \
                     "cluster's; refusing to replace it (the host whose data the cluster keeps goes first in" \
                     "group db)" >&2
                exit 1
            fi
        done
    fi
fi
echo manual > "/etc/postgresql/$version/$cluster/start.conf"
systemctl disable --quiet --now "postgresql@$instance.service"
systemctl mask --quiet "postgresql@$instance.service"
if [ "$role" = other ] && [ -n "${own_id:-}" ] && [ "$own_id" != "$cluster_id" ]; then
    find "$data" -mindepth 1 -delete   # the package's own empty cluster: Patroni copies the leader here
fi
systemctl enable --quiet --now "patroni@$instance.service"
until curl -sf -o /dev/null --max-time 5 --cacert __CA__ "$rest/health"; do
    if [ "$(date +%s)" -ge "$deadline" ] || ! systemctl is-active --quiet "patroni@$instance.service"; then
        journalctl -u "patroni@$instance.service" -n 30 --no-pager >&2 || true
        echo "patroni: this member's PostgreSQL is not running under Patroni within $wait s" >&2
        exit 1
    fi
    sleep 2
done
printf '%s\n' "$token" > "$marker.new"
mv -f -- "$marker.new" "$marker"
""".replace("__ETCD_TLS__", ETCD_TLS).replace("__CA__", CA)
# HAND_OVER's own deadline covers its waits (the cluster formed, PostgreSQL up under Patroni); the SSH command
# gets this much more, for stopping the server before and the journal's tail after, so that a member that never
# comes up fails with HAND_OVER's message and journal rather than the connection's "did not finish".
HAND_OVER_MARGIN_SECONDS = 300
# The dynamic settings in etcd against the file's: 0 when every key of the file has its value there.
DYNAMIC_MATCHES = r"""
patronictl -c "$1" show-config 2>/dev/null | python3 -c '
import json, sys, yaml
def within(wanted, found):
    if isinstance(wanted, dict):
        return isinstance(found, dict) and all(within(v, found.get(k)) for k, v in wanted.items())
    return str(wanted).lower() == str(found).lower()
sys.exit(0 if within(json.load(open(sys.argv[1])), yaml.safe_load(sys.stdin) or {}) else 1)' "$2"
"""
APPLY_DYNAMIC = r'patronictl -c "$1" edit-config --apply "$2" --force >/dev/null'


def instance(vars) -> str:
    return f"{vars.integer('patroni_postgresql_version', minimum=10)}-" \
           f"{vars.string('patroni_postgresql_cluster', r'[a-z0-9_]+')}"


def dynamic_settings(vars, members: list[str]) -> dict:
    """Patroni's settings kept in etcd, the same for every member."""
    ttl, loop_wait, retry = (vars.integer(f"patroni_{key}", minimum=1) for key in ("ttl", "loop_wait", "retry_timeout"))
    if loop_wait + 2 * retry > ttl:
        raise ConfigError(f"{vars.where('patroni_ttl')}: Patroni needs loop_wait + 2 x retry_timeout <= ttl "
                          f"({loop_wait} + 2 x {retry} > {ttl})")
    synchronous = vars.string("patroni_synchronous_mode", r"auto|true|false")
    return {
        "ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry,
        "maximum_lag_on_failover": vars.integer("patroni_maximum_lag_on_failover", minimum=0),
        "synchronous_mode": len(members) >= 3 if synchronous == "auto" else synchronous == "true",
        "synchronous_mode_strict": False, "synchronous_node_count": 1, "check_timeline": True,
        "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": {
            "max_connections": vars.integer("patroni_max_connections", minimum=20), "wal_level": "replica",
            "hot_standby": "on", "wal_log_hints": "on", "max_wal_senders": 10, "max_replication_slots": 10,
            "wal_keep_size": "1GB"}},
    }


def tasks(role, vars):
    """The patroni role's operations for one host: nothing unless it is a member of the database cluster."""
    members = database_cluster(vars.inventory)
    if vars.host.name not in members:
        return []
    env, seed, name = vars.string("vigil_env"), vars.secret(SEED), vars.host.name
    secrets = ClusterSecrets.derive(seed, env)
    unit = instance(vars)
    version, cluster = unit.split("-", 1)
    data_dir, config_dir = f"/var/lib/postgresql/{version}/{cluster}", f"/etc/postgresql/{version}/{cluster}"
    scope = vars.string("patroni_scope", r"[a-z0-9][a-z0-9-]{0,62}")
    address, rest_port, etcd_port = vars.private_address(), PATRONI_REST_PORT, ETCD_CLIENT_PORT
    etcd_hosts = ",".join(f"{vars.address_of(member)}:{etcd_port}" for member in members)
    dynamic = dynamic_settings(vars, members)
    settings = render_template(role.template("patroni.yml.j2"), {
        "name": name, "env": env, "scope": scope, "address": address, "rest_port": rest_port, "ca": CA,
        "certificate": CERTIFICATE, "key": KEY, "rest_user": REST_USER, "rest_password": secrets.rest.value,
        "etcd_hosts": etcd_hosts, "dynamic": json.dumps(dynamic), "data_dir": data_dir, "version": version,
        "config_dir": config_dir, "instance": unit, "replication_user": REPLICATION_USER,
        "replication_password": secrets.replication.value, "rewind_user": REWIND_USER,
        "rewind_password": secrets.rewind.value})
    config = f"/etc/patroni/{unit}.yml"
    verifiers = "".join(scram_verifier(password.value, fixed_salt(seed, env, user)) + "\n"
                        for user, password in ((REPLICATION_USER, secrets.replication), (REWIND_USER, secrets.rewind)))
    users = (REPLICATION_USER, REWIND_USER, VERIFIERS)
    marker = f"/var/lib/postgresql/{version}/vigil-cluster-{cluster}"
    token = f"{env}/{scope}/" + ",".join(members)
    rest = f"https://{address}:{rest_port}"
    first = "first" if name == members[0] else "other"
    endpoints = ",".join(f"https://{vars.address_of(member)}:{etcd_port}" for member in members)
    reload = ("reload patroni",)
    join_wait = vars.integer("patroni_join_wait_seconds", minimum=10)
    return [
        AptPackages(["patroni", "python3-etcd", "curl"], name="Ensure Patroni and its etcd client are installed."),
        Directory("/etc/patroni", owner="root", group="postgres", mode="0750"),
        *member_tls_files(seed, env, name, address, TLS_DIR, "postgres", reload, "Patroni"),
        File(config, settings, group="postgres", mode="0640", secret=True, notify=reload,
             name=f"Ensure Patroni runs {name} as a member of cluster {scope}."),
        File(USERS_SQL, USERS, group="postgres", mode="0640"),
        File(USERS_CHECK, USERS_MATCH, group="postgres", mode="0640"),
        File(VERIFIERS, verifiers, mode="0600", secret=True,
             name="Ensure the replication and rewind roles' SCRAM verifiers are at hand, for root alone."),
        Guarded([script(RUN_USERS, USERS_SQL, *users)], unless=script(USERS_IN_PLACE, USERS_CHECK, *users),
                name="Ensure the roles Patroni replicates and rewinds with exist on the leader."),
        Guarded([script(HAND_OVER, unit, data_dir, marker, token, f"/vigil/{scope}/initialize", first, endpoints,
                        str(join_wait), rest, timeout=join_wait + HAND_OVER_MARGIN_SECONDS)],
                unless=script(JOINED, marker, token, unit),
                name=(f"Ensure Patroni runs PostgreSQL on {name}, " + (
                    "the cluster's first leader, with its data." if first == "first"
                    else "a copy of the leader's data once the cluster is formed."))),
        SystemdUnit(f"patroni@{unit}.service", enabled=True, running=True),
        File(DYNAMIC, json.dumps(dynamic, indent=2, sort_keys=True) + "\n", group="postgres", mode="0640"),
        Guarded([script(APPLY_DYNAMIC, config, DYNAMIC)], unless=script(DYNAMIC_MATCHES, config, DYNAMIC),
                name="Ensure the cluster's settings in etcd are these (synchronous mode, timings)."),
    ]


def handlers(role, vars):
    if vars.host.name not in database_cluster(vars.inventory):
        return {}
    # Patroni re-reads its file on SIGHUP and applies what changed to PostgreSQL; the leader stays leader.
    return {"reload patroni": ServiceAction(f"patroni@{instance(vars)}.service", "reload")}
