"""The app role: where each service's releases live on a web host, and the units that run them.

Deploys unpack releases as the deploy user; the app's runtime user reads them
through its group and writes nothing there. Each service gets a unit template
run once per color (blue, green) on that color's port, and one per release
task (migrations), all started through /usr/local/sbin/vigil-app-unit.
No color's unit is enabled: one unit a boot starts starts the color each
service's nginx upstream serves, so a deploy or a rollback never moves a boot
link (nor reloads systemd for one).
"""


from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.deploy.build import app_sources
from vigil.deploy.certificates import system_trust
from vigil.deploy.settings import SERVED_COLORS_HELPER, task_command, upstream_name, upstreams_file
from vigil.operations.files import Absent, Directory, File
from vigil.operations.systemd import DaemonReload, SystemdUnit
from vigil.vault.error_tracking import ca_pem, errors_site

COLORS = ("blue", "green")
RELEASE_ENV_HELPER = "/usr/local/sbin/vigil-release-env"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# The CA of the env's error tracker where it is a private one (the sandbox's), trusted system-wide so
# the app's SDKs reach it over verified TLS.
ERROR_TRACKER_CA = "/usr/local/share/ca-certificates/vigil-error-tracker-ca.crt"
ERROR_TRACKER_CA_INSTALLED = "/var/lib/vigil/error-tracker-ca.crt"


def error_tracker_trust(vars) -> list:
    """Trust the env's error tracker's private CA (roles/errors with nginx_tls: local-ca), if it has one."""
    site = errors_site(vars.inventory)
    pem = ca_pem(site) if site is not None else None
    if pem is None:
        return []
    return system_trust(pem, ERROR_TRACKER_CA, ERROR_TRACKER_CA_INSTALLED, "the error tracker's CA")


def tasks(role, vars):
    """The app role's operations for one host, in order."""
    root, config_dir = vars.path("app_root"), vars.path("app_config_dir")
    deploy, app = vars.user("app_owner"), vars.user("app_group")
    name = vars.string("app_name", r"[a-z][a-z0-9-]{0,30}")
    services = app_sources(vars["app_services"], vars.where("app_services"))
    entries = vars["app_entry"]
    release_tasks = vars["app_release_tasks"]
    if not isinstance(release_tasks, dict):
        raise ConfigError(f"{vars.where('app_release_tasks')}: expected service -> {{task: [command...]}}")
    env = vars.string("vigil_env", r"[a-z][a-z0-9-]{0,40}")
    reload = ("reload systemd",)
    operations = [
        Directory(root, mode="0755", name=f"Ensure {root} exists."),
        # As secrets.push makes it: the app reads its env files, nobody else lists them.
        Directory(
            config_dir, owner="root", group=app, mode="0750", name=f"Ensure {config_dir} is readable by the app only."
        ),
    ]
    operations += error_tracker_trust(vars)
    operations.append(File(RELEASE_ENV_HELPER, render_template(role.template("vigil-release-env.j2"), {
        "services": list(services), "root": root, "run_dir": f"/run/{name}"}), mode="0755",
        name=f"Ensure {RELEASE_ENV_HELPER} writes each color's release id as root."))
    for service, source in services.items():
        ports = color_ports(vars, service)
        entry = entries.get(source.kind) if isinstance(entries, dict) else None
        if not isinstance(entry, str) or not entry or entry.startswith(("/", "-")) or ".." in entry:
            raise ConfigError(f"{vars.where('app_entry')}: no relative entry point for kind {source.kind!r}")
        for path in (f"{root}/{service}", f"{root}/{service}/releases", f"{root}/{service}/colors"):
            operations.append(Directory(path, owner=deploy, group=app, mode="0750",
                                        name=f"Ensure {path} belongs to {deploy}, readable by {app}."))
        internal_api = f"http://127.0.0.1:{vars.integer('nginx_internal_api_port', minimum=1025)}/api"
        for color in COLORS:
            # VIGIL_ENV: the environment each error is filed under (the Sentry SDKs' `environment`). Node
            # trusts the system's CAs too: the error tracker's may be one the env adds (ERROR_TRACKER_CA).
            operations.append(File(f"{config_dir}/{service}-{color}.env",
                                   f"PORT={ports[color]}\nHOST=127.0.0.1\nHOSTNAME=127.0.0.1\n"
                                   f"API_INTERNAL_URL={internal_api}\nVIGIL_ENV={env}\n"
                                   f"NODE_EXTRA_CA_CERTS={SYSTEM_CA_BUNDLE}\n",
                                   owner="root", group=app, mode="0640",
                                   name=f"Ensure {service}@{color} listens on 127.0.0.1:{ports[color]}."))
        unit = render_template(role.template("service.j2"), {
            "app": name, "service": service, "user": app, "root": root, "config_dir": config_dir, "entry": entry,
            "stop_timeout": vars.integer("app_stop_timeout", minimum=1), "run_dir": f"/run/{name}",
            "release_env": RELEASE_ENV_HELPER, "hardening": role.template("hardening.j2")})
        operations.append(File(f"/etc/systemd/system/{name}-{service}@.service", unit, notify=reload,
                               name=f"Ensure the {service} unit runs one color per instance."))
        for task, command in (release_tasks.get(service) or {}).items():
            operations.append(File(f"/etc/systemd/system/{name}-{service}-{task}@.service",
                                   render_template(role.template("task.j2"), {
                                       "app": name, "service": service, "task": task, "user": app,
                                       "working_directory": f"{root}/{service}/releases/%i",
                                       "env_file": f"{config_dir}/{service}.env",
                                       "command": task_command(vars, service, task, command),
                                       "timeout": vars.integer("app_release_task_timeout", minimum=1),
                                       "hardening": role.template("hardening.j2")}),
                                   notify=reload, name=f"Ensure the {service} {task} unit runs a release's {task}."))
    return operations + served_colors_at_boot(role, vars, name, root, services)


