"""The monitor role: /usr/local/sbin/vigil-probe on every host, run by a timer, posting changes to a webhook.

The probe checks what onboarding installed on the host: the site through nginx on web hosts;
PostgreSQL, and its WAL archiving where there is a backup host, on the database host (both kinds on a
host that is both); the pgBackRest repository and its restore drill on the backup host. So the checks
are chosen here from playbooks/onboard.yml and the inventory, and written to /etc/vigil/probe.json.
The webhook's URL (the ALERT_WEBHOOK_URL secret, optional) goes to a root-only env file the probe
reads itself.
"""

import dataclasses
import functools
import json
import posixpath

from vigil.core.errors import ConfigError, MissingSecretError
from vigil.core.operations import render_template
from vigil.core.paths import rel
from vigil.core.roles import load_playbook, load_role
from vigil.core.topology import repository_ends
from vigil.core.validation import address
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.systemd import DaemonReload, SystemdUnit
from vigil.operations.users import User
from vigil.vault.env_files import render_dotenv

PROBE = "/usr/local/sbin/vigil-probe"
SETTINGS = "/etc/vigil/probe.json"
WEBHOOK_ENV = "/etc/vigil/probe.env"
WEBHOOK_KEY = "ALERT_WEBHOOK_URL"
UNIT = "vigil-probe"
# The probe's own user and directory (its state, events and lock).
PROBE_USER = "vigil-probe"
PROBE_HOME = "/var/lib/vigil/probe"
# The app's /health, under the /api/ prefix roles/nginx strips; the frontend's page at the root.
BACKEND_PATH = "/api/health"
FRONTEND_PATH = "/"
# roles/nginx's site answers 503 with the maintenance page while this file exists (incident.maintenance).
MAINTENANCE_FLAG = "/var/www/together-pray/maintenance.on"
HTTPS_PORT = 443


@functools.lru_cache(maxsize=None)
def onboard_plays() -> tuple[tuple[str, str, frozenset[str]], ...]:
    """(name, hosts pattern, role names) of each play of playbooks/onboard.yml, read once per run:
    planning asks for them once per host, and loading roles means parsing YAML and running code."""
    return tuple(
        (play.name, play.hosts, frozenset(role.name for role in play.roles)) for play in load_playbook("onboard")
    )


@functools.lru_cache(maxsize=None)
def role_defaults(name: str) -> tuple[dict, str]:
    """(defaults, where they are written) of roles/<name>, read once per run."""
    role = load_role(name)
    return role.defaults, f"{rel(role.path / 'defaults.yml')}:"


# roles/pgbackrest's archiving check on the database host.
ARCHIVE_CHECK_UNIT = "vigil-pgbackrest-check"


def onboarded_roles(vars) -> set[str]:
    """The roles playbooks/onboard.yml applies to this host, whichever plays they come from."""
    if vars.inventory is None:
        raise ConfigError(f"{vars.host.name}: roles/monitor needs the inventory to choose the host's checks")
    names = set()
    for name, hosts, roles in onboard_plays():
        if vars.host.name in vars.inventory.hosts_in(hosts, where=f"playbooks/onboard.yml: {name!r} hosts"):
            names |= roles
    return names


def with_defaults_of(vars, roles: list[str]):
    """`vars` with other roles' defaults beneath every layer: this role's play applies only this role,
    yet the probe must see the site and the repository the way roles/nginx and roles/pgbackrest set them up."""
    values, origins = {}, {}
    for name in roles:
        defaults, where = role_defaults(name)
        values.update(defaults)
        origins.update(dict.fromkeys(defaults, where))
    return dataclasses.replace(vars, values={**values, **vars.values}, origins={**origins, **vars.origins})


def checks_for(roles: set[str]) -> list[str]:
    """The probe's checks for a host that onboarding gives `roles`."""
    checks = ["backend", "frontend"] if "nginx" in roles else []
    checks += ["postgresql"] if "postgresql" in roles else []
    return checks


def pgbackrest_end(vars) -> str | None:
    """Which end of a pgBackRest repository roles/pgbackrest makes this host: "repository",
    "database", or None."""
    group = with_defaults_of(vars, ["pgbackrest"]).string("pgbackrest_repository_group", r"[A-Za-z0-9_-]+")
    ends = repository_ends(vars.inventory.groups, group)
    return dict(zip(ends, ("repository", "database"))).get(vars.host.name) if ends else None


