"""`env.new`: a new environment's inventory, pinned host keys and secrets, from the servers a team has.

Everything is worked out before anything is written: the hosts and their groups, the inventory (checked
by the same loader every task uses), each host's key (fetched and confirmed by a person, as
provision.trust does). Only then are the files written, and a failure on the way removes what this run
wrote, so an env either exists whole or not at all.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vigil.core import validation
from vigil.core.connectors.ssh import public_key_of
from vigil.core.connectors.trust import TrustPlan, apply_trust, plan_trust
from vigil.core.errors import ConfigError
from vigil.core.inventory import Host, load_inventory
from vigil.core.paths import REPO_ROOT, rel
from vigil.vault.paths import SANDBOX, SecretsPaths
from vigil.vault.schema import Schema
from vigil.vault.store import init_env, load, save

# A host's group from its name's first letters (web1, db1, backup1, monitor1): the names the docs use.
GROUP_PREFIXES = {"web": "web", "app": "web", "db": "db", "database": "db", "pg": "db", "backup": "backup",
                  "monitor": "monitor", "mon": "monitor"}
GROUPS = ("web", "db", "backup", "monitor")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(frozen=True)
class NewHost:
    name: str
    address: str
    groups: tuple[str, ...]
    private_address: str | None = None


@dataclass
class EnvRequest:
    """What `env.new` was asked for: the env's name, its hosts, the site's domain and contact, the SSH key."""

    env: str
    hosts: list[NewHost]
    ssh_key: Path
    domain: str | None = None
    email: str | None = None

    @property
    def layout(self) -> dict[str, list[str]]:
        """Group -> its hosts; without a db host, the first web host runs the database too (one server)."""
        groups = {group: [host.name for host in self.hosts if group in host.groups] for group in GROUPS}
        if not groups["db"]:
            groups["db"] = groups["web"][:1]
        return {group: members for group, members in groups.items() if members}


@dataclass
class Created:
    inventory: Path
    known_hosts: Path
    secrets: Path
    identity: Path
    public_key: str
    generated: list[str]
    to_set: list[str] = field(default_factory=list)


def parse_hosts(host_flags: list[str], group_flags: list[str], private_flags: list[str]) -> list[NewHost]:
    """--host NAME=ADDRESS (repeatable), --group NAME:GROUP and --private NAME=ADDRESS into hosts.

    A host's group comes from --group, else from its name (web1: web, db1: db, backup1: backup).
    Example: parse_hosts(["web1=203.0.113.10"], [], []) -> [NewHost("web1", "203.0.113.10", ("web",))]
    """
    if not host_flags:
        raise ConfigError("--host: give at least one, NAME=ADDRESS (--host web1=203.0.113.10)")
    addresses: dict[str, str] = {}
    for flag in host_flags:
        name, _, address = flag.partition("=")
        validation.name(name, f"--host {flag}")
        if name in addresses:
            raise ConfigError(f"--host {flag}: {name} is given twice")
        addresses[name] = validation.address(address, f"--host {flag}")
    named_groups: dict[str, list[str]] = {}
    for flag in group_flags:
        name, _, group = flag.partition(":")
        if name not in addresses:
            raise ConfigError(f"--group {flag}: {name!r} is not one of the --host names")
        if group not in GROUPS:
            raise ConfigError(f"--group {flag}: unknown group {group!r}; choose {', '.join(GROUPS)}")
        named_groups.setdefault(name, []).append(group)
    privates: dict[str, str] = {}
    for flag in private_flags:
        name, _, address = flag.partition("=")
        if name not in addresses:
            raise ConfigError(f"--private {flag}: {name!r} is not one of the --host names")
        privates[name] = validation.ip_address(address, f"--private {flag}")
    hosts = []
    for name, address in addresses.items():
        groups = named_groups.get(name) or [group_of(name)]
        hosts.append(NewHost(name, address, tuple(dict.fromkeys(groups)), privates.get(name)))
    if not any("web" in host.groups for host in hosts):
        raise ConfigError("--host: no web host (name one web1, or give --group NAME:web): the app needs one")
    return hosts


def group_of(name: str) -> str:
    prefix = re.match(r"[A-Za-z]+", name)
    group = GROUP_PREFIXES.get(prefix.group(0).lower()) if prefix else None
    if group is None:
        raise ConfigError(f"--host {name}: cannot tell its group from its name; add --group {name}:web "
                          f"(or db, backup, monitor)")
    return group


def render_inventory(request: EnvRequest, inventory_dir: Path, public_key: str) -> str:
    """inventory/<env>.yml for `request`, commented for the person who edits it next."""
    env, layout = request.env, request.layout
    # The web group's vars, set where given, shown commented where not.
    site = [("nginx_server_name", request.domain, "app.example.com", "the site's domain; DNS points it here"),
            ("nginx_certbot_email", request.email, "ops@example.com", "Let's Encrypt writes here about expiry")]
    web_vars = [f"      {key}: {value}   # {why}" if value else f"      # {key}: {example}   # {why}"
                for key, value, example, why in site]
    lines = [
        f"# The {env} environment, written by `invoke env.new {env}`. Yours to edit: docs/inventory.md explains",
        "# each key, roles/<role>/defaults.yml each variable (the docs/moving-in.md walk-through uses this file).",
        f"known_hosts: {env}.known_hosts   # host keys pinned by env.new; provision.trust re-pins one",
        "defaults:",
        "  user: deploy            # deploys log in as deploy; its sudo covers deploys only (roles/users)",
        "  admin_user: ops         # provisioning and secrets.push log in as ops, root through sudo",
        "  bootstrap_user: root    # a fresh server knows only root: the first provision.server logs in as it",
        "  port: 22",
        f"  ssh_key: {shown_key_path(request.ssh_key, inventory_dir)}   # relative paths: to this file",
        "vars:",
        "  # Who may log in as ops (administers the hosts) and as deploy (deploys): one OpenSSH public key",
        "  # line each. The first is the key above; add your team's, and a deploy key for CI.",
        f"  users_admin_authorized_keys: [{json.dumps(public_key)}]",
        f"  users_deploy_authorized_keys: [{json.dumps(public_key)}]",
        "groups:",
    ]
    comments = {"web": "the app: nginx, the backend and the frontend",
                "db": ("PostgreSQL: on the web host (one server)" if layout["db"] == layout["web"][:1]
                       and len(layout["web"]) == 1 else "PostgreSQL"),
                "backup": "pgBackRest's repository: the database's backups and WAL (docs/backup.md)",
                "monitor": "Prometheus and Alertmanager watching the others (docs/monitoring.md)"}
    for group, members in layout.items():
        lines.append(f"  {group}:   # {comments[group]}")
        lines.append(f"    hosts: [{', '.join(members)}]")
        if group == "web":
            lines.append("    vars:" if any(value for _, value, _, _ in site) else "    # vars:")
            lines += web_vars
    lines.append("hosts:")
    for host in request.hosts:
        private = f", private_address: {host.private_address}" if host.private_address else ""
        lines.append(f"  {host.name}: {{address: {host.address}{private}}}")
    return "\n".join(lines) + "\n"


def shown_key_path(key: Path, inventory_dir: Path) -> str:
    """The key as the inventory names it: ~/... under the home directory, relative inside the repository
    (a key kept beside it), else absolute."""
    key = key.expanduser().resolve()
    home = Path.home().resolve()
    if key.is_relative_to(home):
        return "~/" + str(key.relative_to(home))
    if key.is_relative_to(REPO_ROOT):
        return os.path.relpath(key, inventory_dir.resolve())
    return str(key)


def check_request(request: EnvRequest, inventory_dir: Path, paths: SecretsPaths) -> None:
    """Refuse a name that is taken (any file of it), a missing key, a bad domain or address."""
    validation.name(request.env, "env.new NAME")
    if request.env == SANDBOX:
        raise ConfigError("env.new: the sandbox is written by `invoke sandbox.up`; choose another name")
    taken = [path for path in (inventory_dir / f"{request.env}.yml", inventory_dir / f"{request.env}.known_hosts",
                               paths.encrypted(request.env), paths.recipients(request.env)) if path.exists()]
    if taken:
        raise ConfigError(f"env.new: {request.env} exists already ({', '.join(rel(path) for path in taken)}); "
                          "nothing changed (edit it, or choose another name)")
    if not request.ssh_key.expanduser().is_file():
        raise ConfigError(f"--ssh-key: {request.ssh_key} does not exist (ssh-keygen -t ed25519 -f {request.ssh_key})")
    if request.domain is not None and (not validation.HOSTNAME_PATTERN.match(request.domain)
                                       or "." not in request.domain):
        raise ConfigError(f"--domain: {request.domain!r} is not a domain name")
    if request.email is not None and not EMAIL.fullmatch(request.email):
        raise ConfigError(f"--email: {request.email!r} is not an email address")


def planned_hosts(request: EnvRequest, text: str, inventory_dir: Path) -> tuple[list[Host], Path]:
    """The hosts as every task will read them: `text` loaded by the inventory loader from a scratch copy."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        (scratch_dir / f"{request.env}.yml").write_text(text)
        inventory = load_inventory(request.env, scratch_dir)
        hosts = list(inventory.hosts.values())
    return hosts, inventory_dir / f"{request.env}.known_hosts"


