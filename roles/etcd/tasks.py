"""The etcd role: the database cluster's consensus store (see defaults.yml), Debian's etcd-server on each
host of group db when it has three or more.

Debian's package starts a one-member etcd on localhost when it is installed; that store knows nothing
of the cluster, so each member's data directory is emptied once and the members start together from
/etc/default/etcd (a static bootstrap: the initial member list is read only from an empty directory).
A marker beside the data directory records which cluster it was bootstrapped for: the next run leaves
it alone, and a changed member list starts a new store (Patroni writes its keys again). Each start
returns at once (etcd reports ready only with a quorum, which the other members bring); the last step
waits until every member is healthy.
"""

from __future__ import annotations

import hashlib

from vigil.core.commands import script
from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.core.topology import ETCD_CLIENT_PORT, ETCD_PEER_PORT, database_cluster
from vigil.operations.apt import AptPackages
from vigil.operations.files import File
from vigil.operations.guarded import Guarded
from vigil.operations.systemd import ServiceAction, SystemdUnit
from vigil.vault.db_cluster import SEED, member_tls_files

TLS_DIR = "/etc/etcd/tls"
CA, CERTIFICATE, KEY = f"{TLS_DIR}/ca.crt", f"{TLS_DIR}/member.crt", f"{TLS_DIR}/member.key"
DATA_DIR = "/var/lib/etcd/default"
MARKER = "/var/lib/etcd/vigil-cluster"
# Stop the member, empty its data directory, note the cluster it is for, start it without waiting.
BOOTSTRAP = r"""
set -eu
systemctl stop etcd.service
rm -rf -- "$1"
printf '%s\n' "$3" > "$2.new"
mv -f -- "$2.new" "$2"
systemctl start --no-block etcd.service
"""
BOOTSTRAPPED = r'[ "$(cat -- "$1" 2>/dev/null)" = "$2" ]'
# Every member healthy, asked over TLS with this member's certificate; WAIT polls it for up to $5 seconds.
HEALTHY = r"""
ETCDCTL_API=3 etcdctl --endpoints="$1" --cacert="$2" --cert="$3" --key="$4" endpoint health >/dev/null 2>&1
"""
WAIT = r"""
deadline=$(( $(date +%s) + $5 ))
until ETCDCTL_API=3 etcdctl --endpoints="$1" --cacert="$2" --cert="$3" --key="$4" endpoint health >/dev/null 2>&1
do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        ETCDCTL_API=3 etcdctl --endpoints="$1" --cacert="$2" --cert="$3" --key="$4" endpoint health >&2 || true
        echo "etcd: not every member healthy within $5 s (the others must be onboarded in the same run)" >&2
        exit 1
    fi
    sleep 2
done
"""
WAIT_SECONDS = 180


def members(vars) -> list[str]:
    """The inventory names of the cluster's members (group db, three or more); [] with fewer."""
    return database_cluster(vars.inventory)


def client_endpoints(vars, names: list[str]) -> str:
    return ",".join(f"https://{vars.address_of(name)}:{ETCD_CLIENT_PORT}" for name in names)


def tasks(role, vars):
    """The etcd role's operations for one host: nothing unless it is a member."""
    names = members(vars)
    if vars.host.name not in names:
        return []
    env = vars.string("vigil_env")
    seed = vars.secret(SEED)
    client_port, peer_port = ETCD_CLIENT_PORT, ETCD_PEER_PORT
    address = vars.private_address()
    initial_cluster = ",".join(f"{name}=https://{vars.address_of(name)}:{peer_port}" for name in names)
    token = f"vigil-{env}-{hashlib.sha256(initial_cluster.encode()).hexdigest()[:12]}"
    heartbeat, election = (vars.integer(f"etcd_{kind}_ms", minimum=1) for kind in ("heartbeat", "election"))
    if election < 5 * heartbeat:
        raise ConfigError(f"{vars.where('etcd_election_ms')}: {election} ms is under five heartbeats "
                          f"({heartbeat} ms each): members would call elections on a slow heartbeat")
    settings = render_template(role.template("etcd.default.j2"), {
        "name": vars.host.name, "env": env, "data_dir": DATA_DIR, "address": address, "client_port": client_port,
        "peer_port": peer_port, "initial_cluster": initial_cluster, "token": token, "certificate": CERTIFICATE,
        "key": KEY, "ca": CA, "compaction_hours": vars.integer("etcd_compaction_hours", minimum=1),
        "heartbeat_ms": heartbeat, "election_ms": election})
    endpoints = client_endpoints(vars, names)
    tls = (CA, CERTIFICATE, KEY)
    restart = ("restart etcd",)
    return [
        AptPackages(["etcd-server", "etcd-client"], name="Ensure etcd and etcdctl are installed."),
        *member_tls_files(seed, env, vars.host.name, address, TLS_DIR, "etcd", restart, "etcd"),
        File("/etc/default/etcd", settings, notify=restart,
             name=f"Ensure etcd is member {vars.host.name} of the cluster, over TLS."),
        Guarded([script(BOOTSTRAP, DATA_DIR, MARKER, token)], unless=script(BOOTSTRAPPED, MARKER, token),
                name="Ensure this member's store was started for this cluster (emptied once, then left alone)."),
        SystemdUnit("etcd.service", enabled=True, running=True),
        Guarded([script(WAIT, endpoints, *tls, str(WAIT_SECONDS))], unless=script(HEALTHY, endpoints, *tls),
                name="Ensure every member of the cluster is healthy."),
    ]


def handlers(role, vars):
    if vars.host.name not in members(vars):
        return {}
    # A settings change restarts a member that runs (try-restart): a member the bootstrap just started
    # is left to come up with the others, as its start waits for a quorum.
    return {"restart etcd": ServiceAction("etcd.service", "try-restart")}
