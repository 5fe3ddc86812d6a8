"""The errors role: Bugsink, the env's error tracker, on the monitor host (see defaults.yml).

Bugsink comes from PyPI into a virtualenv of its own, every package pinned by hash
(files/requirements.txt): a new pin installs beside the running one and is switched to only once
whole. Its settings (templates/bugsink_conf.py.j2), its two services (gunicorn on loopback, snappea
digesting what it takes in) and nginx in front over HTTPS. vigil then makes what the app and vigil's
screens need, pinned (files/vigil-bugsink-setup.py): the admin account, the team, the project with
the id and DSN key vigil derives from BUGSINK_SECRET_KEY (vigil/vault/error_tracking.py), and a
read-only API token. Every step reads the host first, so a second run changes nothing.
"""

import hashlib
import json

from vigil.core.commands import cmd, script
from vigil.core.operations import render_template
from vigil.core.roles import load_role
from vigil.core.topology import monitor_host
from vigil.deploy.certificates import ACME_ROOT, site_certificate
from vigil.operations.apt import AptPackages
from vigil.operations.files import Absent, Directory, File, Symlink
from vigil.operations.guarded import Guarded
from vigil.operations.systemd import DaemonReload, ServiceAction, SystemdUnit
from vigil.operations.users import User
from vigil.vault.error_tracking import PROJECT_ID, SECRET_KEY, api_token, errors_site, project_key

USER = "bugsink"
BASE_DIR = "/var/lib/bugsink"
CONFIG_DIR = "/etc/bugsink"
INSTALL_DIR = "/opt/bugsink"
VENV = f"{INSTALL_DIR}/venv"
REQUIREMENTS = f"{INSTALL_DIR}/requirements.txt"
SETUP_FILE = f"{CONFIG_DIR}/vigil-setup.json"
SETUP_SCRIPT = "/usr/local/lib/vigil/bugsink-setup.py"
# bugsink-manage as the bugsink user, in the directory of its settings: for vigil, and for a person.
MANAGE = "/usr/local/sbin/vigil-bugsink-manage"
SITE = "vigil-errors"
SERVICES = ("bugsink-web", "bugsink-snappea")
TOKEN_DESCRIPTION = "vigil (read-only: incident.status)"

MANAGE_WRAPPER = f"""#!/bin/sh
# Managed by vigil (roles/errors): Bugsink's manage.py as its own user, with its settings.
set -eu
cd {CONFIG_DIR}
exec runuser -u {USER} -- {VENV}/bin/bugsink-manage "$@"
"""
# The pinned packages into venv-<digest of the pins>, then the venv link switched to it: a failed
# install leaves the running one untouched. Only wheels, each checked against its pinned hash.
INSTALL = r"""
set -eu
target="$2/venv-$1"
rm -rf -- "$target"
python3 -m venv -- "$target"
"$target/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --require-hashes \
    --only-binary=:all: --no-deps -r "$3"
ln -sfn -- "venv-$1" "$2/venv.new"
mv -T -- "$2/venv.new" "$2/venv"
for old in "$2"/venv-*; do
    [ "$old" = "$target" ] || rm -rf -- "$old"
done
"""
INSTALLED = r'[ "$(readlink -- "$2/venv")" = "venv-$1" ] && [ -x "$2/venv-$1/bin/gunicorn" ]'
SETUP = f"""VIGIL_BUGSINK_SETUP="$1" exec {MANAGE} shell --verbosity=0 \
--command='exec(open("{SETUP_SCRIPT}").read())'"""


def runs_here(vars) -> bool:
    """Whether this host is the monitor host and Bugsink is on."""
    monitor = monitor_host(vars.inventory) if vars.inventory is not None else None
    return monitor is not None and monitor.name == vars.host.name and vars.boolean("errors_enabled")


