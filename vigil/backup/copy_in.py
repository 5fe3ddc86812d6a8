"""`backup.import`'s side on this machine of the program it runs on the database host
(vigil/backup/copy_in_program.py, whose docstring says what each action does): the command that runs it,
its answer read, and the figures compared, so the decision to swap is made and tested here too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vigil.backup.access import BackupError
from vigil.backup.source import Source
from vigil.core.commands import Command
from vigil.core.redaction import REDACTOR

DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Shipped as text and run by `python3 -I -c`: the host needs nothing of vigil installed.
COPY_IN = (Path(__file__).parent / "copy_in_program.py").read_text()


@dataclass(frozen=True)
class Target:
    """Where the copy goes on the database host: the app's database and role, and the scratch name."""

    database: str
    owner: str

    @property
    def scratch(self) -> str:
        return f"{self.database}_import"[:63]


def copy_in_command(action: str, source: Source | str, target: Target, keep_as: str = "",
                    rows_ok: bool = False) -> Command:
    """COPY_IN's `action` on `source` (a PaaS's URL, or the path of an archive put on the host), its
    configuration (the password among it) on stdin, never in argv. `rows_ok`: the app's database may hold
    rows (--replace, once they are backed up)."""
    for name in (target.database, target.owner, target.scratch, *([keep_as] if keep_as else [])):
        if not DATABASE_NAME.fullmatch(name):
            raise BackupError(f"{name!r} is not a database or role name backup.import can use (a-z, 0-9, _)")
    config = {"target": target.database, "scratch": target.scratch, "owner": target.owner, "keep_as": keep_as,
              "rows_ok": rows_ok}
    if isinstance(source, Source):
        config.update(service=source.service_file(), pgpass=source.password_file(), ca=source.ca)
    else:
        config["dump"] = source
    return Command(("python3", "-I", "-c", COPY_IN, action), sudo=True, stdin=json.dumps(config).encode())


def answer_of(ok: bool, stdout: str, stderr: str, action: str, host: str) -> dict:
    """COPY_IN's last JSON line, or its error as a BackupError (masked: a source error may quote the URL)."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if ok and lines:
        return json.loads(lines[-1])
    problem = {}
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith("{"):
            problem = json.loads(line)
            break
    what = problem.get("error") or f"backup.import {action}"
    detail = problem.get("detail") or stderr.strip()[-300:]
    raise BackupError(REDACTOR.redact(f"{host}: {what} failed: {detail}"))


@dataclass(frozen=True)
class Mismatch:
    name: str
    source: list | None
    copy: list | None

    def describe(self) -> str:
        def side(figures):
            if figures is None:
                return "missing"
            return f"last value {figures[1]}" if figures[0] == -1 else f"{figures[0]} rows, checksum {figures[1]}"

        return f"{self.name}: source {side(self.source)}, copy {side(self.copy)}"


def compare(source: dict[str, list], copy: dict[str, list]) -> list[Mismatch]:
    """Every table (rows and checksum) and sequence (last value) that differs or is on one side only."""
    return [Mismatch(name, source.get(name), copy.get(name)) for name in sorted(set(source) | set(copy))
            if source.get(name) != copy.get(name)]
