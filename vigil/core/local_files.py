"""Files vigil writes on this machine: whole or not at all, and private ones private from the first byte;
and the locks that make a second vigil process wait its turn to write them."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import IO, Callable

# How often a lock another process holds is tried again.
LOCK_POLL_SECONDS = 0.2


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically (a fresh temporary file, synced, then renamed over it), with
    `mode` from the moment the file exists: a reader sees the old file or the new one, never half.

    Example: write_private(Path(".vigil/age/sandbox.key"), key_text)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        # O_CREAT's mode passes through the umask; the file must end up exactly `mode`.
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def unique_path(directory: Path, stem: str, suffix: str) -> Path:
    """directory/stem+suffix, or with -2, -3... when that is taken: nothing collected is ever overwritten.

    Example: unique_path(incident.directory, "logs-collect-031500", ".txt")
    """
    for number in range(1, 1000):
        path = directory / f"{stem}{'' if number == 1 else f'-{number}'}{suffix}"
        if not path.exists():
            return path
    raise FileExistsError(f"{directory}: no free name for {stem}{suffix}")


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file of any size, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_within(handle: IO, seconds: float, on_wait: Callable[[], None] = lambda: None) -> bool:
    """Take an exclusive flock on the open file `handle`, waiting up to `seconds` for the process holding
    it; False when it was still held then. `on_wait` runs once, when the lock is found held.

    Example: if not lock_within(handle, 60): raise SecretsError("... not free within 60 s")
    """
    deadline = time.monotonic() + seconds
    waiting = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            if not waiting:
                on_wait()
                waiting = True
            time.sleep(LOCK_POLL_SECONDS)