def probe_settings(vars, checks: list[str]) -> dict:
    """/etc/vigil/probe.json's content for this host."""
    interval, timeout = vars.integer("monitor_interval", minimum=10), vars.integer("monitor_timeout", minimum=1)
    # A run makes up to three checks and one post that may stall, each bounded by the timeout.
    if 4 * timeout > interval:
        raise ConfigError(f"{vars.where('monitor_timeout')}: {timeout} s is too long for runs every {interval} s "
                          "(monitor_interval); keep four timeouts within one interval")
    settings = {
        "env": vars.string("vigil_env"),
        "host": vars.host.name,
        "checks": checks,
        "timeout": timeout,
        "down_after": vars.integer("monitor_down_after", minimum=1),
        "state_file": vars.path("monitor_state_file"),
        "events_file": vars.path("monitor_events_file"),
        "webhook_env_file": WEBHOOK_ENV,
    }
    others = with_defaults_of(vars, ["nginx"])
    if "backend" in checks:
        settings["site"] = {
            # As roles/nginx names the site: the TLS server name and Host header the probe sends.
            "server_name": address(
                others.get("nginx_server_name") or vars.host.address, others.where("nginx_server_name")
            ),
            "port": HTTPS_PORT,
            "backend_path": BACKEND_PATH,
            "frontend_path": FRONTEND_PATH,
            "maintenance_flag": MAINTENANCE_FLAG,
        }
    if "wal-archive" in checks:
        archive = with_defaults_of(vars, ["pgbackrest"])
        settings["wal_archive_unit"] = f"{ARCHIVE_CHECK_UNIT}.service"
        # Three intervals without a run: the timer has stopped.
        settings["wal_archive_max_age_seconds"] = 3 * archive.integer("pgbackrest_check_interval", minimum=60)
    if "repository" in checks:
        repository = with_defaults_of(vars, ["pgbackrest"])
        settings["repository_path"] = repository.path("pgbackrest_repository_path")
        settings["repository_backup_units"] = [f"vigil-pgbackrest-backup@{kind}.service" for kind in ("full", "incr")]
        settings["repository_max_age_hours"] = vars.integer("monitor_backup_max_age_hours", minimum=1)
        settings["repository_disk_max_percent"] = vars.integer("monitor_repository_disk_max_percent", minimum=1)
    if "drill" in checks:
        drill = with_defaults_of(vars, ["pgbackrest"])
        settings["drill_result_file"] = f"{drill.path('pgbackrest_drill_path')}/last.json"
        settings["drill_max_age_days"] = vars.integer("monitor_drill_max_age_days", minimum=1)
    return settings


def webhook_env(vars) -> str:
    """probe.env's content: the webhook's URL, or an empty value (the probe then only logs its alerts)."""
    try:
        url = vars.secret(WEBHOOK_KEY).value
    except MissingSecretError:
        return (f"# No {WEBHOOK_KEY} in the {vars.values['vigil_env']} secrets: alerts are logged, not posted.\n"
                f"# invoke secrets.set {WEBHOOK_KEY} --env={vars.values['vigil_env']}, then provision.server.\n"
                f"{WEBHOOK_KEY}=\n")
    return render_dotenv({WEBHOOK_KEY: url})


def tasks(role, vars):
    """The monitor role's operations for one host, in order."""
    # The database end watches its WAL archiving; the repository end its disk, scheduled backups and drill.
    by_end = {"database": ["wal-archive"], "repository": ["repository", "drill"]}
    checks = checks_for(onboarded_roles(vars)) + by_end.get(pgbackrest_end(vars), [])
    settings = probe_settings(vars, checks)
    interval = vars.integer("monitor_interval", minimum=10)
    # The only place the probe writes: its own directory, where its state and events files must be.
    for key in ("state_file", "events_file"):
        if posixpath.dirname(settings[key]) != PROBE_HOME:
            raise ConfigError(f"{vars.where(f'monitor_{key}')}: keep it in {PROBE_HOME}, the probe user's "
                              "own directory (the probe runs unprivileged and writes nowhere else)")
    service = render_template(role.template("vigil-probe.service.j2"),
                              {"probe": PROBE, "interval": interval, "user": PROBE_USER, "home": PROBE_HOME})
    timer = render_template(role.template("vigil-probe.timer.j2"), {"interval": interval})
    reload = ("reload systemd",)
    return [
        AptPackages(["python3"], name="Ensure python3 is installed (the probe is a Python program)."),
        Directory("/etc/vigil", mode="0755"),
        File(SETTINGS, json.dumps(settings, indent=2, sort_keys=True) + "\n", mode="0644",
             name=f"Ensure {SETTINGS} names this host's checks: {', '.join(checks) or 'none'}."),
        # The probe runs as its own unprivileged user, in its own directory.
        Directory(posixpath.dirname(PROBE_HOME), mode="0755"),
        User(PROBE_USER, shell="/usr/sbin/nologin", home=PROBE_HOME, system=True,
             name=f"Ensure the probe's user {PROBE_USER} exists and cannot log in."),
        Directory(PROBE_HOME, owner=PROBE_USER, group=PROBE_USER, mode="0750"),
        File(WEBHOOK_ENV, webhook_env(vars), mode="0640", group=PROBE_USER, secret=True, env_file=True,
             name=f"Ensure {WEBHOOK_ENV} holds the alert webhook's URL, for root and the probe only."),
        File(PROBE, role.file("vigil-probe"), mode="0755", name=f"Ensure {PROBE} is installed."),
        File(f"/etc/systemd/system/{UNIT}.service", service, notify=reload,
             name=f"Ensure {UNIT}.service runs {PROBE}."),
        File(f"/etc/systemd/system/{UNIT}.timer", timer, notify=reload,
             name=f"Ensure {UNIT}.timer runs the probe every {interval} s."),
        SystemdUnit(f"{UNIT}.timer", enabled=True, running=True),
    ]


def handlers(role, vars):
    return {"reload systemd": DaemonReload()}
