"""Runbooks: incident procedures as data (playbooks/runbooks/<name>.yml), checked whole before anything runs.

A runbook is an ordered list of steps, each a check (read-only: http, systemd,
disk, database, certificate, port) or an action (restart, rollback,
maintenance, collect_logs, free_disk, backup, notify, renew_certificate) from a
fixed library. A step may run only `when` earlier checks passed or failed, act
only `on` the hosts an earlier check found failing, ask before it acts
(`confirm:`), and a check marked `resolves: true` that passes ends the run:
the incident is over. Running a runbook again after it resolved therefore
stops at its first check, which is what makes a second run change nothing.

This module parses and validates; vigil.incident.engine sequences the steps
and vigil.incident.checks and .actions do the work on hosts. The engine is
pure over an injected `Library`, so its rules are tested without hosts.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vigil.core.errors import ConfigError
from vigil.core.paths import REPO_ROOT
from vigil.core.yaml_loader import YamlDocument, parse_yaml
from vigil.incident.services import APP_SERVICES, SERVICES

RUNBOOKS = REPO_ROOT / "playbooks" / "runbooks"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
STEP_ID = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")
CONDITION = re.compile(r"^([a-z][a-z0-9_-]{0,40}) (passed|failed)$")

# Where free_disk looks: each place is a kind of file a host can always do without.
FREE_PLACES = ("journal", "apt-cache", "rotated-logs", "old-tmp", "core-dumps")
HOST_GROUPS = ("all", "web", "database")
# The disk check's filesystems: those holding any of these that exist on a host. The last is the backup
# host's pgBackRest repository (roles/pgbackrest's pgbackrest_repository_path), as full a stop as any.
DISK_PATHS = ("/", "/var", "/var/log", "/var/lib/postgresql", "/srv", "/tmp", "/var/lib/pgbackrest/repository")


# --- what each step kind takes: key -> validator(value, where) -> cleaned value ----------------------


def _services(allowed: tuple[str, ...]) -> Callable[[Any, str], list[str]]:
    def check(value, where):
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or any(item not in allowed for item in values):
            raise ConfigError(f"{where}: {value!r} is not a list of {', '.join(allowed)}")
        return list(dict.fromkeys(values))
    return check


def _integer(low: int, high: int) -> Callable[[Any, str], int]:
    def check(value, where):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{where}: {value!r} is not a whole number from {low} to {high}")
        return value
    return check


def _one_of(*allowed) -> Callable[[Any, str], Any]:
    def check(value, where):
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    return check


def _text(pattern: str, what: str) -> Callable[[Any, str], str]:
    def check(value, where):
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise ConfigError(f"{where}: {value!r} is not {what}")
        return value
    return check


def _paths(value, where):
    if (
        not isinstance(value, list)
        or not value
        or not all(
            isinstance(path, str) and re.fullmatch(r"/[A-Za-z0-9._/-]{0,200}", path) and ".." not in path
            for path in value
        )
    ):
        raise ConfigError(f"{where}: {value!r} is not a list of absolute paths")
    return value


def _places(value, where):
    return _services(FREE_PLACES)(value, where)


_SINCE = _text(r"[A-Za-z0-9 :.+-]{1,40}", "a time journalctl reads (\"30 min ago\")")
PLACEHOLDERS = ("env", "incident", "runbook")


def _message(value, where):
    _text(r"[^\x00-\x08\x0b-\x1f]{1,500}", "a message of at most 500 characters")(value, where)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as error:
        raise ConfigError(f"{where}: {error} (write {{{{ and }}}} for a brace)") from None
    unknown = [name for name in names if name not in PLACEHOLDERS]
    if unknown:
        known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        raise ConfigError(f"{where}: unknown placeholder {{{unknown[0]}}} (there are {known})")
    return value

# Per kind: its keys (besides the common ones) with their validators and defaults.
CHECKS: dict[str, dict[str, tuple[Callable, Any]]] = {
    "http": {"services": (_services(APP_SERVICES), list(APP_SERVICES)), "wait": (_integer(0, 600), 0)},
    "systemd": {"services": (_services(SERVICES), list(SERVICES)), "wait": (_integer(0, 600), 0)},
    "disk": {
        "max_used": (_integer(1, 99), 90),
        "paths": (_paths, list(DISK_PATHS)),
        "hosts": (_one_of(*HOST_GROUPS), "all"),
        "wait": (_integer(0, 600), 0),
    },
    "database": {"wait": (_integer(0, 600), 0)},
    "certificate": {"min_days": (_integer(1, 365), 21)},
    "port": {
        "port": (_integer(1, 65535), None),
        "hosts": (_one_of(*HOST_GROUPS), "all"),
        "listening": (_one_of(True, False), True),
    },
    "cluster": {"require": (_one_of("leader", "healthy"), "healthy"), "wait": (_integer(0, 600), 0)},
}
ACTIONS: dict[str, dict[str, tuple[Callable, Any]]] = {
    "restart": {"services": (_services(SERVICES), None), "on": (None, None)},
    "rollback": {"services": (_services(APP_SERVICES), None), "on": (None, None)},
    "maintenance": {"state": (_one_of("on", "off"), None)},
    "collect_logs": {"services": (_services(SERVICES), list(SERVICES)), "since": (_SINCE, "1 hour ago")},
    "free_disk": {"places": (_places, list(FREE_PLACES)), "on": (None, None)},
    "backup": {"label": (_text(r"[a-z0-9][a-z0-9-]{0,31}", "a label of lowercase letters, digits and -"), "incident")},
    "notify": {"message": (_message, None)},
    "renew_certificate": {"on": (None, None)},
    "failover": {},
}
COMMON = {"id", "name", "when"}
CHECK_ONLY, ACTION_ONLY = {"resolves"}, {"confirm"}


@dataclass(frozen=True)
class Step:
    kind: str  # "check" or "action"
    type: str  # http, restart...
    id: str
    name: str
    line: int
    params: dict[str, Any]
    when: tuple[tuple[str, str], ...] = ()  # (step id, passed|failed), all must hold
    on: str | None = None  # act only on what this check found failing
    confirm: str = ""
    resolves: bool = False

    def describe(self) -> str:
        if self.name:
            return self.name
        shown = " ".join(_brief(value) for value in self.params.values() if value not in (None, 0, []))
        return f"{self.type} {shown}".strip()


def _brief(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class Runbook:
    name: str
    path: Path
    description: str
    steps: tuple[Step, ...]


def parse(text: str, path: Path) -> Runbook:
    """A runbook from its YAML text; ConfigError naming path:line for anything unknown or out of order."""
    name = path.stem
    if not NAME.match(name):
        raise ConfigError(f"{path}: {name!r} is not a runbook name (lowercase letters, digits and -)")
    document = parse_yaml(text, str(path))
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with `description` and `steps`")
    unknown = sorted(str(key) for key in set(data) - {"description", "steps"})
    if unknown:
        raise ConfigError(
            f"{document.at(unknown[0])}: unknown key {unknown[0]!r} (a runbook has description and steps)"
        )
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise ConfigError(f"{document.at('steps')}: steps: expected a non-empty list of steps")
    steps: list[Step] = []
    for index, step_data in enumerate(steps_data):
        if not isinstance(step_data, dict):
            raise ConfigError(f"{document.at('steps')}: step {index + 1}: expected a mapping (check: or action:)")
        steps.append(_step(step_data, index + 1, document, steps))
    description = data.get("description", "")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"{document.at('description')}: description: say in one line what this runbook is for")
    if not any(step.resolves for step in steps):
        raise ConfigError(f"{path}: no check says `resolves: true`; a runbook must know when the incident is over")
    return Runbook(name, path, " ".join(description.split()), tuple(steps))


def _step(data: dict, number: int, document: YamlDocument, earlier: list[Step]) -> Step:
    path, line = document.where, document.line("steps", number - 1)

    def at(key: str) -> str:
        """file:line of this step's `key`, or of the step where it lacks the key."""
        return f"{path}:{document.line('steps', number - 1, key) if key in data else line}"

    kinds = [kind for kind in ("check", "action") if kind in data]
    if len(kinds) != 1:
        raise ConfigError(f"{path}:{line}: step {number}: give exactly one of check: or action:")
    kind = kinds[0]
    library = CHECKS if kind == "check" else ACTIONS
    step_type = data[kind]
    if not isinstance(step_type, str) or step_type not in library:
        raise ConfigError(f"{at(kind)}: unknown {kind} {step_type!r} (the {kind}s are: {', '.join(library)})")
    spec = library[step_type]
    allowed = COMMON | {kind} | set(spec) | (CHECK_ONLY if kind == "check" else ACTION_ONLY)
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{at(key)}: {kind} {step_type} takes no {key!r} "
                              f"(it takes {', '.join(sorted(allowed - {kind}))})")
    step_id = data.get("id", f"step{number}")
    if not isinstance(step_id, str) or not STEP_ID.match(step_id):
        raise ConfigError(f"{at('id')}: id {step_id!r} is not lowercase letters, digits, _ and -")
    if any(step.id == step_id for step in earlier):
        raise ConfigError(f"{at('id')}: id {step_id!r} is used by an earlier step")
    checks = {step.id: step for step in earlier if step.kind == "check"}

    def earlier_check(reference: str, key: str) -> str:
        if reference in checks:
            return reference
        what = "an action" if reference in {step.id for step in earlier} else "not an earlier step"
        raise ConfigError(f"{at(key)}: {key}: {reference!r} is {what}; it must name an earlier check "
                          f"(earlier checks: {', '.join(checks) or 'none'})")

    params = {}
    for key, (validate, default) in spec.items():
        if key == "on":
            continue
        if key in data:
            params[key] = validate(data[key], f"{at(key)}: {key}")
        elif default is None and not (key == "services" and step_type in ("restart", "rollback")):
            raise ConfigError(f"{path}:{line}: {kind} {step_type} needs {key!r}")
        else:
            params[key] = default  # services None for restart and rollback: whatever `on` found failing
    when = data.get("when", [])
    conditions = []
    for condition in ([when] if isinstance(when, str) else when if isinstance(when, list) else [None]):
        match = CONDITION.match(condition) if isinstance(condition, str) else None
        if not match:
            raise ConfigError(f"{at('when')}: when: {condition!r} is not '<check id> passed' or '<check id> failed'")
        conditions.append((earlier_check(match.group(1), "when"), match.group(2)))
    on = data.get("on")
    if on is not None:
        on = earlier_check(str(on), "on")
        wanted = {"restart": ("http", "systemd"), "rollback": ("http", "systemd"), "free_disk": ("disk",),
                  "renew_certificate": ("certificate",)}[step_type]
        if checks[on].type not in wanted:
            raise ConfigError(f"{at('on')}: on: {on!r} is a {checks[on].type} check; {step_type} acts on what a "
                              f"{' or '.join(wanted)} check found")
    if step_type in ("restart", "rollback") and on is None and "services" not in data:
        raise ConfigError(f"{path}:{line}: action {step_type} needs services:, on:, or both")
    confirm = data.get("confirm", "")
    if not isinstance(confirm, str):
        raise ConfigError(f"{at('confirm')}: confirm: expected the question to ask")
    resolves = data.get("resolves", False)
    if not isinstance(resolves, bool):
        raise ConfigError(f"{at('resolves')}: resolves: expected true or false")
    name = data.get("name", "")
    if not isinstance(name, str):
        raise ConfigError(f"{at('name')}: name: expected text")
    return Step(kind, step_type, step_id, name, line, params, tuple(conditions), on, confirm, resolves)


def load(name: str, directory: Path = RUNBOOKS) -> Runbook:
    if not NAME.match(name or ""):
        raise ConfigError(f"runbook {name!r} is not a runbook name (invoke incident.list shows them)")
    path = directory / f"{name}.yml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yml"))) or "none"
        raise ConfigError(f"no runbook {name!r} in {directory} (runbooks: {known})")
    return parse(path.read_text(), path)


def load_all(directory: Path = RUNBOOKS) -> list[Runbook]:
    return [parse(path.read_text(), path) for path in sorted(directory.glob("*.yml"))]
