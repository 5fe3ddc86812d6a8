"""Runner: plan (operations x hosts) -> apply (skipped in check mode) -> handlers -> recap.

Hosts run in parallel in a bounded pool, optionally in rolling batches
(`serial`). A host's failure stops that host only; every host's result is kept
and reported. Facts are read in one round trip per host and read again (once,
for all remaining operations) only after an operation changed something.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from vigil.core.commands import Command, cmd, script
from vigil.core.connectors import Transport
from vigil.core.errors import HostError, UnreachableError
from vigil.core.facts import Batch, Fact
from vigil.core.inventory import Host
from vigil.core.operations import ConfirmLogin, Operation, OperationError
from vigil.core.redaction import REDACTOR

PENDING_HANDLERS = "/var/lib/vigil/pending-handlers"
# What an operation's status means in the recap.
OK, CHANGED, FAILED, SKIPPED = "ok", "changed", "failed", "skipped"
STDERR_TAIL_LINES = 15


@dataclass(frozen=True)
class HostRefusal:
    """Why a host could not be planned (a secret it needs is missing): it fails without being contacted."""

    step: str
    reason: str


@dataclass
class HostPlan:
    """The operations and handlers one host gets, built before any host is contacted."""

    host: Host
    operations: list[Operation]
    handlers: dict[str, Operation] = field(default_factory=dict)
    refused: HostRefusal | None = None


@dataclass
class OperationResult:
    name: str
    status: str
    summary: str = ""
    commands: list[str] = field(default_factory=list)
    diff: str | None = None
    error: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "", [])}


@dataclass
class HostResult:
    host: str
    operations: list[OperationResult] = field(default_factory=list)
    unreachable: str = ""
    error: str = ""
    # Why the host was not started at all (a rolling run stopped before its batch).
    skipped: str = ""
    started: float = 0.0
    finished: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for op in self.operations if op.status == status)

    @property
    def failed(self) -> bool:
        return bool(self.error or self.unreachable)

    @property
    def failures(self) -> int:
        """Failed steps; a host that failed outside any step (its connection lost) counts one."""
        return self.count(FAILED) or (1 if self.error else 0)

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.error:
            return FAILED
        if self.skipped:
            return SKIPPED
        return CHANGED if self.count(CHANGED) else OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": self.status,
            "ok": self.count(OK),
            "changed": self.count(CHANGED),
            "failed": self.failures,
            "skipped": self.count(SKIPPED),
            "unreachable": self.unreachable,
            "error": self.error,
            "skipped_because": self.skipped,
            "started": self.started,
            "finished": self.finished,
            "seconds": round(self.finished - self.started, 3),
            "operations": [op.as_dict() for op in self.operations],
        }


@dataclass
class RunOptions:
    check: bool = False
    diff: bool = False
    forks: int = 10
    serial: int = 0
    # Opens fresh connections to the host: as the user this run logs in as, and as each of the
    # other users given (no sudo); returns why one failed, or None.
    login_check: Callable[[Host, Sequence[str]], str | None] | None = None
    # Where the host keeps handlers a failed run left pending (see run_host).
    pending_handlers: str = field(default_factory=lambda: PENDING_HANDLERS)


class FactCache:
    """Facts of one host, read in batches: one round trip for everything still unknown."""

    def __init__(self, transport: Transport, host: Host):
        self.transport = transport
        self.host = host
        self.values: dict[str, Any] = {}
        self.round_trips = 0

    def ensure(self, wanted: Sequence[Fact]) -> dict[str, Any]:
        missing = list({fact.key: fact for fact in wanted if fact.key not in self.values}.values())
        if missing:
            batch = Batch.of(missing)
            result = self.transport.run(_batch_command(batch.script))
            self.round_trips += 1
            try:
                outputs = batch.outputs(result.stdout)
            except ValueError as error:
                raise HostError(self.host.name, f"reading facts failed (exit {result.status}): {error}; "
                                                f"{_tail(result.stderr)}") from None
            for fact, (stdout, status) in zip(missing, outputs, strict=True):
                self.values[fact.key] = fact.parse(stdout, status)
        return self.values

    def invalidate(self) -> None:
        self.values.clear()


def _batch_command(body: str) -> Command:
    # The script travels on stdin: no argv length limit, and paths stay out of `ps`.
    return Command(("sh", "-s"), sudo=True, stdin=body.encode())


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(REDACTOR.redact(text).strip().splitlines()[-lines:])


Progress = Callable[[str, OperationResult], None]


def _apply(transport: Transport, host: Host, commands: Sequence[Command]) -> None:
    """Run `commands` in order; the first that fails raises, naming it with the tail of its output.

    A command that waits by design (its own timeout) gets that long, or the host's command_timeout if longer."""
    for command in commands:
        result = transport.run(command, timeout=max(command.timeout, host.command_timeout) if command.timeout
                               else None)
        if not result.ok:
            detail = _tail(result.stderr) or _tail(result.stdout)
            raise HostError(host.name, f"`{command.display(host.user)}` exited {result.status}: {detail}")


