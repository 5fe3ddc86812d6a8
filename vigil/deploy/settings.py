"""How one service deploys on a host: where its releases, colors and lock are, its ports and health
gate, from the app and nginx roles' vars (every bad value named by its key)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from vigil.core.errors import ConfigError
from vigil.core.inventory import Host, HostVars, Inventory
from vigil.core.roles import load_role

COLORS = ("blue", "green")
UNIT_HELPER = "/usr/local/sbin/vigil-app-unit"
SWITCH_HELPER = "/usr/local/sbin/vigil-switch-upstream"
# roles/app's: at boot, starts the color of each service that nginx's upstream serves.
SERVED_COLORS_HELPER = "/usr/local/sbin/vigil-start-served-colors"
# roles/pgbackrest's, on a database host whose WAL goes to a backup host's repository.
RESTORE_POINT_HELPER = "/usr/local/sbin/vigil-restore-point"
TASK_NAME = r"[a-z][a-z0-9-]{0,30}"


def upstreams_file(app: str) -> str:
    """The nginx file holding the app's upstreams, one per service, each on one color's port (deploys switch it)."""
    return f"/etc/nginx/conf.d/{app}-upstreams.conf"


def upstream_name(app: str, service: str) -> str:
    return f"{app.replace('-', '_')}_{service}"


@dataclass(frozen=True)
class Layout:
    """Where one service's releases, colors, lock and history are on a host, and its units' names.

    Example: Layout("/srv/together-pray", "together-pray", "backend").release("a1b2-c3d4")
             == "/srv/together-pray/backend/releases/a1b2-c3d4"
    """

    root: str
    app: str
    service: str

    @property
    def base(self) -> str:
        return f"{self.root}/{self.service}"

    @property
    def releases(self) -> str:
        return f"{self.base}/releases"

    @property
    def current(self) -> str:
        return f"{self.base}/current"

    @property
    def lock(self) -> str:
        return f"{self.base}/.deploy-lock"

    @property
    def history(self) -> str:
        return f"{self.base}/deploys.jsonl"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    def color(self, color: str) -> str:
        return f"{self.base}/colors/{color}"

    def unit(self, color: str) -> str:
        return f"{self.app}-{self.service}@{color}.service"

    def task_unit(self, task: str, release_id: str) -> str:
        return f"{self.app}-{self.service}-{task}@{release_id}.service"


@dataclass(frozen=True)
class Settings:
    """How one service deploys on a host (roles/app and roles/nginx settings, resolved).

    ports: color -> port; health_path: asked on the idle color's port; health_release: the
    answer must name the release (the backend's /health does); checks: consecutive passes
    needed within `health_timeout` seconds; drain: seconds the old color keeps finishing
    requests after the switch; keep: releases kept (never the current or previous one);
    tasks: release tasks run before the switch, in order (migrate).
    """

    layout: Layout
    group: str
    upstream_file: str
    upstream_name: str
    ports: dict[str, int]
    health_path: str
    health_release: bool
    checks: int
    health_timeout: int
    drain: int
    keep: int
    tasks: tuple[str, ...] = ()
    task_timeout: int = 600
    # Back the database up (on its host) before the release tasks run.
    backup_first: bool = True
    # Where a release keeps its migrations (one file each), and the release task that reverts the
    # newest applied one: `deploy.rollback --migrations` reverts those the current release added.
    migrations_dir: str = ""
    revert_task: str = ""
    # Seconds a deploy's lock may go without a heartbeat before the next deploy takes it over.
    lock_lease: int = 120
    # Seconds the idle color must stay healthy, with no restart, before traffic moves to it.
    min_healthy: int = 10
    # Seconds the new color is watched after it took the traffic (0: not watched); a restart or
    # failing checks then switch back to the old color.
    watch: int = 30
    # MiB that must be free under the service's directory before a deploy builds or ships anything.
    min_free_mb: int = 512
    # The user who owns the releases and the lock (deploys log in as it; status screens read as it).
    owner: str = "deploy"
    # Seconds the color that served before a deploy keeps running afterwards, for an instant rollback (0: it
    # stops once drained), while the host has at least `rollback_min_available_mb` MiB of memory available.
    rollback_window: int = 0
    rollback_min_available_mb: int = 256


def settings_from_vars(vars: HostVars, service: str) -> Settings:
    """A host's deploy settings for `service`, from its merged app and nginx role vars (names the key at fault)."""
    health = vars["app_health"]
    spec = health.get(service) if isinstance(health, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not spec["path"].startswith("/") \
            or not isinstance(spec.get("release", False), bool):
        raise ConfigError(f"{vars.where('app_health')}.{service}: expected {{path: /..., release: true|false}}")
    ports = vars[f"nginx_{service}_ports"]
    if not isinstance(ports, dict) or set(ports) != set(COLORS) or ports["blue"] == ports["green"]:
        raise ConfigError(
            f"{vars.where(f'nginx_{service}_ports')}: expected two different ports, {{blue: PORT, green: PORT}}"
        )
    tasks = (vars["app_deploy_tasks"] or {}).get(service) or []
    known_tasks = (vars["app_release_tasks"] or {}).get(service) or {}
    for task in tasks:
        if task not in known_tasks:
            raise ConfigError(
                f"{vars.where('app_deploy_tasks')}.{service}: {task!r} is not in app_release_tasks.{service}"
            )
    name = vars.string("app_name", r"[a-z][a-z0-9-]{0,30}")
    return Settings(
        layout=Layout(vars.path("app_root"), name, service),
        group=vars.user("app_group"),
        owner=vars.user("app_owner"),
        upstream_file=upstreams_file(name),
        upstream_name=upstream_name(name, service),
        ports={color: int(ports[color]) for color in COLORS},
        health_path=spec["path"],
        health_release=bool(spec.get("release", False)),
        checks=vars.integer("app_health_checks", minimum=1),
        health_timeout=vars.integer("app_health_timeout", minimum=1),
        drain=vars.integer("app_drain_seconds", minimum=0),
        keep=vars.integer("app_keep_releases", minimum=2),
        lock_lease=vars.integer("app_lock_lease_seconds", minimum=10),
        min_healthy=stable_for(vars),
        watch=vars.integer("app_watch_seconds", minimum=0),
        min_free_mb=vars.integer("app_min_free_mb", minimum=0),
        rollback_window=60 * vars.integer("app_rollback_window_minutes", minimum=0, maximum=24 * 60),
        rollback_min_available_mb=vars.integer("app_rollback_window_min_available_mb", minimum=0),
        tasks=tuple(tasks),
        task_timeout=vars.integer("app_release_task_timeout", minimum=1),
        backup_first=vars.boolean("app_backup_before_tasks"),
        **migrations_settings(vars, service, known_tasks),
    )


def stable_for(vars: HostVars) -> int:
    """app_min_healthy_seconds, which must leave the health gate time to pass (app_health_timeout)."""
    stable = vars.integer("app_min_healthy_seconds", minimum=0)
    timeout = vars.integer("app_health_timeout", minimum=1)
    if stable >= timeout:
        raise ConfigError(f"{vars.where('app_min_healthy_seconds')}: {stable} s leaves no time to pass within "
                          f"app_health_timeout ({timeout} s, {vars.where('app_health_timeout')}): make it shorter")
    return stable


def migrations_settings(vars: HostVars, service: str, known_tasks: dict) -> dict:
    """A service's app_migrations entry ({dir, revert}) as Settings fields; none: nothing to revert."""
    spec = (vars["app_migrations"] or {}).get(service)
    if spec is None:
        return {}
    where = f"{vars.where('app_migrations')}.{service}"
    if not isinstance(spec, dict) or not isinstance(spec.get("dir"), str) \
            or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._/-]*", spec["dir"]) or ".." in spec["dir"].split("/"):
        raise ConfigError(f"{where}: expected {{dir: a path inside the release, revert: a release task}}")
    if spec.get("revert") not in known_tasks:
        raise ConfigError(f"{where}.revert: {spec.get('revert')!r} is not in app_release_tasks.{service}")
    return {"migrations_dir": spec["dir"], "revert_task": spec["revert"]}


# The roles whose vars say how a service deploys.
SETTINGS_ROLES = ("app", "nginx")


def host_settings(inventory: Inventory, host: Host, services: list[str]) -> list[Settings]:
    """`host`'s deploy settings for each of `services`, in that order.

    Example: host_settings(inventory, inventory.hosts["vps1"], ["backend"])[0].layout.current
    """
    vars = inventory.vars_for(host, [load_role(name) for name in SETTINGS_ROLES])
    return [settings_from_vars(vars, service) for service in services]


def app_name(inventory: Inventory) -> str:
    """The app's name (app_name: its units, paths and upstreams are named after it), one per inventory."""
    first = next(iter(inventory.hosts.values()))
    return inventory.vars_for(first, [load_role("app")]).string("app_name", r"[a-z][a-z0-9-]{0,30}")


def task_command(vars, service: str, task: str, command) -> str:
    """A release task's command line for its unit's ExecStart= (app_release_tasks.<service>.<task>), checked."""
    where = f"{vars.where('app_release_tasks')}.{service}.{task}"
    if not isinstance(task, str) or not re.fullmatch(TASK_NAME, task):
        raise ConfigError(f"{where}: not a task name")
    if not isinstance(command, list) or not command or not all(isinstance(part, str) and part for part in command):
        raise ConfigError(f"{where}: expected a command as a list of words")
    if any(character in part for part in command for character in "\n%$;"):
        raise ConfigError(f"{where}: a word may not hold a newline, %, $ or ;")
    program = command[0] if command[0].startswith("/") else f"/usr/bin/{command[0]}"
    return shlex.join([program, *command[1:]])