def tasks(role, vars):
    """The errors role's operations for the monitor host, in order; nothing on other hosts."""
    if not runs_here(vars):
        return []
    site = errors_site(vars.inventory)
    secret_key = vars.secret(SECRET_KEY).value
    team = vars.string("errors_team", r"[^\n\"\\]{1,100}")
    requirements = role.file("requirements.txt")
    pins = hashlib.sha256(requirements).hexdigest()[:16]
    values = {"user": USER, "base_dir": BASE_DIR, "config_dir": CONFIG_DIR, "venv": VENV,
              "port": vars.integer("errors_port", minimum=1025), "server_name": site.server_name,
              "base_url": site.origin,
              "workers": vars.integer("errors_web_workers", minimum=1),
              "snappea_workers": vars.integer("errors_snappea_workers", minimum=1),
              "memory_max": vars.string("errors_memory_max", r"[0-9]+[KMG]?"),
              "max_event_age_days": vars.integer("errors_max_event_age_days", minimum=1),
              "title": f"{team} errors ({vars.string('vigil_env')})"}
    values["hardening"] = render_template(role.template("hardening.j2"), values)
    setup = {"admin_email": vars.string("errors_admin_email", r"[^@\s]+@[^@\s]+"),
             "admin_password": vars.secret("BUGSINK_ADMIN_PASSWORD").value,
             "team": team,
             "project": vars.string("errors_project", r"[a-z0-9][a-z0-9-]{0,49}"),
             "project_slug": vars.string("errors_project"), "project_id": PROJECT_ID,
             "project_key": project_key(secret_key), "token": api_token(secret_key),
             "token_description": TOKEN_DESCRIPTION}
    restart = tuple(f"restart {service}" for service in SERVICES)
    operations = [
        AptPackages(["python3-venv", "nginx", "ssl-cert"], name="Ensure Python's venv and nginx are installed."),
        User(USER, shell="/usr/sbin/nologin", home=BASE_DIR, system=True, name=f"Ensure the {USER} user exists."),
        Directory(BASE_DIR, owner=USER, group=USER, mode="0750", name=f"Ensure {BASE_DIR} is Bugsink's alone."),
        Directory(CONFIG_DIR, owner="root", group=USER, mode="0750"),
        Directory(INSTALL_DIR, mode="0755"),
        Directory(SETUP_SCRIPT.rsplit("/", 1)[0], mode="0755"),
        # The units first: their daemon-reload is then the first handler, before any restart.
        *[File(f"/etc/systemd/system/{service}.service",
               render_template(role.template(f"{service}.service.j2"), values),
               notify=("reload systemd", f"restart {service}"), name=f"Ensure the {service} unit is managed.")
          for service in SERVICES],
        File(REQUIREMENTS, requirements, name="Ensure Bugsink's pinned requirements are in place."),
        Guarded([script(INSTALL, pins, INSTALL_DIR, REQUIREMENTS)], unless=script(INSTALLED, pins, INSTALL_DIR),
                notify=restart, name="Ensure Bugsink's pinned packages are installed (hashes checked)."),
        File(f"{CONFIG_DIR}/bugsink_conf.py", render_template(role.template("bugsink_conf.py.j2"),
                                                                   {**values, "secret_key": secret_key}),
             group=USER, mode="0640", secret=True, notify=restart, name="Ensure Bugsink's settings are managed."),
        File(MANAGE, MANAGE_WRAPPER, mode="0755", name=f"Ensure {MANAGE} runs Bugsink's manage.py as {USER}."),
        Guarded([cmd(MANAGE, "migrate", "--noinput", "--verbosity=0"),
                 cmd(MANAGE, "migrate", "snappea", "--database=snappea", "--noinput", "--verbosity=0")],
                unless=cmd(MANAGE, "check_migrations"), notify=restart,
                name="Ensure Bugsink's databases are migrated."),
        File(SETUP_FILE, json.dumps(setup, indent=2, sort_keys=True) + "\n", group=USER, mode="0640", secret=True,
             name="Ensure the account, project and token vigil pins are written down for Bugsink alone."),
        File(SETUP_SCRIPT, role.file("vigil-bugsink-setup.py"), mode="0644"),
        Guarded([script(SETUP, "apply")], unless=script(SETUP, "check"),
                name="Ensure the admin, the project (its DSN key) and vigil's read-only token exist."),
        *[SystemdUnit(f"{service}.service", enabled=True, running=True) for service in SERVICES],
    ]
    return operations + site_operations(role, vars, site.server_name, values["port"])


def site_operations(role, vars, server_name: str, port: int) -> list:
    """nginx serving Bugsink over HTTPS, with a certificate got as the monitor host's nginx vars say."""
    nginx = vars.inventory.vars_for(vars.inventory.hosts[vars.host.name], [load_role("nginx")])
    certificate_operations, certificate, key = site_certificate(nginx, server_name, "error tracker's site")
    site = render_template(role.template("nginx-site.conf.j2"), {
        "server_name": server_name, "acme_root": ACME_ROOT, "certificate": certificate, "certificate_key": key,
        "redirect_host": f"[{server_name}]" if ":" in server_name else server_name, "port": port,
        "hsts_max_age": nginx.integer("nginx_hsts_max_age", minimum=0)})
    reload = ("reload nginx",)
    return [
        *certificate_operations,
        File(f"/etc/nginx/sites-available/{SITE}.conf", site, notify=reload,
             name="Ensure nginx serves Bugsink over HTTPS."),
        Symlink(f"/etc/nginx/sites-enabled/{SITE}.conf", f"/etc/nginx/sites-available/{SITE}.conf", notify=reload,
                name="Ensure Bugsink's site is enabled."),
        Absent("/etc/nginx/sites-enabled/default", notify=reload, name="Ensure Debian's default site is disabled."),
        SystemdUnit("nginx.service", enabled=True, running=True),
    ]


def handlers(role, vars):
    if not runs_here(vars):
        return {}
    return {"reload systemd": DaemonReload(),
            **{f"restart {service}": ServiceAction(f"{service}.service", "restart") for service in SERVICES},
            "reload nginx": ServiceAction("nginx.service", "reload", check=cmd("nginx", "-t", "-q"),
                                          name="Reload nginx after `nginx -t` accepts the configuration.")}
