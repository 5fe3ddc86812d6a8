"""Deploy: ship a built release to the web hosts and switch to it without dropping a request.

On each host, as the deploy user (whose sudo covers the app's units and the
upstream switch only), one service at a time:

    lock (atomic mkdir) -> upload and unpack into releases/<id> (checksum, then
    an atomic rename) -> release tasks (migrations) -> start the idle color on
    the new release -> health gate -> switch nginx's upstream (nginx -t, graceful
    reload) -> drain and stop the old color -> atomic `current` switch -> prune
    -> history line -> unlock, on failure too.

A failure before the switch leaves the serving color untouched, stops the idle
one, marks the release bad and names the step with the lines of its log that
explain it. The host's state (lock, links, live color, releases) is read in one
round trip.
"""

from __future__ import annotations

import json
import re
from secrets import token_hex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vigil.build import Artifact
from vigil.commands import REDACTOR, Command, script
from vigil.facts import sections
from vigil.config import Host
from vigil.errors import HostError
from vigil.runner import CHANGED, FAILED, OK, HostPlan, HostResult, OperationResult, RunOptions

COLORS = ("blue", "green")
UNIT_HELPER = "/usr/local/sbin/vigil-app-unit"
SWITCH_HELPER = "/usr/local/sbin/vigil-switch-upstream"
BACKUP_HELPER = "/usr/local/sbin/vigil-backup"
LOG_TAIL_LINES = 20


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


# --- what the host is asked first ------------------------------------------------------------

STATE = r'''
base=$1; upstream=$2; name=$3; blue_unit=$4; green_unit=$5
echo "@lock"; cat -- "$base/.deploy-lock/owner.json" 2>/dev/null; echo
echo "@current"; readlink -- "$base/current" 2>/dev/null
for color in blue green; do echo "@color $color"; readlink -- "$base/colors/$color" 2>/dev/null; done
echo "@units"; systemctl is-active -- "$blue_unit" "$green_unit" 2>/dev/null
echo "@upstream"; sed -n "s/^upstream ${name} { server 127\.0\.0\.1:\([0-9]*\);.*/\1/p" "$upstream" 2>/dev/null
echo "@releases"
for dir in "$base"/releases/*/; do
    [ -d "$dir" ] || continue
    id=$(basename -- "$dir")
    case "$id" in *.partial) continue ;; esac
    if [ -e "$dir/.vigil-bad" ]; then status=bad; else status=good; fi
    printf '%s %s ' "$id" "$status"; cat -- "$dir/.vigil-release.json" 2>/dev/null | tr -d '\n'; echo
done
echo "@history"; tail -n 200 -- "$base/deploys.jsonl" 2>/dev/null
echo "@end"
'''


