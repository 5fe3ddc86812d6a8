"""The deploy lock on a host: taken with the host's state in one round trip, kept alive by a heartbeat
while the deploy runs, and taken over once its holder has been silent longer than the lease.

The lock is `<service>/.deploy-lock/` (scripts.TAKE_LOCK): owner.json says who holds it (user,
control host, process id, release, the deploy's token) and `heartbeat`'s age how long ago it was
last heard from. A deploy that dies or loses its connection stops beating; the next deploy, after
`app_lock_lease_seconds`, takes the lock over and notes it, so no lock strands a team.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Callable

from vigil.core.connectors import Transport
from vigil.core.errors import HostError, HostKeyError, UnreachableError
from vigil.deploy.scripts import HEARTBEAT, LOCK_AND_STATE, as_deploy
from vigil.deploy.settings import COLORS, Settings
from vigil.deploy.state import HostState, holder_line, parse_holder, parse_state

# While waiting for another deploy's lock, a line every this many seconds.
LOCK_WAIT_NOTE = 10
# The heartbeat's interval is a quarter of the lease, but never shorter than this.
HEARTBEAT_MIN_INTERVAL = 5
# TAKE_LOCK's exit status when another deploy holds the lock.
HELD = 75
# After a lost connection, a new one is tried this often.
RECONNECT_PAUSE = 5


def owner_record(who: str, release: str, ref: str, token: str, now: float) -> bytes:
    """owner.json for a lock this process takes: enough for an operator to find the deploy."""
    return json.dumps({"who": who, "control_host": socket.gethostname(), "pid": os.getpid(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                       "release": release or "rollback", "ref": ref, "token": token}).encode()


def acquire(transport: Transport, host: str, settings: Settings, owner: bytes, lock_wait: float,
            note_every: float = LOCK_WAIT_NOTE, waiting: Callable[[str], None] | None = None,
            started: str = "") -> HostState:
    """Take the lock, append `started` (a history line) and read the host's state in the same round
    trip, waiting up to `lock_wait` seconds for a live holder (`waiting` hears about it every
    `note_every` seconds). The state says whose lock was taken over, if one was. HostError names the
    holder when the wait runs out."""
    deadline, next_note = time.monotonic() + lock_wait, time.monotonic() + note_every
    while True:
        result = transport.run(
            as_deploy(
                LOCK_AND_STATE,
                settings.layout.lock,
                str(settings.lock_lease),
                settings.layout.history,
                started,
                settings.layout.base,
                settings.upstream_file,
                settings.upstream_name,
                *(settings.layout.unit(color) for color in COLORS),
                stdin=owner,
            )
        )
        if result.ok:
            return parse_state(result.stdout)
        if result.status != HELD:
            raise HostError(host, f"taking the deploy lock failed: {result.stderr.strip()[-300:]}")
        holder, silent = parse_holder(result.stdout)
        now = time.monotonic()
        if now >= deadline:
            raise HostError(
                host,
                f"another deploy holds the lock: {holder_line(holder)} (release {holder.get('release', '?')}), "
                f"its heartbeat {silent} s ago; a lock silent for {settings.lock_lease} s is taken over by the "
                "next deploy. Wait (--lock-wait) or, if that deploy died, break the lock with "
                f"`invoke deploy.unlock --app={settings.layout.service} --force --reason=WHY`",
            )
        if waiting and now >= next_note:
            next_note = now + note_every
            waiting(f"held by {holder_line(holder)}, its heartbeat {silent} s ago; "
                    f"{int(deadline - now)} s of --lock-wait left")
        time.sleep(1)


def takeover_note(state: HostState, settings: Settings) -> str:
    """What the step says when the lock was taken over ("" when it was free)."""
    if not state.stale_lock:
        return ""
    return (f"took over the lock of {holder_line(state.stale_lock)}, silent for {state.stale_lock_silent} s "
            f"(lease {settings.lock_lease} s)")


def reconnect(transport: Transport, window: float, waiting: Callable[[str], None] | None = None,
              pause: float = RECONNECT_PAUSE) -> str:
    """After the connection to a host was lost, connect again, trying for up to `window` seconds, so
    the deploy can clean up, note its failure in the host's history and release its lock. Returns ""
    once connected, else why not. A host key that changed meanwhile is not tried again."""
    again = getattr(transport, "reconnect", None)
    if again is None:
        return "this connection cannot be opened again"
    deadline = time.monotonic() + window
    while True:
        try:
            again()
            return ""
        except HostKeyError as error:
            return error.reason
        except UnreachableError as error:
            left = deadline - time.monotonic()
            if left <= pause:
                return error.reason
            if waiting:
                waiting(f"connecting again to release the lock ({int(left)} s left): {error.reason}")
            time.sleep(pause)


class Heartbeat:
    """Between start() and stop() (or in a `with` block), touches the lock every lease/4 seconds on a
    thread of its own.

    Example: with Heartbeat(transport, settings, token): ...the deploy's steps...
    """

    def __init__(self, transport: Transport, settings: Settings, token: str):
        self.command = as_deploy(HEARTBEAT, settings.layout.lock, token)
        self.interval = max(HEARTBEAT_MIN_INTERVAL, settings.lock_lease / 4)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._beat, args=(transport,), daemon=True, name="deploy heartbeat")

    def start(self) -> "Heartbeat":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _beat(self, transport: Transport) -> None:
        while not self.stopping.wait(self.interval):
            try:
                transport.run(self.command, timeout=self.interval)
            except Exception:  # a lost connection fails the deploy's own next step; the lease covers the rest
                pass
