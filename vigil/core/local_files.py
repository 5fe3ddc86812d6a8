"""Files vigil writes on this machine: whole or not at all, and private ones private from the first byte."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