@dataclass
class HostState:
    """What a host holds for one service before a deploy."""

    lock: dict | None = None
    current: str | None = None
    colors: dict[str, str | None] = field(default_factory=dict)
    # color -> systemd's is-active answer for its unit (active, inactive, failed...)
    units: dict[str, str] = field(default_factory=dict)
    live_port: int | None = None
    releases: dict[str, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


# Several services' state in one round trip (deploy.status, deploy.releases): STATE once per service.
STATES = "state() {\n" + STATE + "\n}\n" + r'''
while [ "$#" -ge 6 ]; do
    echo "@service $1"
    state "$2" "$3" "$4" "$5" "$6"
    shift 6
done
'''


def states_command(settings: list[Settings]) -> Command:
    args = []
    for one in settings:
        layout = one.layout
        args += [layout.service, layout.base, one.upstream_file, one.upstream_name, *(layout.unit(color) for color in COLORS)]
    return script(STATES, *args, sudo=False)


def parse_states(stdout: str) -> dict[str, HostState]:
    """STATES's answer: service -> its state."""
    chunks = re.split(r"^@service (\S+)\n", stdout, flags=re.MULTILINE)
    return {service: parse_state(body) for service, body in zip(chunks[1::2], chunks[2::2])}


def parse_state(stdout: str) -> HostState:
    """Parse STATE's sections; a release's metadata that does not parse counts as none."""
    state = HostState()
    for section, text in sections(stdout):
        if section == "lock":
            state.lock = _json(text) or {"owner": "unknown"}
        elif section == "current":
            state.current = Path(text).name
        elif section and section.startswith("color "):
            state.colors[section.split()[1]] = Path(text).name
        elif section == "units" and len(state.units) < len(COLORS):
            state.units[COLORS[len(state.units)]] = text
        elif section == "upstream" and text.isdigit():
            state.live_port = int(text)
        elif section == "releases":
            release_id, _, rest = text.partition(" ")
            status, _, meta = rest.partition(" ")
            state.releases[release_id] = {**(_json(meta) or {}), "status": status}
        elif section == "history":
            entry = _json(text)
            if entry:
                state.history.append(entry)
    return state


def _json(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- the commands, as data -------------------------------------------------------------------

TAKE_LOCK = r'''
lock=$1
if ! mkdir -- "$lock" 2>/dev/null; then
    # Only an existing lock means another deploy. Otherwise its holder let go between the two
    # checks (the second mkdir takes it), or the directory cannot be made (its error, exit 1).
    if [ -d "$lock" ]; then cat -- "$lock/owner.json" 2>/dev/null; exit 75; fi
    mkdir -- "$lock" || exit 1
fi
cat > "$lock/owner.json"
'''

# Only the deploy that took the lock removes it (its token is in owner.json): after a forced
# unlock, the old deploy must not remove the lock a new deploy holds. Exit 3: not ours (left).
RELEASE_LOCK = r'''
lock=$1; token=$2
[ -d "$lock" ] || exit 0
grep -qF "\"token\": \"$token\"" "$lock/owner.json" 2>/dev/null || exit 3
rm -rf -- "$lock"
'''

# The lock, then (only once it is ours) the host's state: one round trip.
LOCK_AND_STATE = "state() {\n" + STATE + "\n}\n" + TAKE_LOCK + 'shift\nstate "$@"\n'

# The artifact arrives on stdin into a .partial directory; only a complete, checked
# unpack is renamed into place, so a dropped upload never leaves a release behind.
UNPACK = r'''
set -eu
release=$1; sha=$2; group=$3; id=$4; meta=$5
partial="$release.partial"
rm -rf -- "$partial" "$partial.tar.gz"
cat > "$partial.tar.gz"
got=$(sha256sum -- "$partial.tar.gz" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then rm -f -- "$partial.tar.gz"; echo "checksum mismatch: got $got, want $sha" >&2; exit 65; fi
mkdir -- "$partial"
tar -xzf "$partial.tar.gz" -C "$partial" --no-same-owner
rm -f -- "$partial.tar.gz"
printf 'RELEASE_ID=%s\n' "$id" > "$partial/release.env"
printf '%s\n' "$meta" > "$partial/.vigil-release.json"
chgrp -R -- "$group" "$partial"
chmod -R g+rX,g-w,o-rwx -- "$partial"
mv -T -- "$partial" "$release"
'''

# ln -sfn unlinks then links: for a moment there is no link. A new link renamed over the
# old one is atomic.
RELINK = 'ln -sfn -- "$2" "$1.vigil-new" && mv -T -f -- "$1.vigil-new" "$1"'

HEALTH_GATE = r'''
port=$1; path=$2; release=$3; needed=$4; timeout=$5
passed=0; last="no answer"; end=$(( $(date +%s) + timeout ))
while [ "$(date +%s)" -lt "$end" ]; do
    if body=$(curl -fsS --max-time 2 "http://127.0.0.1:$port$path" 2>&1); then
        if [ -z "$release" ] || printf '%s' "$body" | grep -qF "\"release\":\"$release\""; then
            passed=$((passed + 1)); last="passed"
        else
            passed=0; last="answered for another release: $body"
        fi
    else
        passed=0; last=$body
    fi
    if [ "$passed" -ge "$needed" ]; then echo "$needed checks in a row passed"; exit 0; fi
    sleep 1
done
echo "not healthy within ${timeout}s: $last" >&2
exit 1
'''

# Breaking a lock: renamed away first (atomic), so a deploy that takes the lock meanwhile keeps its own.
BREAK_LOCK = r'''
lock=$1; broken="$1.broken"
rm -rf -- "$broken"
[ -e "$lock" ] || { echo "@free"; exit 0; }
mv -T -- "$lock" "$broken" || exit 1
cat -- "$broken/owner.json" 2>/dev/null; echo
rm -rf -- "$broken"
'''

# The current release ($3) must have the directory (else the setting is wrong, and "nothing to
# revert" would be a lie); the target may have none yet.
LIST_MIGRATIONS = r'''
releases=$1; dir=$2; shift 2
[ -d "$releases/$1/$dir" ] || { echo "no directory $dir in release $1 (app_migrations)" >&2; exit 1; }
for release in "$@"; do
    echo "@release $release"
    ls -1 -- "$releases/$release/$dir" 2>/dev/null
done
'''


def migrations_added(listing: str, current: str, target: str) -> list[str]:
    """LIST_MIGRATIONS's answer -> the migrations `current` has and `target` has not, newest first
    (the order a revert undoes them: file names start with their timestamp)."""
    chunks = re.split(r"^@release (\S+)\n", listing, flags=re.MULTILINE)
    files = {release: {name for name in body.split() if name.endswith(".js")} for release, body in zip(chunks[1::2], chunks[2::2])}
    return sorted(files.get(current, set()) - files.get(target, set()), reverse=True)


# Each action runs even when one before it failed; each failure is named.
RETIRE = r'''
helper=$1; old=$2; new=$3; failed=0
sudo -n "$helper" stop "$old" || { echo "vigil: stopping the old color failed" >&2; failed=1; }
sudo -n "$helper" enable "$new" || { echo "vigil: enabling the new color failed" >&2; failed=1; }
sudo -n "$helper" disable "$old" || { echo "vigil: disabling the old color failed" >&2; failed=1; }
exit "$failed"
'''

# After the switch, in one round trip: `current` (atomic), the history line (stdin), pruning, the
# lock (if still ours). Exit 1: `current` was not switched; 2: the history line was not written;
# 3: a release was not pruned (the lock is released); 4: the lock could not be removed.
FINISH = RELINK + r''' || exit 1
rm -f -- "$3"
history=$4; releases=$5; lock=$6; token=$7; shift 7
cat >> "$history" || exit 2
pruned=0
for id in "$@"; do rm -rf -- "$releases/$id" || pruned=3; done
grep -qF "\"token\": \"$token\"" "$lock/owner.json" 2>/dev/null && { rm -rf -- "$lock" || exit 4; }
exit "$pruned"
'''


URL_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s]+@")
ERROR_LINE = re.compile(r"\b(\w*Error\b|ERROR|FATAL|[Ee]xception|failed|error:)")


def mask_url_passwords(text: str) -> str:
    """A URL's password masked (a DATABASE_URL in an error message), even where vigil never saw the value."""
    return URL_CREDENTIALS.sub(r"\1***@", text)


def live_color(state: HostState, settings: Settings) -> str | None:
    """The color whose port nginx's upstream names (None: no color's)."""
    return next((color for color, port in settings.ports.items() if port == state.live_port), None)


def log_excerpt(log: str, errors: int = 5, tail: int = 10) -> str:
    """What explains a failure in a long log: its first error lines, then its last lines (a stack
    trace's object dump would otherwise push the error itself out of view)."""
    log = mask_url_passwords(log)
    lines = [line for line in log.splitlines() if line.strip()]
    first_errors = [line for line in lines[:-tail] if ERROR_LINE.search(line)][:errors]
    shown = first_errors + (["..."] if first_errors else []) + lines[-tail:]
    return "\n".join(line[:300] for line in shown)


def rollback_target(state: HostState, wanted: str | None) -> str:
    """The release a rollback returns to: `wanted`, else the newest earlier live release that is not bad.

    Raises ValueError naming why there is none.
    """
    usable = {rid for rid, meta in state.releases.items() if meta.get("status") != "bad"}
    if wanted:
        if wanted not in state.releases:
            raise ValueError(f"release {wanted} is not on the host (releases: {', '.join(sorted(state.releases)) or 'none'})")
        if wanted not in usable:
            raise ValueError(f"release {wanted} is marked bad; pick another (--to)")
        if wanted == state.current:
            raise ValueError(f"release {wanted} is the current one already")
        return wanted
    # What each release replaced when it was last deployed (a rollback is a return, not a deploy, and
    # a redeploy of the same release replaced nothing): the chain back from the current release.
    replaced: dict[str, str] = {}
    for entry in state.history:
        release, previous = entry.get("release"), entry.get("previous")
        if entry.get("result") == "live" and not entry.get("rollback") and release and previous and previous != release:
            replaced[release] = previous
    seen, candidate = {state.current}, replaced.get(state.current or "")
    while candidate and candidate not in seen:
        if candidate in usable:
            return candidate
        seen.add(candidate)
        candidate = replaced.get(candidate)
    raise ValueError(f"no earlier good release to return to (current: {state.current or 'none'})")


def helper(*argv: str) -> Command:
    """A root helper the deploy user's sudo allows (the app's units, the upstream switch)."""
    return Command(tuple(argv), sudo=True)


def as_deploy(body: str, *args: str, stdin: bytes | None = None) -> Command:
    return script(body, *args, sudo=False, stdin=stdin)


def prune_candidates(state: HostState, keep: int, protected: set[str]) -> list[str]:
    """Releases to delete: all but the newest `keep`, never one in `protected` (current, previous, colors)."""
    ordered = sorted(state.releases, key=lambda rid: (state.releases[rid].get("uploaded_at", ""), rid), reverse=True)
    kept = {rid for rid in protected if rid in state.releases}
    for rid in ordered:
        if len(kept) >= keep:
            break
        kept.add(rid)
    return [rid for rid in ordered if rid not in kept]


class DeployFailed(Exception):
    """A step failed; carries the step's name and what to show."""

    def __init__(self, step: str, reason: str):
        super().__init__(reason)
        self.step = step
        self.reason = reason


@dataclass
class HostDeploy:
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
    # The database host's name and how to reach it as the deploy user (None: not a host of the inventory).
    database: tuple[str, Callable[[], Any]] | None = None
    clock: Callable[[], float] = time.time
    result: HostResult = field(init=False)

    def __post_init__(self):
        self.result = HostResult(self.host.name, started=self.clock())
        self.release = self.artifact.id if self.artifact else (self.rollback_to or "")
        self.ref = self.artifact.ref if self.artifact else ""
        self.backup = ""  # where the pre-migration backup went: host:path
        self.serving = ""  # the release the host serves when the deploy ends (unknown until read)
        # Only a release that was run (a task, a start, a health gate) can be blamed for a failure.
        self.release_tried = False
        self.unlocked = False  # the finishing round trip releases the lock itself
        self.token = token_hex(8)  # marks the lock as this deploy's

    def record(self, name: str, status: str, summary: str = "", error: str = "", began: float | None = None) -> None:
        op = OperationResult(name, status, summary=summary, error=error,
                             seconds=(time.monotonic() - began) if began else 0.0)
        self.result.operations.append(op)
        if self.progress:
            self.progress(self.host.name, op)

    def run(self, command: Command, step: str, timeout: float | None = None):
        result = self.transport.run(command, timeout=timeout)
        if not result.ok:
            detail = "\n".join(REDACTOR.redact((result.stderr or result.stdout).strip()).splitlines()[-LOG_TAIL_LINES:])
            raise DeployFailed(step, f"`{command.display(self.host.user)}` exited {result.status}: {detail}")
        return result

    def journal_tail(self, unit: str) -> str:
        result = self.transport.run(Command(("journalctl", "-q", "--no-pager", "-o", "cat", "-n", "300", "-u", unit), sudo=False))
        if not result.ok:
            return "(no journal access)"
        return REDACTOR.redact(log_excerpt(result.stdout))

    # -- the procedure --------------------------------------------------------------------

    def deploy(self) -> HostResult:
        settings = self.settings
        state = self.take_lock()
        switched = False
        idle = None
        try:
            live = live_color(state, settings)
            if live is None:
                raise DeployFailed("Read the host.", f"nginx's {settings.upstream_name} upstream in {settings.upstream_file} "
                                                     f"names no color's port ({state.live_port or 'none found'}); "
                                                     "run provision.server on this host first")
            idle = next(color for color in COLORS if color != live)
            self.serving = state.current or "nothing"
            if self.rollback:
                self.choose_rollback(state)
                if self.revert_migrations:
                    self.revert(state)
            else:
                self.upload(state)
                if settings.tasks and settings.backup_first:
                    self.backup_database(f"pre-{'-'.join(settings.tasks)}", self.release)
                for task in settings.tasks:
                    self.release_task(task)
            self.start_idle(idle)
            self.health_gate(idle)
            self.switch(idle)
            switched = True
            self.serving = self.release
            self.retire(live, state)
            self.finish(state, live)
        except Exception as failure:  # a dropped connection too: clean up what can be, report it all
            step = failure.step if isinstance(failure, DeployFailed) else "Deploy"
            reason = failure.reason if isinstance(failure, (DeployFailed, HostError)) else f"{type(failure).__name__}: {failure}"
            self.record(step, FAILED, error=REDACTOR.redact(reason))
            self.result.error = f"{step}: {REDACTOR.redact(reason)}"
            if not switched:
                self.best_effort(lambda: self.abandon(idle, state))
        finally:
            if not self.unlocked:
                self.best_effort(self.release_lock)
        self.result.finished = self.clock()
        return self.result

    def best_effort(self, action) -> None:
        """Clean-up after a failure must not hide it: its own failure is added to the host's error."""
        try:
            action()
        except Exception as error:  # the connection may be gone; say so, keep the first error
            reason = error.reason if isinstance(error, HostError) else str(error)
            self.result.error = (self.result.error + "; " if self.result.error else "") + f"and clean-up failed: {reason}"

    def revert(self, state: HostState) -> None:
        """Revert, with the current release's own code, the migrations it has and the target has not,
        newest first, after a backup; the current release keeps serving until the switch."""
        began, settings, current = time.monotonic(), self.settings, state.current or ""
        step = f"Revert the migrations {current} added."
        listed = self.run(as_deploy(LIST_MIGRATIONS, settings.layout.releases, settings.migrations_dir, current, self.release), step)
        added = migrations_added(listed.stdout, current, self.release)
        if not added:
            self.record(step, OK, summary=f"{current} added none")
            return
        self.backup_database("pre-revert", current)
        unit = settings.layout.task_unit(settings.revert_task, current)
        for done, migration in enumerate(added):
            result = self.transport.run(helper(UNIT_HELPER, "start", unit), timeout=settings.task_timeout + 60)
            if not result.ok:
                raise DeployFailed(step, f"reverting {migration} failed after {done} of {len(added)} reverted; {unit}'s log:\n"
                                         f"{self.journal_tail(unit)}\nThe database was backed up before: {self.backup}")
        self.record(step, CHANGED, summary=f"reverted {', '.join(added)}", began=began)

    def choose_rollback(self, state: HostState) -> None:
        step = "Choose the release to return to."
        try:
            self.release = rollback_target(state, self.rollback_to)
        except ValueError as problem:
            raise DeployFailed(step, str(problem)) from None
        self.ref = state.releases[self.release].get("ref", "")
        self.record(step, OK, summary=f"{self.release} (current: {state.current or 'none'})")

    def take_lock(self) -> HostState:
        """Take the lock and read the host's state in the same round trip (waiting up to lock_wait)."""
        began, settings = time.monotonic(), self.settings
        owner = json.dumps({"who": self.who, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock())),
                            "release": self.release or "rollback", "ref": self.ref, "token": self.token}).encode()
        deadline = time.monotonic() + self.lock_wait
        while True:
            result = self.transport.run(as_deploy(LOCK_AND_STATE, settings.layout.lock, settings.layout.base, settings.upstream_file,
                                                  settings.upstream_name, *(settings.layout.unit(color) for color in COLORS),
                                                  stdin=owner))
            if result.ok:
                self.record("Take the deploy lock.", CHANGED, summary=f"locked {settings.layout.lock}", began=began)
                return parse_state(result.stdout)
            if result.status != 75:
                raise HostError(self.host.name, f"taking the deploy lock failed: {result.stderr.strip()[-300:]}")
            if time.monotonic() >= deadline:
                holder = _json(result.stdout.strip()) or {}
                raise HostError(self.host.name, f"another deploy holds the lock: {holder.get('who', 'unknown')} since "
                                                f"{holder.get('since', '?')} (release {holder.get('release', '?')}); wait "
                                                "(--lock-wait) or, if that deploy died, break the lock with "
                                                f"`invoke deploy.unlock --app={self.settings.layout.service} --force --reason=WHY`")
            time.sleep(1)

    def release_lock(self) -> None:
        result = self.transport.run(as_deploy(RELEASE_LOCK, self.settings.layout.lock, self.token))
        if result.status == 3:
            self.record("Release the deploy lock.", OK, summary="another deploy holds it now (it was broken): left")
            return
        self.record("Release the deploy lock.", CHANGED if result.ok else FAILED,
                    error="" if result.ok else result.stderr.strip()[-300:])
        if not result.ok:
            raise HostError(self.host.name, f"the deploy lock {self.settings.layout.lock} is still there: {result.stderr.strip()[-300:]}")

    def upload(self, state: HostState) -> None:
        began, layout, release = time.monotonic(), self.settings.layout, self.release
        if release in state.releases:
            on_host = state.releases[release].get("sha256")
            if on_host and on_host != self.artifact.sha256:
                # The same source built elsewhere into other bytes: never serve two things under one id.
                raise DeployFailed(f"Upload release {release}.", f"the host has {release} with other bytes (sha256 {on_host[:16]}, "
                                                                 f"this artifact {self.artifact.sha256[:16]}); promote the artifact "
                                                                 "the host has, or remove that release from the host")
            self.record(f"Upload release {release}.", OK, summary="already on the host")
            return
        meta = json.dumps({"id": release, "ref": self.artifact.ref, "sha256": self.artifact.sha256,
                           "uploaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock())),
                           "by": self.who}, sort_keys=True)
        self.run(as_deploy(UNPACK, layout.release(release), self.artifact.sha256, self.settings.group, release, meta,
                           stdin=self.artifact.path.read_bytes()), f"Upload release {release}.", timeout=900)
        self.record(f"Upload release {release}.", CHANGED, summary=f"{self.artifact.size // 1024} KiB, checksum verified", began=began)

    def backup_database(self, label: str, release: str) -> None:
        began, step = time.monotonic(), "Back up the database."
        if self.database is None:
            self.record(step, OK, summary="no database host in the inventory (DATABASE_URL set by hand): not backed up")
            return
        name, connect = self.database
        command, timeout = helper(BACKUP_HELPER, "create", label, "--release", release), self.settings.task_timeout + 60
        if name == self.host.name:
            result = self.transport.run(command, timeout=timeout)
        else:
            with connect() as transport:
                result = transport.run(command, timeout=timeout)
        if not result.ok:
            raise DeployFailed(step, f"{name}: `{command.display(self.host.user)}` exited {result.status}: "
                                     f"{REDACTOR.redact(result.stderr.strip()[-500:])}")
        made = _json(result.stdout) or {}
        self.backup = f"{name}:{made.get('path') or made.get('id', '?')}"
        self.record(step, CHANGED, summary=self.backup, began=began)

    def release_task(self, task: str) -> None:
        began, unit = time.monotonic(), self.settings.layout.task_unit(task, self.release)
        self.release_tried = True
        result = self.transport.run(helper(UNIT_HELPER, "start", unit), timeout=self.settings.task_timeout + 60)
        if not result.ok:
            kept = f"\nThe database was backed up before it: {self.backup}" if self.backup else ""
            raise DeployFailed(f"Run {task} for {self.release}.", f"{unit} failed; its log:\n{self.journal_tail(unit)}{kept}")
        self.record(f"Run {task} for {self.release}.", CHANGED, summary=f"{unit} succeeded", began=began)

    def start_idle(self, idle: str) -> None:
        began, layout = time.monotonic(), self.settings.layout
        step = f"Start {layout.service}@{idle} on {self.release}."
        self.release_tried = True
        self.run(as_deploy(RELINK + ' && sudo -n "$3" restart "$4"', layout.color(idle), f"../releases/{self.release}",
                           UNIT_HELPER, layout.unit(idle)), step)
        self.record(step, CHANGED, summary=f"port {self.settings.ports[idle]}", began=began)

    def health_gate(self, idle: str) -> None:
        began, settings = time.monotonic(), self.settings
        step = f"Check {settings.layout.service}@{idle} is healthy."
        result = self.transport.run(as_deploy(HEALTH_GATE, str(settings.ports[idle]), settings.health_path,
                                              self.release if settings.health_release else "", str(settings.checks),
                                              str(settings.health_timeout)), timeout=settings.health_timeout + 60)
        if not result.ok:
            answer = mask_url_passwords(result.stderr.strip()[-500:])
            raise DeployFailed(step, f"{answer}\nits log:\n{self.journal_tail(settings.layout.unit(idle))}")
        self.record(step, OK, summary=result.stdout.strip(), began=began)

    def switch(self, idle: str) -> None:
        began, service = time.monotonic(), self.settings.layout.service
        step = f"Switch nginx's {service} upstream to {idle}."
        self.run(helper(SWITCH_HELPER, service, idle), step)
        self.record(step, CHANGED, summary=f"127.0.0.1:{self.settings.ports[idle]}, nginx reloaded gracefully", began=began)

    def retire(self, live: str, state: HostState) -> None:
        began, layout = time.monotonic(), self.settings.layout
        step = f"Drain and stop {layout.service}@{live}."
        # Requests nginx's old workers still hold finish on the old color; then it stops cleanly.
        time.sleep(self.settings.drain)
        # Enabled or not decides which color a reboot starts: the one nginx sends traffic to.
        result = self.transport.run(as_deploy(RETIRE, UNIT_HELPER, layout.unit(live), layout.unit(next(c for c in COLORS if c != live))))
        problems = [line.removeprefix("vigil: ") for line in result.stderr.splitlines() if line.startswith("vigil: ")]
        if not result.ok:
            problems = (problems or ["retiring the old color failed"]) + [result.stderr.strip()[-300:]]
        self.record(step, FAILED if problems else CHANGED, summary=f"stopped after {self.settings.drain}s",
                    error="; ".join(problems), began=began)
        if problems:
            # Traffic is on the new release already: finish the deploy, but say the host needs a look.
            self.result.error = f"{step}: {'; '.join(problems)}"

    def finish(self, state: HostState, live: str) -> None:
        """Make the release current, record it, prune and unlock, in one round trip."""
        began, layout, release = time.monotonic(), self.settings.layout, self.release
        step = f"Make {release} current."
        # What the host holds now: the releases read under the lock, plus this one if it was just uploaded.
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        held = HostState(releases={**state.releases, release: state.releases.get(release) or {"uploaded_at": now}})
        protected = {release} | {rid for rid in (state.current, *state.colors.values()) if rid}
        doomed = prune_candidates(held, self.settings.keep, protected)
        line = self.history_line({"release": release, "previous": state.current,
                                  "color": next(c for c in COLORS if c != live), "result": "live"})
        result = self.transport.run(as_deploy(FINISH, layout.current, f"releases/{release}", f"{layout.release(release)}/.vigil-bad",
                                              layout.history, layout.releases, layout.lock, self.token, *doomed, stdin=line))
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
        self.record("Release the deploy lock.", CHANGED)

    def abandon(self, idle: str | None, state: HostState) -> None:
        """After a failure before the switch: stop the idle color, mark the release bad (unless it is the
        one serving, or it never ran: a failed redeploy or upload says nothing against it) and note the
        failure in the history."""
        layout, release = self.settings.layout, self.release
        if idle and self.release_tried:
            self.transport.run(helper(UNIT_HELPER, "stop", layout.unit(idle)))
        blamed = self.release_tried and release != state.current
        if blamed:
            self.transport.run(as_deploy('test -d "$1" && printf \'{"id": "%s", "status": "bad"}\\n\' "$2" > "$1/.vigil-bad"',
                                         layout.release(release), release))
        self.append_history({"release": release, "result": "failed", "step": self.result.operations[-1].name if self.result.operations else ""})
        self.record(f"Mark {release} bad." if blamed else f"Keep {release}.", CHANGED,
                    summary="the live color keeps serving" + (f"; {layout.service}@{idle} stopped" if idle and self.release_tried else ""))

    def history_line(self, entry: dict) -> bytes:
        return (json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock())), "who": self.who,
                            "ref": self.ref, **(({"rollback": True}) if self.rollback else {}), **entry}) + "\n").encode()

    def append_history(self, entry: dict) -> None:
        self.run(as_deploy('cat >> "$1"', self.settings.layout.history, stdin=self.history_line(entry)), "Write the deploy history.")


