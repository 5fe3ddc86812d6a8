"""Inventory, playbooks and role defaults -> one validated set of vars per host.

Precedence, lowest first: role defaults < inventory vars < group vars < host
vars < command line. Every error names the file and key at fault; nothing
here touches a host.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from vigil import validate
from vigil.commands import Secret
from vigil.errors import ConfigError, MissingSecretError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENV = "sandbox"

VAR_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
INVENTORY_KEYS = {"known_hosts", "defaults", "vars", "groups", "hosts"}
DEFAULTS_KEYS = {"user", "admin_user", "bootstrap_user", "port", "ssh_key", "connect_timeout", "command_timeout"}
HOST_KEYS = {"address", "private_address", "user", "admin_user", "bootstrap_user", "port", "ssh_key", "connect_timeout", "command_timeout", "vars"}
GROUP_KEYS = {"hosts", "vars"}


def rel(path: Path) -> str:
    """`path` relative to the repository when inside it: how errors name files."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys are refused later, with the key named
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; a syntax error or a duplicate key names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{rel(path)}: file not found") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{rel(path)}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"{rel(path)}: cannot read: {error.strerror or error}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{rel(path)}:{mark.line + 1}:{mark.column + 1}" if mark else rel(path)
        kind = "YAML error" if isinstance(error, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise ConfigError(f"{where}: {kind}: {error.problem or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{rel(path)}: YAML error: {error}") from None


def _mapping(value: Any, where: str, allowed: set[str] | None = None) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be strings, got {key!r}")
        if allowed is not None and key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of {', '.join(sorted(allowed))})")
    return value


def _vars(value: Any, where: str) -> dict:
    mapping = _mapping(value, where)
    for key in mapping:
        if not VAR_PATTERN.match(key):
            raise ConfigError(f"{where}.{key}: a variable name must be letters, digits and '_'")
    return mapping


@dataclass(frozen=True)
class Host:
    """One inventory host and how to reach it."""

    name: str
    address: str
    port: int
    user: str
    ssh_key: Path | None
    groups: tuple[str, ...]
    connect_timeout: float
    command_timeout: float
    # Who to log in as while `user` cannot yet (a fresh server, before onboarding creates it).
    bootstrap_user: str | None = None
    # The address other hosts reach it on (the provider's private network); None: `address`.
    private_address: str | None = None
    # Who provisioning logs in as: root through sudo for everything. `user` (deploy) has sudo
    # only for what deploys need, so a deploy key cannot administer the host. None: `user`.
    admin_user: str | None = None

    def as_admin(self) -> "Host":
        """This host as the tasks that administer it (provision, secrets) log in: as `admin_user`."""
        return dataclasses.replace(self, user=self.admin_user) if self.admin_user else self


@dataclass
class Inventory:
    """An environment's hosts, groups and vars, each with where it was defined."""

    env: str
    path: Path
    known_hosts: Path
    hosts: dict[str, Host]
    groups: dict[str, list[str]]
    vars: dict[str, Any]
    group_vars: dict[str, dict[str, Any]]
    host_vars: dict[str, dict[str, Any]]

    def select(self, limit: str | None) -> list[Host]:
        """The hosts named by `--limit` (comma-separated hosts or groups; `all`), in inventory order."""
        if not limit:
            return list(self.hosts.values())
        wanted: set[str] = set()
        for item in (part.strip() for part in limit.split(",")):
            if not item:
                continue
            if item == "all":
                wanted.update(self.hosts)
            elif item in self.hosts:
                wanted.add(item)
            elif item in self.groups:
                wanted.update(self.groups[item])
            else:
                raise ConfigError(
                    f"--limit: unknown host or group {item!r} in {rel(self.path)} "
                    f"(hosts: {', '.join(self.hosts) or 'none'}; groups: {', '.join(self.groups) or 'none'})"
                )
        return [host for name, host in self.hosts.items() if name in wanted]

    def hosts_in(self, pattern: str, where: str = "hosts") -> set[str]:
        """Host names a playbook's `hosts:` names (a group, a host, `all`, or a comma list).

        A name the inventory does not know is an error: a typo must not silently target nothing.
        """
        names: set[str] = set()
        for item in (part.strip() for part in pattern.split(",")):
            if item == "all":
                names.update(self.hosts)
            elif item in self.groups:
                names.update(self.groups[item])
            elif item in self.hosts:
                names.add(item)
            else:
                raise ConfigError(f"{where}: {item!r} is neither a group nor a host in {rel(self.path)}")
        return names

    def vars_for(self, host: Host, roles: list["Role"] = (), cli: dict[str, Any] | None = None) -> "HostVars":
        """The merged vars of `host`, each remembering the file and key it came from."""
        layers: list[tuple[dict[str, Any], str]] = [({"vigil_env": self.env}, "vigil:")]
        layers += [(role.defaults, f"{rel(role.path / 'defaults.yml')}:") for role in roles]
        layers += [
            (self.vars, f"{rel(self.path)}: vars"),
        ]
        for group in host.groups:
            layers.append((self.group_vars.get(group, {}), f"{rel(self.path)}: groups.{group}.vars"))
        layers.append((self.host_vars.get(host.name, {}), f"{rel(self.path)}: hosts.{host.name}.vars"))
        layers.append((cli or {}, "--var"))
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for layer, origin in layers:
            for key, value in layer.items():
                values[key] = value
                origins[key] = origin
        return HostVars(host, values, origins, self)


