"""Roles and playbooks: what onboarding applies, and to which hosts.

A role is a directory roles/<name>/ with defaults.yml (every key prefixed `<name>_`), tasks.py (a
`tasks(role, vars)` function returning operations, and optionally `handlers(role, vars)`), templates/
and files/. A playbook (playbooks/<name>.yml) lists plays: a name, the hosts pattern, the roles in order.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vigil.core import validation
from vigil.core.errors import ConfigError
from vigil.core.inventory import check_mapping, check_vars
from vigil.core.paths import REPO_ROOT, rel
from vigil.core.yaml_loader import load_yaml


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


def role_path(name: str, roles_dir: Path | None = None) -> Path:
    """The directory of role `name`, which must exist with its tasks.py; nothing of it is loaded (a reference
    to a role is checked without executing its tasks.py and reading its defaults)."""
    validation.name(name, "playbook roles")
    path = (roles_dir or REPO_ROOT / "roles") / name
    if not (path / "tasks.py").exists():
        raise ConfigError(f"{rel(path)}: role {name!r} not found (no tasks.py)")
    return path


# Roles loaded in this process, by their files' paths, times and sizes: a playbook names a role once per play
# and a task reads several playbooks, and each load parses YAML and runs tasks.py's imports again.
_LOADED: dict[tuple, Role] = {}


def load_role(name: str, roles_dir: Path | None = None) -> Role:
    """Load `roles/<name>`: defaults.yml (every key prefixed `<name>_`) and tasks.py; once per process
    while neither file changes (a Role is only read)."""
    path = role_path(name, roles_dir)
    key = (path, *map(_version, (path / "defaults.yml", path / "tasks.py")))
    if key not in _LOADED:
        _LOADED[key] = _read_role(name, path)
    return _LOADED[key]


def _version(file: Path) -> tuple[int, int]:
    """What tells one state of a file from the next: its modification time and size (none: 0, 0)."""
    try:
        found = file.stat()
    except FileNotFoundError:
        return 0, 0
    return found.st_mtime_ns, found.st_size


def _read_role(name: str, path: Path) -> Role:
    defaults_path = path / "defaults.yml"
    defaults = check_vars(load_yaml(defaults_path), rel(defaults_path)) if defaults_path.exists() else {}
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
    # The roles' names, in order (all a reader of who runs what needs: see load_playbook's names_only).
    role_names: tuple[str, ...] = ()
    # The playbook file it comes from, as errors name it ("playbooks/onboard.yml").
    source: str = "playbooks"

    def where(self) -> str:
        """How an error names this play's hosts pattern."""
        return f"{self.source}: {self.name!r} hosts"


def load_playbook(name: str, playbooks_dir: Path | None = None, roles_dir: Path | None = None,
                  names_only: bool = False) -> list[Play]:
    """Load `playbooks/<name>.yml`: a list of {name, hosts, roles}. names_only: each role is checked to exist
    and named (Play.role_names), not loaded (a task that only asks which hosts run a role starts faster)."""
    validation.name(name, "playbook")
    path = (playbooks_dir or REPO_ROOT / "playbooks") / f"{name}.yml"
    where = rel(path)
    data = load_yaml(path)
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: a playbook is a non-empty list of plays")
    plays = []
    for index, item in enumerate(data):
        spec = check_mapping(item, f"{where}: [{index}]", {"name", "hosts", "roles"})
        for key in ("name", "hosts", "roles"):
            if key not in spec:
                raise ConfigError(f"{where}: [{index}].{key}: missing")
        if not isinstance(spec["roles"], list):
            raise ConfigError(f"{where}: [{index}].roles: expected a list of role names")
        names = tuple(spec["roles"])
        if names_only:
            for role in names:
                role_path(role, roles_dir)  # it exists, nothing of it loaded
            roles = []
        else:
            roles = [load_role(role, roles_dir) for role in names]
        plays.append(Play(spec["name"], str(spec["hosts"]), roles, source=where, role_names=names))
    return plays