def deploy_work(settings_for: Callable[[Host], Settings], artifact: Artifact | None, who: str, lock_wait: float,
                rollback: bool = False, rollback_to: str | None = None, database=None, serving: dict | None = None,
                revert_first: str | None = None):
    """The per-host work runner.run calls for a deploy (or, with `rollback`, a return to an earlier release).

    serving: filled with host -> the release it serves once its deploy ended. revert_first: the host
    that reverts the current release's migrations before it rolls back.
    """

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        deploy = HostDeploy(transport, host_plan.host, settings_for(host_plan.host), artifact, who, lock_wait=lock_wait,
                            progress=progress, rollback=rollback, rollback_to=rollback_to, database=database,
                            revert_migrations=host_plan.host.name == revert_first)
        result = deploy.deploy()
        if serving is not None:
            serving[host_plan.host.name] = deploy.serving
        return result

    return work


def serving_line(results: list[HostResult], serving: dict[str, str]) -> str:
    """Which hosts serve which release after a (rolling, maybe stopped) deploy: 'r2 on vps1, vps2; r1 on vps3'."""
    by_release: dict[str, list[str]] = {}
    for result in results:
        release = serving.get(result.host) or ("not reached" if result.skipped or result.unreachable else "unknown")
        by_release.setdefault(release, []).append(result.host)
    return "; ".join(f"{release} on {', '.join(hosts)}" for release, hosts in by_release.items())


