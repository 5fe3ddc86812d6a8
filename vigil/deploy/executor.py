"""One service's deploy on one host, step by step, each step recorded for progress and the recap.

A failure before the switch leaves the serving color untouched, stops the idle
one, marks the release bad and names the step with the lines of its log that
explain it. The host's state (lock, links, live color, releases) is read in one
round trip.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from secrets import token_hex
from typing import Any, Callable

from vigil.core.commands import Command
from vigil.core.errors import HostError, UnreachableError
from vigil.core.inventory import Host
from vigil.core.redaction import REDACTOR, mask_url_passwords
from vigil.core.runner import CHANGED, FAILED, OK, HostResult, OperationResult
from vigil.deploy.build import Artifact
from vigil.deploy.failures import DeployFailed, WentBadLive
from vigil.deploy.lock import LOCK_WAIT_NOTE, Heartbeat, acquire, owner_record, reconnect, takeover_note
from vigil.deploy.safety import DatabaseHost, KeepFailed, keep, record_json
from vigil.deploy.scripts import (
    APPEND_HISTORY,
    FINISH,
    HEALTH_GATE,
    LIST_MIGRATIONS,
    MARK_BAD,
    RECORD_POINT,
    RELEASE_LOCK,
    RELINK,
    STILL_OURS,
    UNPACK,
    WATCH,
    as_deploy,
    helper,
)
from vigil.deploy.settings import SWITCH_HELPER, UNIT_HELPER, Settings
from vigil.deploy.state import (
    HostState,
    interrupted_deploy,
    live_color,
    log_excerpt,
    migrations_added,
    parse_gate,
    prune_candidates,
    restore_point_before,
    rollback_target,
)
from vigil.deploy.warm import WarmSteps, is_warm, other

LOG_TAIL_LINES = 20
# A watched live color fails after this many failed checks in a row (a restart fails it at once).
WATCH_FAILURES_ALLOWED = 3


@dataclass
class HostDeploy(WarmSteps):
    """One service's deploy on one host, step by step, each step recorded for progress and the recap."""

    transport: Any
    host: Host
    settings: Settings
    artifact: Artifact | None
    who: str
    lock_wait: float = 0
    # A rollback ships nothing: it returns to a release already on the host (`rollback_to`, else the previous good one).
    rollback: bool = False
    rollback_to: str | None = None
    # With rollback: first revert the migrations the current release added (the first host only).
    revert_migrations: bool = False
    progress: Callable[[str, OperationResult], None] | None = None
    # The database host and how to reach it as the deploy user (None: not a host of the inventory).
    database: DatabaseHost | None = None
    clock: Callable[[], float] = time.time
    # While waiting for another deploy's lock, a progress line every this many seconds.
    lock_wait_note: float = LOCK_WAIT_NOTE
    result: HostResult = field(init=False)

    def __post_init__(self):
        self.result = HostResult(self.host.name, started=self.clock())
        self.release = self.artifact.id if self.artifact else (self.rollback_to or "")
        self.ref = self.artifact.ref if self.artifact else ""
        self.backup = ""  # what was kept before the database changed: the restore point, if any
        self.serving = ""  # the release the host serves when the deploy ends (unknown until read)
        # Only a release that was run (a task, a start, a health gate) can be blamed for a failure.
        self.release_tried = False
        self.gate_state = ""  # the new color's NRestarts and MainPID when it passed its gate
        self.served_before = ""  # what the host served when the deploy began
        self.unlocked: bool | None = False  # the finishing round trip releases it; None: the host is out of reach
        self.instant = False  # a rollback that switched to the release still running in the idle color
        self.token = token_hex(8)  # marks the lock as this deploy's

    def record(self, name: str, status: str, summary: str = "", error: str = "", began: float | None = None) -> None:
        op = OperationResult(name, status, summary=summary, error=error,
                             seconds=(time.monotonic() - began) if began else 0.0)
        self.result.operations.append(op)
        if self.progress:
            self.progress(self.host.name, op)

    def run(self, command: Command, step: str, timeout: float | None = None, unit: str | None = None):
        result = self.transport.run(command, timeout=timeout)
        if not result.ok:
            detail = "\n".join(REDACTOR.redact((result.stderr or result.stdout).strip()).splitlines()[-LOG_TAIL_LINES:])
            log = f"\nits log:\n{self.journal_tail(unit)}" if unit else ""  # systemd says there why it failed
            raise DeployFailed(step, f"`{command.display(self.host.user)}` exited {result.status}: {detail}{log}")
        return result

    def journal_tail(self, unit: str) -> str:
        result = self.transport.run(helper(UNIT_HELPER, "logs", unit))
        if not result.ok:
            return "(no journal access)"
        return REDACTOR.redact(log_excerpt(result.stdout))

    # -- the procedure --------------------------------------------------------------------

    def deploy(self) -> HostResult:
        settings = self.settings
        state = self.take_lock()
        switched = False
        idle = None
        heartbeat = Heartbeat(self.transport, settings, self.token).start()
        try:
            live = live_color(state, settings)
            if live is None:
                raise DeployFailed(
                    "Read the host.",
                    f"nginx's {settings.upstream_name} upstream in {settings.upstream_file} "
                    f"names no color's port ({state.live_port or 'none found'}); "
                    "run provision.server on this host first",
                )
            idle = other(live)
            self.serving = state.current or "nothing"
            # What nginx sends traffic to, which after a cut-off deploy is not `current`.
            self.served_before = state.colors.get(live) or state.current or "nothing"
            if self.rollback:
                self.choose_rollback(state)
                if self.revert_migrations:
                    self.revert(state)
                # Within the rollback window the release still runs in the idle color (vigil.deploy.warm).
                switched = self.instant = is_warm(state, idle, self.release) and self.return_warm(idle)
            else:
                self.upload(state)
                if settings.tasks and settings.backup_first:
                    self.backup_database(f"pre-{'-'.join(settings.tasks)}", self.release)
                for task in settings.tasks:
                    self.release_task(task)
            if not switched:
                self.start_idle(idle)
                self.health_gate(idle)
                self.switch(idle)
                switched = True
                self.watch(idle)
                self.retire(live)
            self.serving = self.release
            self.finish(state, live)
        except Exception as failure:  # a dropped connection too: clean up what can be, report it all
            # A lost connection is not a step's own failure: say where the deploy had got to.
            last = self.result.operations[-1].name if self.result.operations else ""
            step = (failure.step if isinstance(failure, DeployFailed)
                    else f"Deploy (after {last!r})" if last else "Deploy")
            reason = (failure.reason if isinstance(failure, (DeployFailed, HostError))
                      else f"{type(failure).__name__}: {failure}")
            self.record(step, FAILED, error=REDACTOR.redact(reason))
            self.result.error = f"{step}: {REDACTOR.redact(reason)}"
            if isinstance(failure, UnreachableError) and not self.connect_again():
                self.unlocked = None  # nothing more can reach the host: the lease frees the lock
            elif not switched:
                self.best_effort(lambda: self.abandon(idle, state, step))
            elif isinstance(failure, WentBadLive):
                self.best_effort(lambda: self.switch_back(live, idle))
            else:  # traffic is on the new release, `current` names the old: the next deploy converges
                self.best_effort(lambda: self.append_history({"release": self.release, "result": "failed",
                                                              "step": step, "live": idle}))
        finally:
            heartbeat.stop()
            if self.unlocked is False:
                self.best_effort(self.release_lock)
        self.result.finished = self.clock()
        return self.result

    def connect_again(self) -> bool:
        """After a lost connection: a new one, tried for half the lease (past the lease the next deploy
        takes the lock over anyway), to clean up, note the failure in the host's history and unlock."""
        window = self.settings.lock_lease / 2

        def waiting(line: str) -> None:
            if self.progress:
                self.progress(self.host.name, OperationResult("Connect again.", "waiting", summary=line))
        why = reconnect(self.transport, window, waiting)
        # Reached again, but the next deploy may have taken the lock over: then the host is its to touch.
        if not why and not self.transport.run(as_deploy(STILL_OURS, self.settings.layout.lock, self.token)).ok:
            self.record("Connect again.", FAILED, error="the lock was taken over meanwhile")
            self.result.error += "; connected again, but the next deploy had taken the lock over: left the host to it"
            return False
        self.record("Connect again.", FAILED if why else OK, error=why, summary="" if why else "to clean up and unlock")
        if why:
            self.result.error += (f"; no new connection within {window:g} s ({why}): the deploy lock stays until its "
                                  f"lease ({self.settings.lock_lease} s) runs out, then the next deploy takes it over")
        return not why

    def best_effort(self, action) -> None:
        """Clean-up after a failure must not hide it: its own failure is added to the host's error."""
        try:
            action()
        except Exception as error:  # the connection may be gone; say so, keep the first error
            reason = error.reason if isinstance(error, HostError) else str(error)
            self.result.error = (
                self.result.error + "; " if self.result.error else ""
            ) + f"and clean-up failed: {reason}"

    def revert(self, state: HostState) -> None:
        """Revert, with the current release's own code, the migrations it has and the target has not,
        newest first, after a restore point; the current release keeps serving until the switch."""
        began, settings, current = time.monotonic(), self.settings, state.current or ""
        step = f"Revert the migrations {current} added."
        listed = self.run(as_deploy(LIST_MIGRATIONS, settings.layout.releases, settings.migrations_dir, current,
                                    self.release), step)
        added, point = migrations_added(listed.stdout, current, self.release), restore_point_before(listed.stdout)
        instead = f" (or the database to before they ran, losing all writes since: {point['restore']})" if point else ""
        if not added:
            self.record(step, OK, summary=f"{current} added none")
            return
        self.backup_database("pre-revert", current)
        unit = settings.layout.task_unit(settings.revert_task, current)
        for done, migration in enumerate(added):
            result = self.transport.run(helper(UNIT_HELPER, "start", unit), timeout=settings.task_timeout + 60)
            if not result.ok:
                raise DeployFailed(step, f"reverting {migration} failed after {done} of {len(added)} reverted; "
                                         f"{unit}'s log:\n{self.journal_tail(unit)}"
                                         + (f"\nKept before it: {self.backup}" if self.backup else ""))
        self.record(step, CHANGED, summary=f"reverted {', '.join(added)}{instead}", began=began)

    def choose_rollback(self, state: HostState) -> None:
        step = "Choose the release to return to."
        try:
            self.release = rollback_target(state, self.rollback_to)
        except ValueError as problem:
            raise DeployFailed(step, str(problem)) from None
        self.ref = state.releases[self.release].get("ref", "")
        self.record(step, OK, summary=f"{self.release} (current: {state.current or 'none'})")

    def take_lock(self) -> HostState:
        """Take the lock with the host's state (lock.acquire); a takeover is noted in the step and the
        host's history."""
        began = time.monotonic()
        owner = owner_record(self.who, self.release, self.ref, self.token, self.clock())

        def waiting(line: str) -> None:
            if self.progress:
                self.progress(self.host.name, OperationResult("Wait for the deploy lock.", "waiting", summary=line))

        started = self.history_line({"release": self.release, "result": "started"}).decode().strip()
        state = acquire(self.transport, self.host.name, self.settings, owner, self.lock_wait,
                        self.lock_wait_note, waiting, started)
        note = takeover_note(state, self.settings)
        # The lock is bookkeeping, not a change to what the host serves: a run that changes nothing
        # else (a refused rollback) reports 0 changed.
        self.record("Take the deploy lock.", OK, began=began,
                    summary=f"locked {self.settings.layout.lock}" + (f"; {note}" if note else ""))
        if state.stale_lock:
            self.append_history({"release": self.release, "result": "lock taken over",
                                 "holder": state.stale_lock, "silent_seconds": state.stale_lock_silent})
        interrupted = interrupted_deploy(state, self.settings)
        if interrupted:
            self.record("Find an interrupted deploy.", OK, summary=f"{interrupted}; this deploy brings both to "
                                                                  f"{self.release or 'the release it returns to'}")
        return state

    def release_lock(self) -> None:
        result = self.transport.run(as_deploy(RELEASE_LOCK, self.settings.layout.lock, self.token))
        if result.status == 3:
            self.record("Release the deploy lock.", OK, summary="another deploy holds it now (it was broken): left")
            return
        self.record("Release the deploy lock.", OK if result.ok else FAILED,
                    error="" if result.ok else result.stderr.strip()[-300:])
        if not result.ok:
            raise HostError(
                self.host.name,
                f"the deploy lock {self.settings.layout.lock} is still there: {result.stderr.strip()[-300:]}",
            )

    def upload(self, state: HostState) -> None:
        began, layout, release = time.monotonic(), self.settings.layout, self.release
        if release in state.releases:
            on_host = state.releases[release].get("sha256")
            if on_host and on_host != self.artifact.sha256:
                # The same source built elsewhere into other bytes: never serve two things under one id.
                raise DeployFailed(
                    f"Upload release {release}.",
                    f"the host has {release} with other bytes (sha256 {on_host[:16]}, "
                    f"this artifact {self.artifact.sha256[:16]}); promote the artifact "
                    "the host has, or remove that release from the host",
                )
            self.record(f"Upload release {release}.", OK, summary="already on the host")
            return
        meta = json.dumps({"id": release, "ref": self.artifact.ref, "sha256": self.artifact.sha256,
                           "uploaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock())),
                           "by": self.who}, sort_keys=True)
        self.run(as_deploy(UNPACK, layout.release(release), self.artifact.sha256, self.settings.group, release, meta,
                           stdin=self.artifact.path.read_bytes()), f"Upload release {release}.", timeout=900)
        self.record(f"Upload release {release}.", CHANGED, began=began,
                    summary=f"{self.artifact.size // 1024} KiB, checksum verified")

    def backup_database(self, label: str, release: str) -> None:
        """Keep the database as it is now (safety.py): a restore point, recorded beside the release; where
        the env has no backup host there is nothing to keep it in, and the step says so."""
        database, began, step = self.database, time.monotonic(), "Make a restore point."
        if database is None or not database.restore_points:
            self.record(step, OK, summary="nothing kept: " + (
                "no database host in the inventory (DATABASE_URL set by hand)" if database is None else
                "the env has no backup host (group `backup`, roles/pgbackrest) to keep a restore point in"))
            return
        try:
            kept = keep(database, self.transport, self.host, label, release, self.settings.task_timeout + 60)
        except KeepFailed as problem:
            raise DeployFailed(step, str(problem)) from None
        if "revert" not in label:  # the release's record is the point before its migrations, never a revert's
            self.run(as_deploy(RECORD_POINT, self.settings.layout.release(release), record_json(kept)), step)
        self.backup = kept.summary
        self.record(step, CHANGED, summary=kept.summary, began=began)

    def release_task(self, task: str) -> None:
        began, unit = time.monotonic(), self.settings.layout.task_unit(task, self.release)
        self.release_tried = True
        result = self.transport.run(helper(UNIT_HELPER, "start", unit), timeout=self.settings.task_timeout + 60)
        if not result.ok:
            kept = f"\nKept before it: {self.backup}" if self.backup else ""
            raise DeployFailed(
                f"Run {task} for {self.release}.", f"{unit} failed; its log:\n{self.journal_tail(unit)}{kept}"
            )
        self.record(f"Run {task} for {self.release}.", CHANGED, summary=f"{unit} succeeded", began=began)

    def start_idle(self, idle: str) -> None:
        began, layout = time.monotonic(), self.settings.layout
        step = f"Start {layout.service}@{idle} on {self.release}."
        self.release_tried = True
        self.run(as_deploy(RELINK + ' && sudo -n "$3" restart "$4"', layout.color(idle), f"../releases/{self.release}",
                           UNIT_HELPER, layout.unit(idle)), step, unit=layout.unit(idle))
        self.record(step, CHANGED, summary=f"port {self.settings.ports[idle]}", began=began)

    def health_gate(self, idle: str) -> None:
        began, settings = time.monotonic(), self.settings
        step = f"Check {settings.layout.service}@{idle} is healthy."
        result = self.transport.run(as_deploy(HEALTH_GATE, str(settings.ports[idle]), settings.health_path,
                                              self.release if settings.health_release else "", str(settings.checks),
                                              str(settings.health_timeout), settings.layout.unit(idle),
                                              str(settings.min_healthy)), timeout=settings.health_timeout + 60)
        if not result.ok:
            answer = mask_url_passwords(result.stderr.strip()[-500:])
            raise DeployFailed(step, f"{answer}\nits log:\n{self.journal_tail(settings.layout.unit(idle))}")
        summary, self.gate_state = parse_gate(result.stdout)
        self.record(step, OK, summary=summary, began=began)

    def watch(self, new: str) -> None:
        """Watch the color that now takes the traffic for app_watch_seconds, the old one still running:
        a restart or failing checks raise WentBadLive, and the deploy switches back."""
        settings = self.settings
        if not settings.watch:
            return
        began, step = time.monotonic(), f"Watch {settings.layout.service}@{new} serve for {settings.watch}s."
        result = self.transport.run(
            as_deploy(WATCH, str(settings.ports[new]), settings.health_path,
                      self.release if settings.health_release else "", settings.layout.unit(new), self.gate_state,
                      str(settings.watch), str(WATCH_FAILURES_ALLOWED)),
            timeout=settings.watch + 60,
        )
        if not result.ok:
            raise WentBadLive(step, mask_url_passwords(result.stderr.strip()[-500:]))
        self.record(step, OK, summary=result.stdout.strip(), began=began)

    def switch_back(self, old: str, new: str) -> None:
        """After a failed watch: traffic back to the old color (still running), the new one stopped and its
        release marked bad. The host serves what it served before the deploy."""
        began, layout = time.monotonic(), self.settings.layout
        step = f"Switch nginx's {layout.service} upstream back to {old}."
        self.run(helper(SWITCH_HELPER, layout.service, old), step)
        self.transport.run(helper(UNIT_HELPER, "stop", layout.unit(new)))
        self.transport.run(as_deploy(MARK_BAD, layout.release(self.release), self.release, "deploy"))
        self.serving = self.served_before
        self.record(step, CHANGED, began=began,
                    summary=f"{self.served_before} serves again; {layout.service}@{new} stopped, {self.release} "
                            "marked bad")
        self.append_history({"release": self.release, "result": "failed", "step": self.result.operations[-2].name,
                             "switched_back_to": self.served_before})

    def switch(self, idle: str) -> None:
        began, service = time.monotonic(), self.settings.layout.service
        step = f"Switch nginx's {service} upstream to {idle}."
        self.run(helper(SWITCH_HELPER, service, idle), step)
        self.record(
            step, CHANGED, summary=f"127.0.0.1:{self.settings.ports[idle]}, nginx reloaded gracefully", began=began
        )

    def finish(self, state: HostState, live: str) -> None:
        """Make the release current, record it, prune and unlock, in one round trip."""
        began, layout, release = time.monotonic(), self.settings.layout, self.release
        step = f"Make {release} current."
        # What the host holds now: the releases read under the lock, plus this one if it was just uploaded.
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        held = HostState(releases={**state.releases, release: state.releases.get(release) or {"uploaded_at": now}})
        protected = {release} | {rid for rid in (state.current, *state.colors.values()) if rid}
        doomed = prune_candidates(held, self.settings.keep, protected)
        line = self.history_line({"release": release, "previous": state.current, "color": other(live),
                                  "result": "live", **({"instant": True} if self.instant else {})})
        result = self.transport.run(
            as_deploy(
                FINISH,
                layout.current,
                f"releases/{release}",
                f"{layout.release(release)}/.vigil-bad",
                layout.history,
                layout.releases,
                layout.lock,
                self.token,
                *doomed,
                stdin=line,
            )
        )
        why = REDACTOR.redact(result.stderr.strip()[-300:])
        if result.status == 1:
            raise DeployFailed(step, f"the current link was not switched: {why}")
        self.record(step, CHANGED, summary=f"previous: {state.current or 'none'}", began=began)
        if result.status == 2:
            raise DeployFailed("Write the deploy history.", f"{layout.history}: {why}")
        if result.status == 3:
            # Traffic is on the new release and the lock is released: say the host needs a look.
            self.record("Prune old releases.", FAILED, error=why)
            self.result.error = f"Prune old releases.: not every one of {', '.join(doomed)} was removed: {why}"
        elif not result.ok:
            raise DeployFailed("Prune old releases.", f"exited {result.status}: {why}")
        else:
            self.record("Prune old releases.", CHANGED if doomed else OK,
                        summary=f"removed {', '.join(doomed)}" if doomed else f"at most {self.settings.keep} kept")
        self.unlocked = True
        self.record("Release the deploy lock.", OK)

    def abandon(self, idle: str | None, state: HostState, step: str) -> None:
        """After a failure before the switch: stop the idle color, mark the release bad (unless it is the
        one serving, or it never ran: a failed redeploy or upload says nothing against it) and note the
        failure in the history."""
        layout, release = self.settings.layout, self.release
        if not release:
            # A rollback that found nowhere to go: nothing was started or chosen, so nothing to keep or mark.
            self.append_history({"release": "", "result": "failed", "step": step})
            return
        if idle and self.release_tried:
            self.transport.run(helper(UNIT_HELPER, "stop", layout.unit(idle)))
        blamed = self.release_tried and release != state.current
        if blamed:
            self.transport.run(as_deploy(MARK_BAD, layout.release(release), release, "deploy"))
        self.append_history({"release": release, "result": "failed", "step": step})
        self.record(
            f"Mark {release} bad." if blamed else f"Keep {release}.",
            CHANGED,
            summary="the live color keeps serving"
            + (f"; {layout.service}@{idle} stopped" if idle and self.release_tried else ""),
        )

    def history_line(self, entry: dict) -> bytes:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        return (json.dumps({"time": now, "who": self.who, "ref": self.ref,
                            **({"rollback": True} if self.rollback else {}), **entry}) + "\n").encode()

    def append_history(self, entry: dict) -> None:
        self.run(
            as_deploy(APPEND_HISTORY, self.settings.layout.history, stdin=self.history_line(entry)),
            "Write the deploy history.",
        )
