"""Metrics vigil writes itself, as node-exporter textfiles: what Prometheus cannot see from outside."""

# Debian's node exporter reads *.prom files here (its default; roles/exporters creates it).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
# A web host's maintenance mode: roles/monitoring's Alertmanager mutes the host's web alerts while it is 1.
MAINTENANCE_METRIC = f"{TEXTFILE_DIR}/vigil_maintenance.prom"


def maintenance_metric(on: bool) -> str:
    """The maintenance-mode textfile's content: 1 while incident.maintenance has the site answer 503."""
    return ("# HELP vigil_maintenance_mode 1 while incident.maintenance has the site answer 503.\n"
            f"# TYPE vigil_maintenance_mode gauge\nvigil_maintenance_mode {int(on)}\n")
