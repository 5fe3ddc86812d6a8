"""The analytics role: visitor figures from each web host's own nginx, with no third party and no full client
address anywhere (see defaults.yml). nginx writes a second access log whose addresses are cut to their network
and whose URLs carry no query string; GoAccess (Debian's) turns it into an HTML and a JSON report, daily by a
timer and on demand (`invoke monitor.analytics`, vigil/monitor/analytics.py)."""

import ipaddress

from vigil.core.commands import cmd
from vigil.core.operations import render_template
from vigil.core.topology import monitor_host
from vigil.monitor.analytics import LOG, REPORT_SCRIPT, STATE, STATE_DIRECTORY, UNIT
from vigil.operations.apt import AptPackages
from vigil.operations.files import Absent, File
from vigil.operations.systemd import DaemonReload, ServiceAction, SystemdUnit

NGINX_SNIPPET = "/etc/nginx/conf.d/vigil-analytics.conf"
CONFIG = "/etc/goaccess/vigil-analytics.conf"  # beside the package's own goaccess.conf
# systemd's calendar expressions: digits, letters, and * - : , / . ~ and spaces.
SCHEDULE = r"[A-Za-z0-9*:,/.~ -]{1,80}"
TITLE = r"[^\n\"\\{}%]{1,80}"


def tasks(role, vars):
    if not vars.boolean("analytics_enabled"):
        return [
            Absent(NGINX_SNIPPET, notify=("reload nginx",), name="Ensure nginx writes no analytics log."),
            SystemdUnit(f"{UNIT}.timer", enabled=False, running=False),
        ]
    keep = vars.integer("analytics_keep_reports", minimum=1)
    monitor = monitor_host(vars.inventory) if vars.inventory is not None else None
    # Checked as an address: it is written into nginx's configuration.
    unlogged = [str(ipaddress.ip_address(vars.address_of(monitor.name)))] if monitor else []
    values = {"unlogged": unlogged, "log": LOG, "config": CONFIG, "directory": STATE_DIRECTORY, "keep": keep,
              "title": vars.string("analytics_title", TITLE), "script": REPORT_SCRIPT, "state": STATE,
              "schedule": vars.string("analytics_schedule", SCHEDULE)}
    reload_systemd = ("reload systemd",)
    return [
        AptPackages(["goaccess"], name="Ensure GoAccess is installed."),
        File(CONFIG, render_template(role.template("goaccess.conf.j2"), values),
             name="Ensure GoAccess reads the analytics log, anonymising addresses again."),
        File(REPORT_SCRIPT, render_template(role.template("vigil-analytics-report.j2"), values), mode="0755",
             name=f"Ensure {REPORT_SCRIPT} builds the report, keeping {keep} daily copies."),
        File(f"/etc/systemd/system/{UNIT}.service", render_template(role.template("vigil-analytics.service.j2"),
                                                                    values),
             notify=reload_systemd, name="Ensure the report's unit reads the logs and writes its directory only."),
        File(f"/etc/systemd/system/{UNIT}.timer", render_template(role.template("vigil-analytics.timer.j2"), values),
             notify=reload_systemd, name="Ensure the report is built daily."),
        SystemdUnit(f"{UNIT}.timer", enabled=True, running=True),
        File(NGINX_SNIPPET, render_template(role.template("nginx-analytics.conf.j2"), values),
             notify=("reload nginx",), name="Ensure nginx writes the analytics log: no full address, no query."),
    ]


def handlers(role, vars):
    # The nginx role's handler too, for a run of this role alone (secrets.rotate, --only-roles).
    return {"reload nginx": ServiceAction("nginx.service", "reload", check=cmd("nginx", "-t", "-q"),
                                          name="Reload nginx after `nginx -t` accepts the configuration."),
            "reload systemd": DaemonReload()}