def settings_from_vars(vars, service: str) -> Settings:
    """A host's deploy settings for `service`, from its merged app and nginx role vars (names the key at fault)."""
    from vigil.errors import ConfigError

    health = vars["app_health"]
    spec = health.get(service) if isinstance(health, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not spec["path"].startswith("/") \
            or not isinstance(spec.get("release", False), bool):
        raise ConfigError(f"{vars.where('app_health')}.{service}: expected {{path: /..., release: true|false}}")
    ports = vars[f"nginx_{service}_ports"]
    if not isinstance(ports, dict) or set(ports) != set(COLORS) or ports["blue"] == ports["green"]:
        raise ConfigError(f"{vars.where(f'nginx_{service}_ports')}: expected two different ports, {{blue: PORT, green: PORT}}")
    tasks = (vars["app_deploy_tasks"] or {}).get(service) or []
    known_tasks = (vars["app_release_tasks"] or {}).get(service) or {}
    for task in tasks:
        if task not in known_tasks:
            raise ConfigError(f"{vars.where('app_deploy_tasks')}.{service}: {task!r} is not in app_release_tasks.{service}")
    name = vars.string("app_name", r"[a-z][a-z0-9-]{0,30}")
    return Settings(
        layout=Layout(vars.path("app_root"), name, service),
        group=vars.user("app_group"),
        upstream_file=f"/etc/nginx/conf.d/{name}-upstreams.conf",
        upstream_name=f"{name.replace('-', '_')}_{service}",
        ports={color: int(ports[color]) for color in COLORS},
        health_path=spec["path"],
        health_release=bool(spec.get("release", False)),
        checks=vars.integer("app_health_checks", minimum=1),
        health_timeout=vars.integer("app_health_timeout", minimum=1),
        drain=vars.integer("app_drain_seconds", minimum=0),
        keep=vars.integer("app_keep_releases", minimum=2),
        tasks=tuple(tasks),
        task_timeout=vars.integer("app_release_task_timeout", minimum=1),
        backup_first=vars.boolean("app_backup_before_tasks"),
        **migrations_settings(vars, service, known_tasks),
    )


def migrations_settings(vars, service: str, known_tasks: dict) -> dict:
    """A service's app_migrations entry ({dir, revert}) as Settings fields; none: nothing to revert."""
    from vigil.errors import ConfigError

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


def deploy_service(env: str, service: str, source, limit: str | None, options: RunOptions, reporter,
                   lock_wait: float = 0, environment=None, rollback: bool = False, rollback_to: str | None = None,
                   revert_migrations: bool = False, artifact: Artifact | None = None, promoted_from: str | None = None):
    """Build (or reuse) `service`'s artifact and deploy it to its hosts, rolling by options.serial.

    With `rollback`, nothing is built or shipped: each host returns to `rollback_to` or its previous
    good release through the same health-gated switch. `artifact`: ship this one (a promotion)
    instead of building `source` (`revert_migrations`: the first host first
    reverts, alone, the migrations the current release added). Returns (exit code, artifact or None, host
    results). The hosts are the group the secrets schema runs the service on; each is logged in to
    as the deploy user, never the bootstrap user.
    """
    import dataclasses as dc

    from vigil import secrets
    from vigil.build import build
    from vigil.config import load_inventory, load_role
    from vigil.errors import ConfigError, VigilError
    from vigil.report import Environment, append_local_audit, audit_record, exit_code, operator
    from vigil.runner import run
    from vigil.transport import SSHTransport

    environment = environment or Environment()
    inventory = load_inventory(env)
    schema = secrets.load_schema()
    try:
        # Only to mask them: a release's log may quote a value (a URL with its password).
        secrets.load(env)
    except VigilError:
        pass  # no identity for this env here (a CI deploy key without it): URL passwords are still masked
    if service not in schema.services:
        raise ConfigError(f"{service!r} is not a service of {schema.path.name} ({', '.join(schema.services)})")
    group = schema.services[service].hosts
    hosts = [host for host in inventory.select(limit)
             if host.name in inventory.hosts_in(group, where=f"secrets/schema.yml: services.{service}.hosts")]
    if not hosts:
        raise ConfigError(f"--limit {limit or 'all'} selects no host of group {group!r} in inventory/{env}.yml")
    roles = [load_role("app"), load_role("nginx")]
    settings = {host.name: settings_from_vars(inventory.vars_for(host, roles), service) for host in hosts}
    # Release tasks (migrations) touch the shared database: the first host runs them, alone, before
    # any other host starts the new release; the others skip them.
    first, *rest = hosts
    for host in (hosts if rollback else rest):
        settings[host.name] = dc.replace(settings[host.name], tasks=())
    try:
        db = secrets.database_host(inventory)
    except VigilError:
        db = None  # no database host in the inventory, or several: the app's database is not one vigil runs
    database = (db.name, lambda: SSHTransport(dc.replace(db, bootstrap_user=None), inventory.known_hosts, inventory.env)) \
        if db else None
    if revert_migrations:
        for host in hosts:
            if not settings[host.name].migrations_dir or not settings[host.name].revert_task:
                raise ConfigError(f"--migrations: {service} has no migrations to revert on {host.name} "
                                  f"(app_migrations.{service} in roles/app/defaults.yml or the inventory)")
    artifact = None if rollback else artifact or build(
        source, echo=lambda line: reporter.console.print(line, markup=False) if not reporter.json_output else None)
    who = operator()
    serving: dict[str, str] = {}

    def roll(batch: list[Host], previous: list[HostResult]) -> list[HostResult]:
        if any(result.failed for result in previous):
            now = environment.clock()
            return [HostResult(host.name, skipped="an earlier host failed", started=now, finished=now) for host in batch]
        return run(
            [HostPlan(host, []) for host in batch],
            lambda host: SSHTransport(dc.replace(host, bootstrap_user=None), inventory.known_hosts, inventory.env),
            options, reporter.progress,
            work=deploy_work(lambda host: settings[host.name], artifact, who, lock_wait, rollback, rollback_to, database, serving,
                             revert_first=first.name if revert_migrations else None),
            stop_after_failure=True,
        )

    results = roll([first], []) if (settings[first.name].tasks or revert_migrations) and rest else []
    results += roll(rest if results else hosts, results)
    code = exit_code(results)
    task = f"deploy.rollback {service}" if rollback else f"deploy.promote {service}" if promoted_from else f"deploy.{service}"
    record = audit_record(task, env, [r.host for r in results], code.name.lower(), environment.clock(),
                          sum(r.count(CHANGED) for r in results))
    record["release"] = artifact.id if artifact else (rollback_to or "previous")
    if promoted_from:
        record["promoted_from"] = promoted_from
    append_local_audit(record, environment)
    reporter.recap(f"{task} {record['release']}", env, results, notes={service: serving_line(results, serving)})
    return code, artifact, results


def break_locks(env: str, services: list[str], limit: str | None, reason: str, reporter, environment=None):
    """deploy.unlock --force: remove each host's deploy lock of `services`, recording who broke whose lock
    and why in the service's history and the local audit log. Returns (exit code, {host: {service: holder}})."""
    import dataclasses as dc

    from vigil.deploy_report import web_hosts
    from vigil.report import Environment, append_local_audit, audit_record, exit_code, operator
    from vigil.runner import run
    from vigil.transport import SSHTransport

    environment = environment or Environment()
    inventory, hosts, settings = web_hosts(env, services, limit)
    who, broken = operator(), {}

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        name = host_plan.host.name
        result = HostResult(name, started=environment.clock())
        for one in settings[name]:
            layout = one.layout
            step = f"Break {layout.service}'s deploy lock."
            answer = transport.run(as_deploy(BREAK_LOCK, layout.lock))
            if not answer.ok:
                op = OperationResult(step, FAILED, error=answer.stderr.strip()[-300:])
                result.error = f"{step}: {op.error}"
            elif answer.stdout.strip() == "@free":
                op = OperationResult(step, OK, summary="not locked")
            else:
                holder = _json(answer.stdout.strip()) or {"who": "unknown"}
                broken.setdefault(name, {})[layout.service] = holder
                line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(environment.clock())), "who": who,
                                   "result": "unlocked", "reason": reason, "holder": holder}) + "\n"
                transport.run(as_deploy('cat >> "$1"', layout.history, stdin=line.encode()))
                op = OperationResult(step, CHANGED, summary=f"held by {holder.get('who', 'unknown')} since "
                                                            f"{holder.get('since', '?')} (release {holder.get('release', '?')})")
            result.operations.append(op)
            if progress:
                progress(name, op)
        result.finished = environment.clock()
        return result

    results = run([HostPlan(host, []) for host in hosts],
                  lambda host: SSHTransport(dc.replace(host, bootstrap_user=None), inventory.known_hosts, inventory.env),
                  RunOptions(), reporter.progress, work=work)
    code = exit_code(results)
    record = audit_record(f"deploy.unlock {','.join(services)}", env, [r.host for r in results], code.name.lower(),
                          environment.clock(), sum(r.count(CHANGED) for r in results))
    record.update({"reason": reason, "broken": broken})
    append_local_audit(record, environment)
    reporter.recap(f"deploy.unlock {','.join(services)}", env, results)
    return code, broken


