"""Runbooks: incident procedures as data (playbooks/runbooks/<name>.yml), checked whole before anything runs.

A runbook is an ordered list of steps, each a check (read-only: http, systemd,
disk, database, certificate, port) or an action (restart, rollback,
maintenance, collect_logs, free_disk, backup, notify, renew_certificate) from a
fixed library. A step may run only `when` earlier checks passed or failed, act
only `on` the hosts an earlier check found failing, ask before it acts
(`confirm:`), and a check marked `resolves: true` that passes ends the run:
the incident is over. Running a runbook again after it resolved therefore
stops at its first check, which is what makes a second run change nothing.

This module parses, validates and sequences; vigil.incident_steps does the
work on hosts. The engine is pure over an injected `Library`, so its rules are
tested without hosts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import yaml

from vigil.errors import ConfigError

RUNBOOKS = Path(__file__).resolve().parent.parent / "playbooks" / "runbooks"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
STEP_ID = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")
CONDITION = re.compile(r"^([a-z][a-z0-9_-]{0,40}) (passed|failed)$")

SERVICES = ("backend", "frontend", "nginx", "postgresql")
APP_SERVICES = ("backend", "frontend")
# Where free_disk looks: each place is a kind of file a host can always do without.
FREE_PLACES = ("journal", "apt-cache", "rotated-logs", "old-tmp", "core-dumps", "old-backups")
HOST_GROUPS = ("all", "web", "database")
DISK_PATHS = ("/", "/var", "/var/log", "/var/lib/postgresql", "/var/backups/vigil", "/srv", "/tmp")


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
    if not isinstance(value, list) or not value or not all(
            isinstance(path, str) and re.fullmatch(r"/[A-Za-z0-9._/-]{0,200}", path) and ".." not in path for path in value):
        raise ConfigError(f"{where}: {value!r} is not a list of absolute paths")
    return value


def _places(value, where):
    return _services(FREE_PLACES)(value, where)


_SINCE = _text(r"[A-Za-z0-9 :.+-]{1,40}", "a time journalctl reads (\"30 min ago\")")
PLACEHOLDERS = ("env", "incident", "runbook")


def _message(value, where):
    import string

    _text(r"[^\x00-\x08\x0b-\x1f]{1,500}", "a message of at most 500 characters")(value, where)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as error:
        raise ConfigError(f"{where}: {error} (write {{{{ and }}}} for a brace)") from None
    unknown = [name for name in names if name not in PLACEHOLDERS]
    if unknown:
        raise ConfigError(f"{where}: unknown placeholder {{{unknown[0]}}} (there are {', '.join('{' + n + '}' for n in PLACEHOLDERS)})")
    return value

# Per kind: its keys (besides the common ones) with their validators and defaults.
CHECKS: dict[str, dict[str, tuple[Callable, Any]]] = {
    "http": {"services": (_services(APP_SERVICES), list(APP_SERVICES)), "wait": (_integer(0, 600), 0)},
    "systemd": {"services": (_services(SERVICES), list(SERVICES)), "wait": (_integer(0, 600), 0)},
    "disk": {"max_used": (_integer(1, 99), 90), "paths": (_paths, list(DISK_PATHS)), "hosts": (_one_of(*HOST_GROUPS), "all"),
             "wait": (_integer(0, 600), 0)},
    "database": {"wait": (_integer(0, 600), 0)},
    "certificate": {"min_days": (_integer(1, 365), 21)},
    "port": {"port": (_integer(1, 65535), None), "hosts": (_one_of(*HOST_GROUPS), "all"),
             "listening": (_one_of(True, False), True)},
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
        return self.name or f"{self.type} {' '.join(_brief(value) for value in self.params.values() if value not in (None, 0, []))}".strip()


def _brief(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class Runbook:
    name: str
    path: Path
    description: str
    steps: tuple[Step, ...]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that keeps each mapping's line (1-based) under a key no YAML text can write."""