def served_colors_at_boot(role, vars, name: str, root: str, services) -> list:
    """The unit a boot starts, which starts the color each service's upstream serves; the boot links a color's
    unit had when deploys enabled it (before this unit) go, or a boot would start that color as well."""
    unit = f"{name}-served-colors.service"
    ports = {service: {color: int(port) for color, port in color_ports(vars, service).items()} for service in services}
    operations = [
        File(SERVED_COLORS_HELPER, render_template(role.template("vigil-start-served-colors.j2"), {
            "unit": unit, "upstreams": upstreams_file(name), "ports": ports, "root": root, "app": name,
            "upstream": {service: upstream_name(name, service) for service in services}}),
             mode="0755", name=f"Ensure {SERVED_COLORS_HELPER} starts the colors nginx serves."),
        File(f"/etc/systemd/system/{unit}", render_template(role.template("served-colors.service.j2"), {
            "app": name, "helper": SERVED_COLORS_HELPER}), notify=("reload systemd",),
             name="Ensure a boot starts the color each service's upstream serves."),
    ]
    for service in services:
        for color in COLORS:
            operations.append(Absent(f"/etc/systemd/system/multi-user.target.wants/{name}-{service}@{color}.service",
                                     notify=("reload systemd",),
                                     name=f"Ensure a boot starts {service}@{color} only when nginx serves it."))
    operations.append(SystemdUnit(unit, enabled=True, running=None))
    return operations


def color_ports(vars, service: str) -> dict[str, int]:
    """The port of each color, from the nginx role's upstream settings (nginx_<service>_ports)."""
    key = f"nginx_{service}_ports"
    ports = vars.get(key)
    if not isinstance(ports, dict) or set(ports) != set(COLORS):
        raise ConfigError(
            f"{vars.where(key) if key in vars.values else key}: the app role needs {{blue: PORT, green: PORT}} "
            f"for {service} (nginx_{service}_ports, run in the same play)"
        )
    return ports


def handlers(role, vars):
    return {"reload systemd": DaemonReload()}