def public_values(request: EnvRequest) -> dict[str, str]:
    """The secrets a domain decides: the backend's CORS origin and the frontend's API address."""
    values = {"NODE_ENV": "production"}
    if request.domain:
        values.update({"FRONTEND_URL": f"https://{request.domain}",
                       "NEXT_PUBLIC_API_URL": f"https://{request.domain}/api"})
    return values


def create_env(request: EnvRequest, inventory_dir: Path, paths: SecretsPaths, schema: Schema, label: str,
               confirm: Callable[[TrustPlan, Path], bool],
               scan: Callable[[Host, Path], TrustPlan] = plan_trust) -> Created:
    """Write `request`'s env: inventory, pinned keys (each confirmed), age key and secrets. All or nothing.

    confirm: given each host's key (TrustPlan) and the known_hosts file, says whether to pin it; one refusal
        writes nothing.
    scan: fetches a host's key (provision.trust's own).
    """
    check_request(request, inventory_dir, paths)
    public_key = public_key_of(request.ssh_key.expanduser())
    text = render_inventory(request, inventory_dir, public_key)
    hosts, known_hosts = planned_hosts(request, text, inventory_dir)
    plans = [scan(host, known_hosts) for host in hosts]
    refused = [plan.host.name for plan in plans if not confirm(plan, known_hosts)]
    if refused:
        raise ConfigError(f"env.new: the key of {', '.join(refused)} was not accepted; nothing was written "
                          f"(compare it with the provider's console, then run env.new again)")
    written: list[Path] = []
    try:
        inventory_dir.mkdir(parents=True, exist_ok=True)
        inventory_file = inventory_dir / f"{request.env}.yml"
        inventory_file.write_text(text)
        written.append(inventory_file)
        written.append(known_hosts)
        for plan in plans:
            apply_trust(plan, known_hosts)
        written += [paths.encrypted(request.env), paths.recipients(request.env)]
        done = init_env(request.env, paths, schema, label)
        values = load(request.env, paths, schema)
        generated = sorted(values)
        values.update(public_values(request))
        save(request.env, values, schema, paths, validate=False)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    to_set = schema.problems(request.env, values)
    return Created(inventory_file, known_hosts, paths.encrypted(request.env), done["identity"], done["public"],
                   generated, to_set)
