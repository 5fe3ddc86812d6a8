"""Inventory: an environment's hosts, groups and vars -> one validated set of vars per host.

Precedence, lowest first: role defaults < inventory vars < group vars < host
vars < command line. Every error names the file and key at fault; nothing
here touches a host.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

from vigil.core import validation
from vigil.core.commands import Secret
from vigil.core.errors import ConfigError, MissingSecretError
from vigil.core.paths import REPO_ROOT, rel
from vigil.core.yaml_loader import load_yaml, yaml_value

DEFAULT_ENV = "sandbox"


class RoleDefaults(Protocol):
    """What host vars take from a role (vigil.core.roles.Role): its defaults, and where they are."""

    path: Path
    defaults: dict[str, Any]

# The env's decrypted secrets, read on first use: the vault passes one in (vigil.vault.store.lookup);
# the engine never imports the vault.
SecretLookup = Callable[[], Mapping[str, str]]

VAR_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
INVENTORY_KEYS = {"known_hosts", "defaults", "vars", "groups", "hosts"}
DEFAULTS_KEYS = {
    "user", "admin_user", "bootstrap_user", "port", "ssh_key", "connect_timeout", "command_timeout", "stall_timeout",
}
HOST_KEYS = {
    "address",
    "private_address",
    "user",
    "admin_user",
    "bootstrap_user",
    "port",
    "ssh_key",
    "connect_timeout",
    "command_timeout",
    "stall_timeout",
    "vars",
}
GROUP_KEYS = {"hosts", "vars"}


def check_mapping(value: Any, where: str, allowed: set[str] | None = None) -> dict:
    """`value` as a mapping with string keys (None: empty), each in `allowed` if given (else ConfigError)."""
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


def check_vars(value: Any, where: str) -> dict:
    """`value` as a mapping of variables, every name a valid variable name (else ConfigError naming it)."""
    mapping = check_mapping(value, where)
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
    # Seconds the connection may give no sign of life (a dropped network) before a command fails.
    stall_timeout: float = 30.0

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

    def vars_for(self, host: Host, roles: list[RoleDefaults] = (), cli: dict[str, Any] | None = None,
                 secrets: SecretLookup | None = None) -> "HostVars":
        """The merged vars of `host`, each remembering the file and key it came from.

        secrets: where `HostVars.secret` reads the env's secrets (none given: every secret is missing).
        """
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
        return HostVars(host, values, origins, self, secrets)

    def defined_names(self, roles: Iterable[RoleDefaults]) -> set[str]:
        """Every var name `roles` or this inventory (at any level) defines, and those vigil sets itself."""
        names = {"vigil_env", *self.vars}
        names.update(*(role.defaults for role in roles), *self.group_vars.values(), *self.host_vars.values())
        return names

    def check_cli_vars(self, cli: Mapping[str, Any], roles: Iterable[RoleDefaults]) -> None:
        """Refuse a `--var` that nothing defines (a typo would be ignored silently), naming the closest."""
        known = self.defined_names(roles)
        for key in cli:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f": did you mean {close[0]!r}?" if close else " (role defaults.yml files list what is)"
                raise ConfigError(f"--var {key}: no role of the playbook and nothing in {rel(self.path)} "
                                  f"defines {key!r}{hint}")


def _private_address(host: Host, inventory: "Inventory | None") -> str:
    if host.private_address:
        return host.private_address
    try:
        return validation.ip_address(host.address, "")
    except ConfigError:
        where = f"{rel(inventory.path)}: " if inventory else ""
        raise ConfigError(f"{where}hosts.{host.name}: its address {host.address!r} is a name; other hosts' firewall "
                          f"and database rules need an IP: set hosts.{host.name}.private_address") from None


def private_address(host: Host, inventory: "Inventory") -> str:
    """Host `host`'s address on the env's private network (`private_address`, else its address if an IP):
    what the other hosts, the monitor host among them, see it come from."""
    return _private_address(host, inventory)


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
    if not validation.NAME_PATTERN.match(env or ""):
        raise ConfigError(f"--env: {env!r} is not a valid environment name")
    path = directory / f"{env}.yml"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob("*.yml") if "." not in p.stem)  # not the *.example.yml
        hint = " (run `invoke sandbox.up` first)" if env == DEFAULT_ENV else ""
        raise ConfigError(
            f"--env: unknown environment {env!r}: {rel(path)} does not exist{hint}; known: {', '.join(known) or 'none'}"
        )
    where = rel(path)
    data = check_mapping(load_yaml(path), where, INVENTORY_KEYS)
    defaults = check_mapping(data.get("defaults"), f"{where}: defaults", DEFAULTS_KEYS)
    known_hosts_name = data.get("known_hosts", "known_hosts")
    if not isinstance(known_hosts_name, str) or not validation.NAME_PATTERN.match(known_hosts_name.replace(".", "-")):
        raise ConfigError(f"{where}: known_hosts: a file name inside inventory/, got {known_hosts_name!r}")

    hosts_data = check_mapping(data.get("hosts"), f"{where}: hosts")
    if not hosts_data:
        raise ConfigError(f"{where}: hosts: no hosts defined")
    groups_data = check_mapping(data.get("groups"), f"{where}: groups")

    groups: dict[str, list[str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    for group, spec in groups_data.items():
        validation.name(group, f"{where}: groups")
        if group == "all":
            raise ConfigError(f"{where}: groups.all: 'all' is reserved for every host")
        spec = check_mapping(spec, f"{where}: groups.{group}", GROUP_KEYS)
        members = spec.get("hosts") or []
        if not isinstance(members, list):
            raise ConfigError(f"{where}: groups.{group}.hosts: expected a list of host names")
        for member in members:
            if not isinstance(member, str) or member not in hosts_data:
                raise ConfigError(f"{where}: groups.{group}.hosts: unknown host {member!r}")
        groups[group] = list(members)
        group_vars[group] = check_vars(spec.get("vars"), f"{where}: groups.{group}.vars")

    hosts: dict[str, Host] = {}
    host_vars: dict[str, dict[str, Any]] = {}
    for name, spec in hosts_data.items():
        validation.name(name, f"{where}: hosts")
        key = f"{where}: hosts.{name}"
        spec = check_mapping(spec, key, HOST_KEYS)
        merged = {**defaults, **spec}
        if "address" not in spec:
            raise ConfigError(f"{key}.address: missing")
        ssh_key = merged.get("ssh_key")
        key_path = None
        if ssh_key is not None:
            validation.local_path(ssh_key, f"{key}.ssh_key" if "ssh_key" in spec else f"{where}: defaults.ssh_key")
            key_path = (path.parent / os.path.expanduser(ssh_key)).resolve()
        hosts[name] = Host(
            name=name,
            address=validation.address(spec["address"], f"{key}.address"),
            port=validation.port(
                merged.get("port", 22), f"{key}.port" if "port" in spec else f"{where}: defaults.port"
            ),
            user=validation.user(
                merged.get("user", "root"), f"{key}.user" if "user" in spec else f"{where}: defaults.user"
            ),
            ssh_key=key_path,
            groups=tuple(g for g, members in groups.items() if name in members),
            connect_timeout=_seconds(merged, spec, "connect_timeout", 10, key, where),
            command_timeout=_seconds(merged, spec, "command_timeout", 900, key, where),
            stall_timeout=_seconds(merged, spec, "stall_timeout", 30, key, where),
            admin_user=None
            if merged.get("admin_user") is None
            else validation.user(
                merged["admin_user"], f"{key}.admin_user" if "admin_user" in spec else f"{where}: defaults.admin_user"
            ),
            bootstrap_user=None
            if merged.get("bootstrap_user") is None
            else validation.user(
                merged["bootstrap_user"],
                f"{key}.bootstrap_user" if "bootstrap_user" in spec else f"{where}: defaults.bootstrap_user",
            ),
            private_address=None
            if spec.get("private_address") is None
            else validation.ip_address(spec["private_address"], f"{key}.private_address"),
        )
        host_vars[name] = check_vars(spec.get("vars"), f"{key}.vars")

    return Inventory(
        env=env,
        path=path,
        known_hosts=directory / known_hosts_name,
        hosts=hosts,
        groups=groups,
        vars=check_vars(data.get("vars"), f"{where}: vars"),
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
        check_vars({key: None}, "--var")
        result[key] = yaml_value(value) if value else ""
    return result


# What YAML 1.1 (PyYAML, Ansible) reads as booleans and YAML 1.2 as words.
YAML11_BOOLEANS = {"yes", "no", "on", "off", "y", "n"}


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
    secrets: SecretLookup | None = None

    def for_roles(self, roles: list[RoleDefaults], host: Host | None = None) -> "HostVars":
        """The vars `host` (this one by default) has with `roles`' defaults, keeping this run's --var values
        and secrets: for a role that reads another role's settings (the balancer, nginx's site name)."""
        cli = {key: value for key, value in self.values.items() if self.origins.get(key) == "--var"}
        return self.inventory.vars_for(host or self.host, roles, cli, self.secrets)

    def where(self, key: str) -> str:
        origin = self.origins.get(key, "vars")
        if origin == "--var":
            return f"--var {key}"
        return f"{origin} {key}" if origin.endswith(":") else f"{origin}.{key}"

    def __getitem__(self, key: str) -> Any:
        if key not in self.values:
            raise ConfigError(
                f"{self.host.name}: variable {key!r} is not defined (no role default, inventory or --var)"
            )
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def path(self, key: str) -> str:
        return validation.absolute_path(self[key], self.where(key))

    def user(self, key: str) -> str:
        return validation.user(self[key], self.where(key))

    def string(self, key: str, pattern: str | None = None) -> str:
        value = self[key]
        if not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: expected a string, got {value!r}")
        if pattern and not re.fullmatch(pattern, value):
            raise ConfigError(f"{self.where(key)}: {value!r} does not match {pattern}")
        return value

    def integer(self, key: str, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self[key]
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum) \
                or (maximum is not None and value > maximum):
            bound = (f" from {minimum} to {maximum}" if minimum is not None and maximum is not None
                     else f" >= {minimum}" if minimum is not None else f" <= {maximum}" if maximum is not None else "")
            raise ConfigError(f"{self.where(key)}: expected a whole number{bound}, got {value!r}")
        return value

    def secret(self, key: str) -> Secret:
        """The env's secret `key` as a Secret (masked everywhere), from secrets/<env>.env.age.

        Example: PostgresRole("together_pray", vars.secret("DB_PASSWORD"))
        """
        env = self.values["vigil_env"]
        values = self.secrets() if self.secrets else {}
        if key not in values:
            raise MissingSecretError(
                f"secret {key} is missing from the {env} secrets (invoke secrets.edit --env={env})"
            )
        return Secret(values[key])

    def private_address(self) -> str:
        """This host's address on the private network: `private_address`, else `address` if it is an IP."""
        return _private_address(self.host, self.inventory)

    def address_of(self, name: str) -> str:
        """The private address of inventory host `name`: what this host dials to reach it."""
        return _private_address(self.inventory.hosts[name], self.inventory)

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
            hint = " (yes, no, on and off are text in YAML 1.2)" if str(value).lower() in YAML11_BOOLEANS else ""
            raise ConfigError(f"{self.where(key)}: expected true or false, got {value!r}{hint}")
        return value

    def string_list(self, key: str, pattern: str | None = None) -> list[str]:
        value = self[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where(key)}: expected a list of strings, got {value!r}")
        for item in value:
            if pattern and not re.fullmatch(pattern, item):
                raise ConfigError(f"{self.where(key)}: {item!r} does not match {pattern}")
        return value
