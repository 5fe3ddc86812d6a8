"""The haproxy role: HAProxy on each web host of an env with a database cluster, the app's way to the
leader (see defaults.yml). Nothing elsewhere, nor without a cluster."""

from __future__ import annotations

from vigil.core.commands import cmd
from vigil.core.operations import render_template
from vigil.core.topology import LEADER_PORT, PATRONI_REST_PORT, REPLICA_PORT, database_cluster
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.systemd import ServiceAction, SystemdUnit
from vigil.vault.db_cluster import SEED, cluster_ca

CONFIG = "/etc/haproxy/haproxy.cfg"
CA = "/etc/haproxy/tls/database-cluster-ca.crt"
DURATION = r"[0-9]+(ms|s|m|h)?"
# A configuration HAProxy refuses never replaces the running one.
CHECK = ("haproxy", "-c", "-q", "-f", CONFIG)


def runs_here(vars) -> bool:
    return bool(database_cluster(vars.inventory)) and "web" in vars.host.groups


def tasks(role, vars):
    """The haproxy role's operations for one host: nothing off the web hosts or without a cluster."""
    if not runs_here(vars):
        return []
    members = [{"name": name, "address": vars.address_of(name)} for name in database_cluster(vars.inventory)]
    config = render_template(role.template("haproxy.cfg.j2"), {
        "members": members, "leader_port": LEADER_PORT, "replica_port": REPLICA_PORT, "rest_port": PATRONI_REST_PORT,
        "ca": CA,
        "interval": vars.integer("haproxy_check_interval_seconds", minimum=1),
        "fast": vars.integer("haproxy_check_fast_interval_ms", minimum=100),
        "fall": vars.integer("haproxy_check_fall", minimum=1), "rise": vars.integer("haproxy_check_rise", minimum=1),
        "idle_timeout": vars.string("haproxy_database_idle_timeout", DURATION)})
    reload = ("reload haproxy",)
    return [
        AptPackages(["haproxy"], name="Ensure HAProxy is installed."),
        Directory("/etc/haproxy/tls", mode="0755"),
        File(CA, cluster_ca(vars.secret(SEED), vars.string("vigil_env")).certificate, notify=reload,
             name="Ensure HAProxy checks the database members against the cluster's CA."),
        File(CONFIG, config, notify=reload, name="Ensure HAProxy forwards the app's database connections to the "
                                                  f"leader (127.0.0.1:{LEADER_PORT})."),
        SystemdUnit("haproxy.service", enabled=True, running=True),
    ]


def handlers(role, vars):
    if not runs_here(vars):
        return {}
    return {"reload haproxy": ServiceAction("haproxy.service", "reload", check=cmd(*CHECK),
                                            name="Reload HAProxy once `haproxy -c` accepts its configuration.")}