def _step(
    transport: Transport, host: Host, operation: Operation, known: dict[str, Any], options: RunOptions
) -> OperationResult:
    """Plan one operation and, unless in check mode, apply it. A failure is recorded, then raised."""
    began = time.monotonic()
    try:
        plan = operation.plan(known)
    except OperationError as error:
        raise HostError(host.name, f"{operation.name} {error}") from None
    op_result = OperationResult(operation.name, OK, summary=plan.reason)
    if plan.changes:
        op_result.status = CHANGED
        op_result.summary = plan.summary
        op_result.commands = [c.display(host.user) for c in plan.commands]
        op_result.diff = plan.diff if options.diff else None
        if not options.check:
            try:
                _apply(transport, host, plan.commands)
            except HostError as error:
                op_result.status, op_result.error = FAILED, error.reason
                raise StepFailed(op_result, error) from None
    op_result.seconds = time.monotonic() - began
    return op_result


class StepFailed(Exception):
    """An operation's command failed: carries the recorded result and the host's error."""

    def __init__(self, op_result: OperationResult, error: HostError):
        super().__init__(error.reason)
        self.op_result = op_result
        self.error = error


# Handlers notified but not yet run are kept on the host (RunOptions.pending_handlers),
# one name per line: a run that dies between a change and its handler (a failed
# reload, a dropped connection) leaves them there, and the next run on that host runs
# them even though nothing changes then.
# The file is root's alone (umask 077); its directory is made if missing but never re-moded: other state
# lives beside it (/var/lib/vigil/probe, the backup status), which its own users must reach.
def _remember_pending(path: str, names: list[str]) -> Command:
    return script('f=$1; shift; mkdir -p -- "$(dirname -- "$f")" && (umask 077 && printf "%s\\n" "$@" >> "$f")',
                  path, *names)


def parse_pending(stdout: str, status: int) -> list[str]:
    """The pending file's handler names, one a line (none when it is absent)."""
    return [line for line in stdout.splitlines() if line] if status == 0 else []


def pending_handlers_fact(path: str) -> Fact:
    """The handler names a failed run left pending on the host."""
    return Fact(f"pending-handlers:{path}", cmd("cat", "--", path), parse_pending)


def first_facts(facts_of: Sequence[Sequence[Fact]], pending_handlers: str) -> list[Fact]:
    """What run_host asks a host in its first round trip, given each operation's facts: the handlers a failed
    run left pending, then every operation's facts, each once (bench/peers/floor.py asks exactly these)."""
    wanted = [pending_handlers_fact(pending_handlers), *(fact for facts in facts_of for fact in facts)]
    return list({fact.key: fact for fact in wanted}.values())


def _rewrite_pending(path: str, names: list[str]) -> Command:
    if not names:
        return cmd("rm", "-f", path)
    return script('f=$1; shift; printf "%s\\n" "$@" > "$f"', path, *names)


def _confirm_login(transport: Transport, host: Host, handler: ConfirmLogin, options: RunOptions) -> OperationResult:
    """Log in afresh; if that fails, revert over the session still open and fail the host."""
    if options.check or options.login_check is None:
        return OperationResult(handler.name, OK, summary="not checked (check mode or no login check)")
    problem = options.login_check(host, handler.also_users)
    if problem is None:
        return OperationResult(handler.name, OK, summary="fresh logins work")
    try:
        _apply(transport, host, handler.revert)
    except HostError as revert_error:
        raise HostError(host.name, f"a fresh login failed after the change ({problem}), "
                                   f"and reverting failed too: {revert_error.reason}") from None
    raise HostError(host.name, f"a fresh login failed after the change ({problem}); "
                               "the previous configuration is back and the old session still works")


