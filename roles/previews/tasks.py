"""The previews role: what a preview host needs before `preview.up` puts a branch on it. Its directories
(the previews' files, their env files and their records), the unit templates each preview is an instance
of (capped in memory and CPU), the http-level rate limit their sites share, and in the sandbox a wildcard
certificate for *.<previews_domain> from the sandbox CA (elsewhere: docs/previews.md, certbot).

Where previews_domain is "" (the default) the role installs nothing. It runs with the web hosts' roles
and picks its hosts itself: group `preview` where the inventory has one (each must be a web host too),
else every web host.
"""

from vigil.core.commands import cmd
from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.core.roles import load_role
from vigil.core.topology import PREVIEW_GROUP, preview_hosts
from vigil.deploy.build import app_sources
from vigil.deploy.settings import task_command
from vigil.operations.files import Directory, File
from vigil.operations.systemd import DaemonReload, ServiceAction
from vigil.previews.model import RECORDS, SERVICES, preview_settings
from vigil.sandbox import ca as sandbox_ca

CERTIFICATE, KEY = "/etc/ssl/vigil/previews.crt", "/etc/ssl/vigil/previews.key"


def tasks(role, vars):
    """The previews role's operations for one host, in order."""
    chosen = preview_settings(vars)
    inventory = vars.inventory
    if not chosen["domain"] or inventory is None or vars.host.name not in {h.name for h in preview_hosts(inventory)}:
        return []
    if PREVIEW_GROUP in inventory.groups and "web" not in vars.host.groups:
        raise ConfigError(f"{vars.host.name}: in group {PREVIEW_GROUP} but not in web: a preview host runs the app's "
                          "services, so it must be a web host too")
    ports_end = chosen["port_base"] + 2 * chosen["max_per_host"]
    if ports_end > 65536:
        raise ConfigError(f"{vars.where('previews_port_base')}: {chosen['max_per_host']} previews from port "
                          f"{chosen['port_base']} would pass 65535")
    app_role = load_role("app")
    services = app_sources(vars["app_services"], vars.where("app_services"))
    entries, reload_systemd, reload_nginx = vars["app_entry"], ("reload systemd",), ("reload nginx",)
    user, root, config_dir = chosen["user"], chosen["root"], chosen["config_dir"]
    operations = [
        Directory(root, owner="root", group=user, mode="0750", name=f"Ensure {root} holds the previews' files."),
        Directory(config_dir, owner="root", group=user, mode="0750",
                  name=f"Ensure {config_dir} holds the previews' env files."),
        Directory(RECORDS, owner="root", group="root", mode="0700", name=f"Ensure {RECORDS} holds their records."),
    ]
    for service in SERVICES:
        entry = entries.get(services[service].kind)
        operations.append(File(f"/etc/systemd/system/{chosen['units'][service]}", render_template(
            role.template("preview.service.j2"), {
                "app": chosen["app"], "service": service, "user": user, "root": root, "config_dir": config_dir,
                "entry": entry, "stop_timeout": vars.integer("app_stop_timeout", minimum=1),
                "memory_max": chosen["memory_max"], "cpu_quota": chosen["cpu_quota"],
                "hardening": app_role.template("hardening.j2")}),
            notify=reload_systemd, name=f"Ensure each preview's {service} unit is capped."))
    migrate = (vars["app_release_tasks"].get("backend") or {}).get("migrate")
    if migrate:
        operations.append(File(f"/etc/systemd/system/{chosen['migrate_unit']}", render_template(
            app_role.template("task.j2"), {
                "app": chosen["app"], "service": "preview backend", "task": "migrate", "user": user,
                "working_directory": f"{root}/%i/backend/current", "env_file": f"{config_dir}/%i/backend.env",
                "command": task_command(vars, "backend", "migrate", migrate),
                "timeout": vars.integer("app_release_task_timeout", minimum=1),
                "hardening": app_role.template("hardening.j2")}),
            notify=reload_systemd, name="Ensure each preview's migrations run against its own database."))
    operations.append(File(f"/etc/nginx/conf.d/{chosen['app']}-previews.conf", render_template(
        role.template("previews.conf.j2"), {"zone": chosen["zone"], "rate": chosen["api_rate"]}),
        notify=reload_nginx, name="Ensure the previews' sites share their API's rate limit."))
    if vars.string("nginx_tls", "local-ca|certbot") == "local-ca":
        issued = sandbox_ca.host_certificate(f"{vars.host.name}-previews", [f"*.{chosen['domain']}"])
        operations += [
            File(CERTIFICATE, issued.chain, notify=reload_nginx,
                 name=f"Ensure the certificate for *.{chosen['domain']} (sandbox CA) is installed."),
            File(KEY, issued.key, mode="0600", secret=True, notify=reload_nginx,
                 name="Ensure its private key is installed."),
        ]
    return operations


def handlers(role, vars):
    return {"reload systemd": DaemonReload(),
            "reload nginx": ServiceAction("nginx.service", "reload", check=cmd("nginx", "-t", "-q"),
                                          name="Reload nginx after `nginx -t` accepts the configuration.")}
