"""The exporters role: what the monitor host's Prometheus scrapes on each server.

Every host gets Debian's node exporter (its systemd collector gives every unit's state; its textfile
directory the metrics vigil writes itself); database hosts get the postgres exporter, logging in over
the local socket as a `prometheus` role in pg_monitor; web hosts get mtail, counting nginx's requests
by status for the API's error rate. Debian's packages start their daemon as soon as they are
installed, so each one's /etc/default file is written first, and the firewall (which runs earlier in
the onboarding) already keeps the ports closed to all but the monitor host.
Nothing is installed where the inventory has no monitor host. On every host, the health probe that
watched each host from itself before (vigil-probe) is retired: one alerting path, from outside.
"""

from vigil.core.commands import cmd, script
from vigil.core.topology import monitor_host
from vigil.monitor.textfile import MAINTENANCE_METRIC, TEXTFILE_DIR, maintenance_metric
from vigil.operations.apt import AptPackages
from vigil.operations.files import Absent, Directory, File
from vigil.operations.guarded import Guarded
from vigil.operations.systemd import DaemonReload, ServiceAction, SystemdUnit

NODE_EXPORTER = "prometheus-node-exporter"
POSTGRES_EXPORTER = "prometheus-postgres-exporter"
MTAIL = "mtail"
# The postgres exporter's database role: pg_monitor reads statistics and settings, nothing of the app's data.
MONITOR_ROLE = "prometheus"
# Peer authentication over the local socket: the exporter runs as the system user `prometheus`.
DATA_SOURCE = f"user={MONITOR_ROLE} host=/run/postgresql dbname=postgres sslmode=disable"
ROLE_IS_MONITOR = ('test "$(psql -X -q -t -A -c "select pg_has_role(\'prometheus\', \'pg_monitor\', \'member\') '
                   'from pg_roles where rolname = \'prometheus\'")" = t')
CREATE_ROLE = ("do $$ begin if not exists (select from pg_roles where rolname = 'prometheus') then "
               "create role prometheus login; end if; end $$; grant pg_monitor to prometheus;")


def default_file(path: str, lines: dict[str, str], restart: str, what: str, owner: str = "root",
                 mode: str = "0644") -> File:
    """A Debian /etc/default file of KEY="value" lines for a daemon; its change restarts the daemon."""
    body = "".join(f'{key}="{value}"\n' for key, value in lines.items())
    return File(path, f"# Managed by vigil (roles/exporters).\n{body}", owner=owner, group=owner, mode=mode,
                notify=(restart,), name=f"Ensure {path} sets {what}.")


def node_exporter(vars) -> list:
    port = vars.integer("exporters_node_port", minimum=1)
    return [
        default_file(f"/etc/default/{NODE_EXPORTER}", {"ARGS": f"--web.listen-address=:{port}"
                                                     f" --collector.textfile.directory={TEXTFILE_DIR}"},
                     f"restart {NODE_EXPORTER}", f"the node exporter's port, {port}"),
        AptPackages([NODE_EXPORTER], name="Ensure the node exporter is installed."),
        SystemdUnit(f"{NODE_EXPORTER}.service", enabled=True, running=True),
    ]


def postgres_exporter(vars) -> list:
    port = vars.integer("exporters_postgres_port", minimum=1)
    return [
        # Owned as the package's postinst leaves it (a DSN may carry a password): the node exporter, installed
        # just before, made the user.
        default_file(f"/etc/default/{POSTGRES_EXPORTER}",
                     {"DATA_SOURCE_NAME": DATA_SOURCE, "ARGS": f"--web.listen-address=:{port}"},
                     f"restart {POSTGRES_EXPORTER}", f"the postgres exporter's login and port, {port}",
                     owner="prometheus", mode="0640"),
        Guarded([cmd("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", CREATE_ROLE, as_user="postgres")],
                unless=script(ROLE_IS_MONITOR, as_user="postgres"),
                name=f"Ensure PostgreSQL role {MONITOR_ROLE} exists and is in pg_monitor (statistics only)."),
        AptPackages([POSTGRES_EXPORTER], name="Ensure the postgres exporter is installed."),
        SystemdUnit(f"{POSTGRES_EXPORTER}.service", enabled=True, running=True),
    ]


def mtail(role, vars) -> list:
    port = vars.integer("exporters_mtail_port", minimum=1)
    log = vars.path("exporters_nginx_access_log")
    return [
        Directory("/etc/mtail", mode="0755"),
        File("/etc/mtail/nginx.mtail", role.file("nginx.mtail"), notify=(f"restart {MTAIL}",),
             name="Ensure mtail counts nginx's requests by status."),
        # Debian's unit reads LOGS, HOST and PORT from here, and starts nothing while LOGS is empty.
        default_file(f"/etc/default/{MTAIL}", {"LOGS": log, "HOST": "", "PORT": str(port)},
                     f"restart {MTAIL}", f"the access log mtail reads and its port, {port}"),
        AptPackages([MTAIL], name="Ensure mtail is installed."),
        SystemdUnit(f"{MTAIL}.service", enabled=True, running=True),
        # Created at 0 and then left to incident.maintenance, which writes it with its flag file.
        File(MAINTENANCE_METRIC, maintenance_metric(False), replace=False,
             name="Ensure the maintenance-mode metric exists (incident.maintenance sets it)."),
    ]


# The health probe of earlier releases (roles/monitor): its timer, program, settings, webhook URL and
# units. Its state directory, /var/lib/vigil/probe (its old events), and its user are left to the operator.
RETIRED_PROBE_TIMER = "vigil-probe.timer"
RETIRED_PROBE_FILES = ("/usr/local/sbin/vigil-probe", "/etc/vigil/probe.json", "/etc/vigil/probe.env",
                       "/etc/systemd/system/vigil-probe.service", "/etc/systemd/system/vigil-probe.timer")


def retired_probe() -> list:
    return [
        SystemdUnit(RETIRED_PROBE_TIMER, enabled=False, running=False,
                    name="Ensure the retired health probe (vigil-probe) no longer runs."),
        # Only a unit file's removal needs systemd to forget it.
        *(Absent(path, notify=("reload systemd",) if path.startswith("/etc/systemd/") else ())
          for path in RETIRED_PROBE_FILES),
    ]


def tasks(role, vars):
    """The exporters role's operations for one host, in order."""
    operations = retired_probe()
    if vars.inventory is None or monitor_host(vars.inventory) is None:
        return operations
    operations += node_exporter(vars)
    if "db" in vars.host.groups:
        operations += postgres_exporter(vars)
    if "web" in vars.host.groups:
        operations += mtail(role, vars)
    return operations


def handlers(role, vars):
    handlers = {"reload systemd": DaemonReload()}
    if vars.inventory is not None and monitor_host(vars.inventory) is not None:
        handlers |= {f"restart {unit}": ServiceAction(f"{unit}.service", "restart")
                     for unit in (NODE_EXPORTER, POSTGRES_EXPORTER, MTAIL)}
    return handlers
