"""Editing an env's secrets by hand: the plaintext draft lives in memory, in a private directory that
goes with everything an editor put in it, and an edit is saved only once it is valid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from vigil.core.local_files import write_private
from vigil.core.paths import rel
from vigil.vault.env_files import parse_dotenv, render_dotenv
from vigil.vault.masking import register
from vigil.vault.paths import SecretsError, SecretsPaths, child_environment
from vigil.vault.schema import Schema
from vigil.vault.store import diff_values, load, locked, save


@contextlib.contextmanager
def private_draft_directory():
    """A 0700 directory in memory (/dev/shm) for the plaintext draft, removed with everything an editor
    put in it (backups, swap files) however the edit ends, a hang-up or a kill included."""
    directory = Path(tempfile.mkdtemp(prefix="vigil-secrets-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {number: signal.signal(number, interrupted) for number in (signal.SIGHUP, signal.SIGTERM)}
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for number, handler in previous.items():
            signal.signal(number, handler)


def validated_draft(draft: Path, env: str, schema: Schema) -> dict[str, str]:
    """The draft's values, once they parse and pass the schema; SecretsError naming every key at fault."""
    try:
        text = draft.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SecretsError("your edit is not UTF-8 text") from None
    edited = parse_dotenv(text, "your edit")
    register(edited, schema)
    problems = schema.problems(env, edited)
    if problems:
        raise SecretsError("; ".join(problems))
    return edited


def edit(
    env: str, paths: SecretsPaths, schema: Schema, editor: list[str], again: Callable[[str], bool]
) -> dict[str, list[str]]:
    """Decrypt the env's secrets to a private draft, run `editor` on it until the edit is valid or
    `again(why it is not)` says to give up, and save it. Returns the keys added, removed and changed.

    Example: edit("staging", paths, schema, ["nano"], again=lambda problem: False)
    """
    with locked(env, paths), private_draft_directory() as directory:
        values = load(env, paths, schema)
        draft = directory / f"{env}.env"
        write_private(draft, render_dotenv(values, list(schema.keys)))
        while True:
            if subprocess.run([*editor, str(draft)], env=child_environment()).returncode != 0:
                raise SecretsError(f"the editor {editor[0]} failed; nothing changed")
            try:
                edited = validated_draft(draft, env, schema)
                break
            except SecretsError as error:
                if not again(error.message):
                    raise SecretsError(f"{env}: edit discarded; {rel(paths.encrypted(env))} is unchanged") from None
        changes = diff_values(values, edited)
        if any(changes.values()):
            save(env, edited, schema, paths)
    return changes


def describe_changes(changes: dict[str, list[str]]) -> str:
    """"added: A; changed: B", or "no change"."""
    parts = [f"{label}: {', '.join(keys)}" for label, keys in changes.items() if keys]
    return "; ".join(parts) if parts else "no change"