def _private_address(host: Host, inventory: "Inventory | None") -> str:
    if host.private_address:
        return host.private_address
    try:
        return validate.ip_address(host.address, "")
    except ConfigError:
        where = f"{rel(inventory.path)}: " if inventory else ""
        raise ConfigError(f"{where}hosts.{host.name}: its address {host.address!r} is a name; other hosts' firewall "
                          f"and database rules need an IP: set hosts.{host.name}.private_address") from None


def _seconds(merged: dict, spec: dict, name: str, default: float, host_key: str, where: str) -> float:
    value = merged.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        origin = f"{host_key}.{name}" if name in spec else f"{where}: defaults.{name}"
        raise ConfigError(f"{origin}: expected a number of seconds above 0, got {value!r}")
    return float(value)


def default_inventory_dir() -> Path:
    """inventory/ in the repository, or $VIGIL_INVENTORY (tests point it at a scratch copy)."""
    return Path(os.environ.get("VIGIL_INVENTORY") or REPO_ROOT / "inventory")


def load_inventory(env: str, inventory_dir: Path | None = None) -> Inventory:
    """Load and validate `inventory/<env>.yml`.

    Example: load_inventory("sandbox").select("web")
    """
    directory = inventory_dir or default_inventory_dir()
    if not validate.NAME_PATTERN.match(env or ""):
        raise ConfigError(f"--env: {env!r} is not a valid environment name")
    path = directory / f"{env}.yml"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob("*.yml"))
        hint = " (run `invoke sandbox.up` first)" if env == DEFAULT_ENV else ""
        raise ConfigError(
            f"--env: unknown environment {env!r}: {rel(path)} does not exist{hint}; known: {', '.join(known) or 'none'}"
        )
    where = rel(path)
    data = _mapping(load_yaml(path), where, INVENTORY_KEYS)
    defaults = _mapping(data.get("defaults"), f"{where}: defaults", DEFAULTS_KEYS)
    known_hosts_name = data.get("known_hosts", "known_hosts")
    if not isinstance(known_hosts_name, str) or not validate.NAME_PATTERN.match(known_hosts_name.replace(".", "-")):
        raise ConfigError(f"{where}: known_hosts: a file name inside inventory/, got {known_hosts_name!r}")

    hosts_data = _mapping(data.get("hosts"), f"{where}: hosts")
    if not hosts_data:
        raise ConfigError(f"{where}: hosts: no hosts defined")
    groups_data = _mapping(data.get("groups"), f"{where}: groups")

    groups: dict[str, list[str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    for group, spec in groups_data.items():
        validate.name(group, f"{where}: groups")
        if group == "all":
            raise ConfigError(f"{where}: groups.all: 'all' is reserved for every host")
        spec = _mapping(spec, f"{where}: groups.{group}", GROUP_KEYS)
        members = spec.get("hosts") or []
        if not isinstance(members, list):
            raise ConfigError(f"{where}: groups.{group}.hosts: expected a list of host names")
        for member in members:
            if not isinstance(member, str) or member not in hosts_data:
                raise ConfigError(f"{where}: groups.{group}.hosts: unknown host {member!r}")
        groups[group] = list(members)
        group_vars[group] = _vars(spec.get("vars"), f"{where}: groups.{group}.vars")

    hosts: dict[str, Host] = {}
    host_vars: dict[str, dict[str, Any]] = {}
    for name, spec in hosts_data.items():
        validate.name(name, f"{where}: hosts")
        key = f"{where}: hosts.{name}"
        spec = _mapping(spec, key, HOST_KEYS)
        merged = {**defaults, **spec}
        if "address" not in spec:
            raise ConfigError(f"{key}.address: missing")
        ssh_key = merged.get("ssh_key")
        key_path = None
        if ssh_key is not None:
            validate.local_path(ssh_key, f"{key}.ssh_key" if "ssh_key" in spec else f"{where}: defaults.ssh_key")
            key_path = (path.parent / os.path.expanduser(ssh_key)).resolve()
        hosts[name] = Host(
            name=name,
            address=validate.address(spec["address"], f"{key}.address"),
            port=validate.port(merged.get("port", 22), f"{key}.port" if "port" in spec else f"{where}: defaults.port"),
            user=validate.user(merged.get("user", "root"), f"{key}.user" if "user" in spec else f"{where}: defaults.user"),
            ssh_key=key_path,
            groups=tuple(g for g, members in groups.items() if name in members),
            connect_timeout=_seconds(merged, spec, "connect_timeout", 10, key, where),
            command_timeout=_seconds(merged, spec, "command_timeout", 900, key, where),
            admin_user=None if merged.get("admin_user") is None else validate.user(
                merged["admin_user"], f"{key}.admin_user" if "admin_user" in spec else f"{where}: defaults.admin_user"),
            bootstrap_user=None if merged.get("bootstrap_user") is None else validate.user(
                merged["bootstrap_user"], f"{key}.bootstrap_user" if "bootstrap_user" in spec else f"{where}: defaults.bootstrap_user"),
            private_address=None if spec.get("private_address") is None else validate.ip_address(
                spec["private_address"], f"{key}.private_address"),
        )
        host_vars[name] = _vars(spec.get("vars"), f"{key}.vars")

    return Inventory(
        env=env,
        path=path,
        known_hosts=directory / known_hosts_name,
        hosts=hosts,
        groups=groups,
        vars=_vars(data.get("vars"), f"{where}: vars"),
        group_vars=group_vars,
        host_vars=host_vars,
    )


def parse_cli_vars(pairs: list[str] | None) -> dict[str, Any]:
    """`--var key=value` flags into a dict; values are parsed as YAML scalars (`true`, `3`)."""
    result: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--var: expected key=value, got {pair!r}")
        _vars({key: None}, "--var")
        try:
            result[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            result[key] = value
    return result


@dataclass
class HostVars:
    """A host's merged vars; the accessors validate and name the origin of a bad value.

    Example: host_vars.path("base_motd_path") -> "/etc/motd"
    """

    host: Host
    values: dict[str, Any]
    origins: dict[str, str]
    # The inventory the host is in, for vars that name other hosts (peer_addresses).
    inventory: "Inventory | None" = None

    def where(self, key: str) -> str:
        origin = self.origins.get(key, "vars")
        if origin == "--var":
            return f"--var {key}"
        return f"{origin} {key}" if origin.endswith(":") else f"{origin}.{key}"

    def __getitem__(self, key: str) -> Any:
        if key not in self.values:
            raise ConfigError(f"{self.host.name}: variable {key!r} is not defined (no role default, inventory or --var)")
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def path(self, key: str) -> str:
        return validate.absolute_path(self[key], self.where(key))

    def user(self, key: str) -> str:
        return validate.user(self[key], self.where(key))

    def string(self, key: str, pattern: str | None = None) -> str:
        value = self[key]
        if not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: expected a string, got {value!r}")
        if pattern and not re.fullmatch(pattern, value):
            raise ConfigError(f"{self.where(key)}: {value!r} does not match {pattern}")
        return value

    def integer(self, key: str, minimum: int | None = None) -> int:
        value = self[key]
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise ConfigError(f"{self.where(key)}: expected a whole number{f' >= {minimum}' if minimum is not None else ''}, got {value!r}")
        return value

    def secret(self, key: str):
        """The env's secret `key` as a Secret (masked everywhere), from secrets/<env>.env.age.

        Example: PostgresRole("together_pray", vars.secret("DB_PASSWORD"))
        """
        from vigil import secrets  # secrets builds on config; import here to keep the layers one-way

        values = _SECRETS_CACHE.get(self.values["vigil_env"])
        if values is None:
            values = _SECRETS_CACHE.setdefault(self.values["vigil_env"], secrets.load(self.values["vigil_env"]))
        if key not in values:
            raise MissingSecretError(f"secret {key} is missing from the {self.values['vigil_env']} secrets "
                              f"(invoke secrets.edit --env={self.values['vigil_env']})")
        return Secret(values[key])

    def private_address(self) -> str:
        """This host's address on the private network: `private_address`, else `address` if it is an IP."""
        return _private_address(self.host, self.inventory)

    def peer_addresses(self, group: str, where: str) -> list[str]:
        """The private addresses of the other hosts of `group`, in inventory order; `where` names the var.

        Example: vars.peer_addresses("web", vars.where("postgresql_client_group")) -> ["10.0.0.11"] on db1
        """
        if self.inventory is None or group not in self.inventory.groups:
            raise ConfigError(f"{where}: no group {group!r} in the inventory")
        peers = [self.inventory.hosts[name] for name in self.inventory.groups[group] if name != self.host.name]
        return list(dict.fromkeys(_private_address(peer, self.inventory) for peer in peers))

    def boolean(self, key: str) -> bool:
        value = self[key]
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: expected true or false, got {value!r}")
        return value

    def string_list(self, key: str, pattern: str | None = None) -> list[str]:
        value = self[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where(key)}: expected a list of strings, got {value!r}")
        for item in value:
            if pattern and not re.fullmatch(pattern, item):
                raise ConfigError(f"{self.where(key)}: {item!r} does not match {pattern}")
        return value


# Decrypted once per run and env, however many hosts and roles ask.
_SECRETS_CACHE: dict[str, dict[str, str]] = {}


def forget_secrets() -> None:
    """Drop decrypted secrets kept for roles, so the next plan reads the file again (after a rotation)."""
    _SECRETS_CACHE.clear()


# --- roles and playbooks ---------------------------------------------------


@dataclass
class Role:
    """A role: prefixed defaults, a `tasks(vars)` function and optional `handlers(vars)`."""

    name: str
    path: Path
    defaults: dict[str, Any]
    tasks: Callable
    handlers: Callable | None

    def file(self, name: str) -> bytes:
        """A static file shipped with the role (roles/<role>/files/<name>)."""
        path = self.path / "files" / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{rel(path)}: file not found") from None

    def template(self, name: str) -> str:
        path = self.path / "templates" / name
        try:
            return path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"{rel(path)}: template not found") from None


def load_role(name: str, roles_dir: Path | None = None) -> Role:
    """Load `roles/<name>`: defaults.yml (every key prefixed `<name>_`) and tasks.py."""
    validate.name(name, "playbook roles")
    path = (roles_dir or REPO_ROOT / "roles") / name
    if not (path / "tasks.py").exists():
        raise ConfigError(f"{rel(path)}: role {name!r} not found (no tasks.py)")
    defaults_path = path / "defaults.yml"
    defaults = _vars(load_yaml(defaults_path), rel(defaults_path)) if defaults_path.exists() else {}
    prefix = f"{name}_"
    for key in defaults:
        if not key.startswith(prefix):
            raise ConfigError(f"{rel(defaults_path)}: {key}: role defaults must be prefixed {prefix!r}")
    spec = importlib.util.spec_from_file_location(f"vigil_roles.{name}", path / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "tasks", None)):
        raise ConfigError(f"{rel(path / 'tasks.py')}: a role must define tasks(role, vars)")
    return Role(name, path, defaults, module.tasks, getattr(module, "handlers", None))


@dataclass
class Play:
    """One play of a playbook: a name, the hosts pattern and the roles to apply in order."""

    name: str
    hosts: str
    roles: list[Role] = field(default_factory=list)


def load_playbook(name: str, playbooks_dir: Path | None = None, roles_dir: Path | None = None) -> list[Play]:
    """Load `playbooks/<name>.yml`: a list of {name, hosts, roles}."""
    validate.name(name, "playbook")
    path = (playbooks_dir or REPO_ROOT / "playbooks") / f"{name}.yml"
    where = rel(path)
    data = load_yaml(path)
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: a playbook is a non-empty list of plays")
    plays = []
    for index, item in enumerate(data):
        spec = _mapping(item, f"{where}: [{index}]", {"name", "hosts", "roles"})
        for key in ("name", "hosts", "roles"):
            if key not in spec:
                raise ConfigError(f"{where}: [{index}].{key}: missing")
        if not isinstance(spec["roles"], list):
            raise ConfigError(f"{where}: [{index}].roles: expected a list of role names")
        plays.append(Play(spec["name"], str(spec["hosts"]), [load_role(r, roles_dir) for r in spec["roles"]]))
    return plays