def _construct_mapping(loader, node):
    keys = [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice", node.value[index][0].start_mark)
    mapping = loader.construct_mapping(node, deep=True)
    mapping[_LINE] = node.start_mark.line + 1
    mapping[_KEY_LINES] = {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}
    return mapping


_LINE, _KEY_LINES = object(), object()
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 booleans: only true and false. YAML 1.1 would read `on:` (a step's key) and `state: on` as booleans.
_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_LineLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse(text: str, path: Path) -> Runbook:
    """A runbook from its YAML text; ConfigError naming path:line for anything unknown or out of order."""
    name = path.stem
    if not NAME.match(name):
        raise ConfigError(f"{path}: {name!r} is not a runbook name (lowercase letters, digits and -)")
    try:
        document = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(f"{path}:{mark.line + 1 if mark else '?'}: not valid YAML: "
                          f"{getattr(error, 'problem', None) or error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping with `description` and `steps`")
    lines = document[_KEY_LINES]
    unknown = sorted(set(lines) - {"description", "steps"})
    if unknown:
        raise ConfigError(f"{path}:{lines[unknown[0]]}: unknown key {unknown[0]!r} (a runbook has description and steps)")
    steps_data = document.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise ConfigError(f"{path}:{lines.get('steps', 1)}: steps: expected a non-empty list of steps")
    steps: list[Step] = []
    for number, data in enumerate(steps_data, start=1):
        if not isinstance(data, dict):
            raise ConfigError(f"{path}:{lines['steps']}: step {number}: expected a mapping (check: or action:)")
        steps.append(_step(data, number, path, steps))
    description = document.get("description", "")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"{path}:{lines.get('description', 1)}: description: say in one line what this runbook is for")
    if not any(step.resolves for step in steps):
        raise ConfigError(f"{path}: no check says `resolves: true`; a runbook must know when the incident is over")
    return Runbook(name, path, " ".join(description.split()), tuple(steps))


def _step(data: dict, number: int, path: Path, earlier: list[Step]) -> Step:
    line, key_lines = data[_LINE], data[_KEY_LINES]
    at = lambda key: f"{path}:{key_lines.get(key, line)}"  # noqa: E731
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
    for key in key_lines:
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


# --- running: the engine sequences, the library acts ------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing a check looked at: a service on a host, a filesystem, a certificate."""

    host: str
    target: str
    ok: bool
    detail: str


@dataclass
class StepResult:
    step: Step
    outcome: str  # passed, failed (checks); done, failed, would run, declined (actions); skipped
    detail: str = ""
    findings: list[Finding] = field(default_factory=list)

    @property
    def failing(self) -> list[Finding]:
        return [finding for finding in self.findings if not finding.ok]


class Library(Protocol):
    """What runs a step on the env's hosts (vigil.incident_steps.HostLibrary; a fake in the unit tests)."""

    def check(self, step: Step, attempt: int) -> list[Finding]: ...

    def act(self, step: Step, failing: list[Finding] | None) -> str: ...

    def sleep(self, seconds: float) -> None: ...

    def clock(self) -> float: ...


class ActionFailed(Exception):
    """An action did not do what it had to; the message says what and where."""


RESOLVED, UNRESOLVED, FAILED, DECLINED, CHECKED = "resolved", "unresolved", "failed", "declined", "checked"
RETRY_SECONDS = 3


@dataclass
class Run:
    runbook: Runbook
    check_only: bool
    results: list[StepResult] = field(default_factory=list)
    outcome: str = UNRESOLVED


def execute(runbook: Runbook, library: Library, confirm: Callable[[Step], bool], check_only: bool = False,
            record: Callable[[StepResult], None] = lambda result: None) -> Run:
    """Run the steps in order; `record` sees each result as it happens (the incident's timeline).

    confirm(step) -> True to go on with a step that asks; False declines it and ends the run.
    check_only: checks run (they only read), actions are reported as "would run".
    """
    run = Run(runbook, check_only)
    by_id: dict[str, StepResult] = {}

    def finish(result: StepResult) -> StepResult:
        by_id[result.step.id] = result
        run.results.append(result)
        record(result)
        return result

    for step in runbook.steps:
        unmet = [f"{ref} {wanted}" for ref, wanted in step.when if by_id.get(ref) is None or by_id[ref].outcome != wanted]
        if unmet:
            finish(StepResult(step, "skipped", f"only when {' and '.join(unmet)}"))
            continue
        if step.kind == "check":
            result = finish(_check(step, library, 0 if check_only else step.params.get("wait", 0)))
            if step.resolves and result.outcome == "passed":
                run.outcome = RESOLVED
                return run
            continue
        failing = None
        if step.on is not None:
            failing = by_id[step.on].failing if step.on in by_id else []
            if not failing:
                finish(StepResult(step, "skipped", f"{step.on} found nothing failing"))
                continue
        if check_only:
            finish(StepResult(step, "would run", ("asks first: " + step.confirm) if step.confirm else ""))
            continue
        if step.confirm and not confirm(step):
            finish(StepResult(step, "declined", step.confirm))
            run.outcome = DECLINED
            return run
        try:
            finish(StepResult(step, "done", library.act(step, failing)))
        except ActionFailed as error:
            finish(StepResult(step, "failed", str(error)))
            run.outcome = FAILED
            return run
    run.outcome = CHECKED if check_only else UNRESOLVED
    return run


def _check(step: Step, library: Library, wait: int) -> StepResult:
    """A check; with `wait`, retried every few seconds until it passes or `wait` seconds have gone by."""
    deadline = library.clock() + wait
    attempt = 0
    while True:
        findings = library.check(step, attempt)
        passed = bool(findings) and all(finding.ok for finding in findings)
        if passed or library.clock() + RETRY_SECONDS > deadline:
            break
        library.sleep(RETRY_SECONDS)
        attempt += 1
    if not findings:
        return StepResult(step, "failed", "nothing to check on the selected hosts", [])
    bad = [finding for finding in findings if not finding.ok]
    shown = bad or findings
    detail = "; ".join(f"{finding.host} {finding.target}: {finding.detail}" for finding in shown[:6])
    if len(shown) > 6:
        detail += f"; and {len(shown) - 6} more"
    return StepResult(step, "failed" if bad else "passed", detail, findings)
