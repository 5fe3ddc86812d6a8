"""The runbook engine: runs a runbook's steps in order over an injected `Library` (the hosts, or a fake
in the unit tests), and decides what each step's outcome means for the rest of the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from vigil.incident.runbooks import Runbook, Step


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
    """What runs a step on the env's hosts (vigil.incident.library.HostLibrary; a fake in the unit tests)."""

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
        unmet = [
            f"{ref} {wanted}" for ref, wanted in step.when if by_id.get(ref) is None or by_id[ref].outcome != wanted
        ]
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
