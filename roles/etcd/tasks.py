"""The etcd role: the database cluster's consensus store (see defaults.yml), Debian's etcd-server on each
host of etcd_group when it has three or more.

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
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.guarded import Guarded
from vigil.operations.systemd import ServiceAction, SystemdUnit
from vigil.vault.derived_ca import derive_ca, derive_certificate

SEED = "DB_CLUSTER_TLS_SEED"
TLS_DIR = "/etc/etcd/tls"
CA, CERTIFICATE, KEY = f"{TLS_DIR}/ca.crt", f"{TLS_DIR}/member.crt", f"{TLS_DIR}/member.key"
DATA_DIR = "/var/lib/etcd/default"
MARKER = "/var/lib/etcd/vigil-cluster"
# The most members a static cluster here may have, and why an even count is refused.
MOST_MEMBERS = 7
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
    """The inventory names of the cluster's members; [] where etcd_group has fewer than three hosts."""
    group = vars.string("etcd_group", r"[A-Za-z0-9_-]+")
    names = list((vars.inventory.groups if vars.inventory is not None else {}).get(group) or [])
    if len(names) < 3:
        return []
    if len(names) % 2 == 0 or len(names) > MOST_MEMBERS:
        raise ConfigError(f"{vars.where('etcd_group')}: group {group!r} has {len(names)} hosts; the database "
                          f"cluster needs an odd number from 3 to {MOST_MEMBERS} (an even one survives no more "
                          "failures than one fewer, and splits its votes)")
    return names


def client_endpoints(vars, names: list[str]) -> str:
    port = vars.integer("etcd_client_port", minimum=1)
    return ",".join(f"https://{vars.address_of(name)}:{port}" for name in names)


def tasks(role, vars):
    """The etcd role's operations for one host: nothing unless it is a member."""
    names = members(vars)
    if vars.host.name not in names:
        return []
    env = vars.string("vigil_env")
    seed = vars.secret(SEED)
    client_port, peer_port = (vars.integer(f"etcd_{kind}_port", minimum=1) for kind in ("client", "peer"))
    address = vars.private_address()
    initial_cluster = ",".join(f"{name}=https://{vars.address_of(name)}:{peer_port}" for name in names)
    token = f"vigil-{env}-{hashlib.sha256(initial_cluster.encode()).hexdigest()[:12]}"
    heartbeat, election = (vars.integer(f"etcd_{kind}_ms", minimum=1) for kind in ("heartbeat", "election"))
    if election < 5 * heartbeat:
        raise ConfigError(f"{vars.where('etcd_election_ms')}: {election} ms is under five heartbeats "
                          f"({heartbeat} ms each): members would call elections on a slow heartbeat")
    issued = derive_certificate(seed, env, vars.host.name, [address, "127.0.0.1"])
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
        Directory(TLS_DIR, owner="root", group="etcd", mode="0750"),
        File(CA, derive_ca(seed, env).certificate, group="etcd", mode="0640", notify=restart,
             name="Ensure the database cluster's CA is what etcd trusts."),
        File(CERTIFICATE, issued.certificate, group="etcd", mode="0640", notify=restart,
             name=f"Ensure {vars.host.name}'s etcd certificate is in place."),
        File(KEY, issued.key.value, group="etcd", mode="0640", secret=True, notify=restart,
             name=f"Ensure {vars.host.name}'s etcd key is in place, for etcd alone."),
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