def promotable(from_env: str, service: str, source) -> Artifact:
    """The artifact `from_env`'s web hosts serve for `service`, from the local cache, or rebuilt from its git ref
    (the same commit builds the same id and bytes). Raises ConfigError naming why it cannot be promoted."""
    from vigil.build import build, built
    from vigil.deploy_report import read_states
    from vigil.errors import ConfigError

    results, states, _ = read_states(from_env, [service], None)
    unreached = [f"{r.host} ({r.unreachable or r.error})" for r in results if r.unreachable or r.error]
    if unreached:
        raise ConfigError(f"--from-env {from_env}: cannot read what {', '.join(unreached)} serves")
    serving = {host: per_host[service].current for host, per_host in states.items()}
    NOTHING = "nothing"
    releases = set(serving.values())
    if None in releases or len(releases) != 1:
        raise ConfigError(f"--from-env {from_env}: its hosts do not all serve one {service} release "
                          f"({', '.join(f'{host}: {release or NOTHING}' for host, release in serving.items())}); "
                          "finish that deploy first")
    release = releases.pop()
    locked = [host for host, per_host in states.items() if per_host[service].lock]
    if locked:
        raise ConfigError(f"--from-env {from_env}: a deploy of {service} is running on {', '.join(locked)}; promote once it is done")
    sums = {per_host[service].releases.get(release, {}).get("sha256") for per_host in states.values()}
    if len(sums) != 1:
        raise ConfigError(f"--from-env {from_env}: its hosts hold {release} with different bytes; nothing was promoted")
    meta = next(iter(states.values()))[service].releases.get(release, {})
    artifact = built(service, release)
    if artifact is None and meta.get("ref") and meta["ref"] != "worktree":
        import dataclasses as dc
        artifact = build(dc.replace(source, ref=meta["ref"]))
    if artifact is None:
        raise ConfigError(f"{service} release {release} ({from_env}) is not in .vigil/artifacts/{service}/ here, and was "
                          "built from a working tree, so it cannot be rebuilt: promote from the machine that built it, "
                          "or deploy a git ref (--ref) to both environments")
    if artifact.id != release or (meta.get("sha256") and artifact.sha256 != meta["sha256"]):
        raise ConfigError(f"{service}: the artifact built here for {release} ({artifact.id}, sha256 {artifact.sha256[:16]}) "
                          f"is not the one {from_env} runs (sha256 {str(meta.get('sha256'))[:16]}); nothing was promoted")
    return artifact