def run_host(
    transport: Transport, host_plan: HostPlan, options: RunOptions, progress: Progress | None = None
) -> HostResult:
    """Plan and apply one host's operations in order, then each notified handler once.

    Handlers left pending by an earlier failed run on this host run too.
    """
    host = host_plan.host
    result = HostResult(host.name, started=time.time())
    cache = FactCache(transport, host)
    notified: list[str] = []

    def record(op_result: OperationResult) -> None:
        result.operations.append(op_result)
        if progress:
            progress(host.name, op_result)

    operations = list(host_plan.operations)
    try:
        facts_of = [operation.facts() for operation in operations]
        known = cache.ensure(first_facts(facts_of, options.pending_handlers))
        pending = known[pending_handlers_fact(options.pending_handlers).key]
        notified = [name for name in dict.fromkeys(pending) if name in host_plan.handlers]
        for index, operation in enumerate(operations):
            # Nothing to ask while every fact is known; after a change, one round trip for the facts
            # of every operation still to come.
            if not all(fact.key in cache.values for fact in facts_of[index]):
                known = cache.ensure([fact for facts in facts_of[index:] for fact in facts])
            op_result = _step(transport, host, operation, known, options)
            if op_result.status == CHANGED:
                new = [name for name in operation.notify if name not in notified]
                notified += new
                if not options.check:
                    if new:
                        _apply(transport, host, [_remember_pending(options.pending_handlers, new)])
                    # What changed may be what a later operation reads.
                    cache.invalidate()
            record(op_result)
        for name in notified:
            handler = host_plan.handlers.get(name)
            if handler is None:
                raise HostError(host.name, f"an operation notified unknown handler {name!r}")
            if isinstance(handler, ConfirmLogin):
                record(_confirm_login(transport, host, handler, options))
                continue
            record(_step(transport, host, handler, cache.ensure(handler.facts()), options))
            cache.invalidate()
        if notified and not options.check:
            leftover = [name for name in dict.fromkeys(pending) if name not in host_plan.handlers]
            _apply(transport, host, [_rewrite_pending(options.pending_handlers, leftover)])
    except StepFailed as failure:
        record(failure.op_result)
        if isinstance(failure.error, UnreachableError):
            result.unreachable = failure.error.reason
        else:
            result.error = failure.error.reason
    except UnreachableError as error:
        result.unreachable = error.reason
    except HostError as error:
        result.error = error.reason
    except Exception as error:  # a bug or a surprise on one host must not hide the others
        result.error = f"unexpected {type(error).__name__}: {REDACTOR.redact(str(error))}"
    result.finished = time.time()
    if result.failed:
        ran = min(len(result.operations), len(operations))
        for operation in operations[ran:]:
            result.operations.append(
                OperationResult(operation.name, SKIPPED, summary="not run: the host failed earlier")
            )
    return result


Connector = Callable[[Host], Any]


Finisher = Callable[[Transport, HostResult], None]


Work = Callable[[Transport, HostPlan, RunOptions, Progress | None], HostResult]


def run(host_plans: list[HostPlan], connect: Connector, options: RunOptions, progress: Progress | None = None,
        finish: Finisher | None = None, work: Work | None = None, stop_after_failure: bool = False) -> list[HostResult]:
    """Run every host's plan, `options.forks` at a time, in batches of `options.serial` hosts.

    work: what runs on each connected host (default: run_host, the plan's operations). A deploy
    brings its own procedure. stop_after_failure: a failed batch keeps later batches from
    starting (a rolling deploy stops at the first failure); their hosts are reported skipped.

    `connect(host)` returns a context manager yielding a transport; a failure to
    connect fails that host only. `finish(transport, result)` runs last on the
    same connection (the audit line).
    """
    def one(host_plan: HostPlan) -> HostResult:
        started = time.time()
        if host_plan.refused:
            refusal = host_plan.refused
            failed = OperationResult(refusal.step, FAILED, summary="not planned", error=refusal.reason)
            if progress:
                progress(host_plan.host.name, failed)
            return HostResult(host_plan.host.name, [failed], error=f"{refusal.step}: {refusal.reason}",
                              started=started, finished=time.time())
        result = None
        try:
            with connect(host_plan.host) as transport:
                result = (work or run_host)(transport, host_plan, options, progress)
                if finish and not result.unreachable:
                    finish(transport, result)
                return result
        except Exception as error:
            if result is not None:
                # The host's steps ran; keep their results and say what failed after them.
                reason = error.reason if isinstance(error, HostError) else f"{type(error).__name__}: {error}"
                result.error = result.error or f"after the run: {REDACTOR.redact(reason)}"
                return result
            skipped = [
                OperationResult(op.name, SKIPPED, summary="not run: host unreachable") for op in host_plan.operations
            ]
            if isinstance(error, UnreachableError):
                return HostResult(
                    host_plan.host.name, skipped, unreachable=error.reason, started=started, finished=time.time()
                )
            reason = error.reason if isinstance(error, HostError) else f"unexpected {type(error).__name__}: {error}"
            return HostResult(
                host_plan.host.name, skipped, error=REDACTOR.redact(reason), started=started, finished=time.time()
            )

    batch_size = options.serial if options.serial > 0 else len(host_plans) or 1
    results: list[HostResult] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, options.forks)) as pool:
        for start in range(0, len(host_plans), batch_size):
            batch = host_plans[start : start + batch_size]
            if stop_after_failure and any(result.failed for result in results):
                now = time.time()
                results += [HostResult(plan.host.name, skipped="an earlier batch failed", started=now, finished=now)
                            for plan in batch]
                continue
            results += list(pool.map(one, batch))
    return results
