"""Copies off a host: streamed in and checked on arrival (an export, a pulled backup set), an export
decrypted here and checked against its dump's recorded checksum, a copy put on another host. A copy
that fails leaves nothing named."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyrage

from vigil.backup.access import BackupError
from vigil.core.commands import Command, checked_upload
from vigil.core.connectors import Transport
from vigil.core.errors import ConfigError
from vigil.core.inventory import Host
from vigil.core.paths import LocalState, rel
from vigil.core.redaction import REDACTOR


def receive(transport: Transport, command: Command, target: Path, host: str, what: str) -> tuple[str, int, dict]:
    """Stream what `command` prints into `target`.partial and check it against the sha256 and size the host
    reports last on stderr (as JSON). Returns (sha256, size, the host's report), the partial file kept for
    the caller to name; on any failure nothing is kept."""
    partial = target.with_name(target.name + ".partial")
    digest, size = hashlib.sha256(), 0
    with open(partial, "wb") as out:
        def sink(chunk: bytes) -> None:
            nonlocal size
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)

        try:
            result = transport.run(command, timeout=7200, sink=sink)
        except BaseException:
            out.close()
            partial.unlink(missing_ok=True)
            raise
    sent = last_json(result.stderr)
    if not result.ok or not sent:
        partial.unlink(missing_ok=True)
        raise BackupError(f"{host}: copying {what} failed: {REDACTOR.redact(result.stderr.strip()[-300:])}")
    if (sent.get("sha256"), sent.get("size")) != (digest.hexdigest(), size):
        partial.unlink(missing_ok=True)
        raise BackupError(
            f"{host}: {what} arrived damaged (sha256 {digest.hexdigest()[:16]}, {size} bytes; "
            f"sent {str(sent.get('sha256'))[:16]}, {sent.get('size')} bytes); nothing was kept"
        )
    return digest.hexdigest(), size, sent


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def decrypt(path: Path, identities: list, out: Path) -> Path:
    """Decrypt an export (backup.export) to `out`, checked against the dump's recorded sha256; on any failure
    (a wrong key above all) nothing is written."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    sidecar_path = path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
    try:
        data = pyrage.decrypt(path.read_bytes(), identities)
    except pyrage.DecryptError as error:
        raise BackupError(
            f"{path}: cannot decrypt it with the identities given ({error}); nothing was written"
        ) from None
    want = sidecar.get("dump_sha256")
    if not want:
        raise BackupError(f"{sidecar_path}: missing, or without the dump's checksum; nothing was written")
    if hashlib.sha256(data).hexdigest() != want:
        raise BackupError(
            f"{path}: decrypted, but not the dump the host recorded (sha256 differs); nothing was written"
        )
    if out.exists():
        raise ConfigError(f"{out}: exists already; nothing was written")
    partial = out.with_name(out.name + ".partial")
    try:
        with open(partial, "wb", opener=lambda p, flags: os.open(p, flags, 0o600)) as handle:
            handle.write(data)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


def copy_to_host(transport: Transport, host: Host, path: Path, directory: str) -> str:
    """Put a pulled backup set (encrypted, as a tarball) and its record on another inventory host, checked on
    arrival."""
    for file in (path.with_suffix(".json"), path):  # the metadata first: the backup's arrival completes the copy
        result = transport.run(checked_upload(file, f"{directory}/{file.name}"), timeout=7200)
        if not result.ok:
            raise BackupError(f"{host.name}: copying {file.name} failed: {result.stderr.strip()[-300:]}")
    target = f"{directory}/{path.name}"
    return target


def pulled_dir(env: str, to_dir: str | None, state: LocalState | None = None) -> Path:
    """Where `backup.pull` and `backup.export` put a copy: --to-dir, else .vigil/backups/<env>/."""
    return Path(to_dir) if to_dir else (state or LocalState.default()).backups / env


def describe(path: Path) -> str:
    """A pulled copy's path as the task prints it: relative to the repository when inside it."""
    return rel(path)
