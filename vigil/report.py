"""Report: live progress, the recap table, --json, and the audit trail.

Everything vigil prints goes through `Reporter`, which passes all text through
the process-wide redactor first, so a secret that reached a host's output is
masked on the screen, in JSON and in the audit log alike.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vigil.commands import REDACTOR, Command, script
from vigil.config import REPO_ROOT
from vigil.errors import ExitCode
from vigil.runner import CHANGED, FAILED, OK, SKIPPED, HostResult, OperationResult

REMOTE_AUDIT_LOG = "/var/log/vigil/audit.log"
LOCAL_AUDIT_LOG = REPO_ROOT / ".vigil" / "audit.log"
STATUS_STYLE = {OK: "green", CHANGED: "yellow", FAILED: "red", SKIPPED: "dim", "unreachable": "red"}


@dataclass
class Environment:
    """What a task writes to and when: swapped by tests (httpie's Environment)."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    local_audit_log: Path = LOCAL_AUDIT_LOG
    clock: Any = time.time


class Reporter:
    """Progress lines while hosts run, then a recap table or one JSON document.

    json_output: print nothing but the final JSON document on stdout.
    verbose: also print each change's commands.
    """

    def __init__(self, env: Environment | None = None, json_output: bool = False, verbose: bool = False, check: bool = False):
        self.env = env or Environment()
        self.json_output = json_output
        self.verbose = verbose
        self.check = check
        self.console = Console(file=self.env.stdout, highlight=False, soft_wrap=True)
        self.errors = Console(file=self.env.stderr, highlight=False, soft_wrap=True)
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        if not self.json_output:
            with self._lock:
                self.console.print(escape(REDACTOR.redact(text)))

    def error(self, text: str) -> None:
        with self._lock:
            self.errors.print(escape(REDACTOR.redact(text)), style="red")

    def progress(self, host: str, op: OperationResult) -> None:
        """One line per operation as it finishes; changes show their summary (and diff with --diff)."""
        if self.json_output:
            return
        status = "would change" if (self.check and op.status == CHANGED) else op.status
        style = STATUS_STYLE.get(op.status, "")
        detail = op.error or op.summary
        line = f"[{style}]{status:>12}[/] [bold]{escape(host)}[/] {escape(op.name)}"
        if detail and op.status != OK or (detail and self.verbose):
            line += f" [dim]({escape(REDACTOR.redact(detail))})[/]"
        with self._lock:
            self.console.print(line)
            if self.verbose:
                for command in op.commands:
                    self.console.print(f"             [dim]$ {escape(REDACTOR.redact(command))}[/]")
            if op.diff:
                self.console.print(escape(REDACTOR.redact(op.diff)), style="cyan")

    def recap(self, task: str, env: str, results: list[HostResult], notes: dict[str, str] | None = None) -> None:
        """The recap table, or the JSON document with --json; `notes` (name -> line) follow the table,
        or are the JSON document's "notes"."""
        if self.json_output:
            document = {"task": task, "env": env, "check": self.check, "exit_code": int(exit_code(results)),
                        "hosts": [result.as_dict() for result in results], **({"notes": notes} if notes else {})}
            # Redact the strings, then serialise: JSON escaping would hide a secret from the redactor.
            print(json.dumps(REDACTOR.redact_data(document), indent=2), file=self.env.stdout)
            return
        table = Table(title=f"{task} on {env}" + (" (check mode: nothing was changed)" if self.check else ""))
        for column in ("host", "ok", "changed", "failed", "skipped", "time", "result"):
            table.add_column(column, justify="right" if column not in ("host", "result") else "left")
        for result in results:
            style = STATUS_STYLE.get(result.status, "")
            outcome = result.unreachable or result.error or (f"skipped: {result.skipped}" if result.skipped else result.status)
            table.add_row(
                result.host, str(result.count(OK)), str(result.count(CHANGED)), str(result.count(FAILED)),
                str(result.count(SKIPPED)), f"{result.finished - result.started:.1f}s",
                f"[{style}]{escape(REDACTOR.redact(outcome))}[/]",
            )
        with self._lock:
            self.console.print(table)
            for name, line in (notes or {}).items():
                self.console.print(f"{escape(name)}: {escape(REDACTOR.redact(line))}")


def table_console(file: TextIO | None = None) -> Console:
    """A console for wide tables: a terminal's own width, else wide enough that piped output keeps whole ids."""
    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 200
    return console


def exit_code(results: list[HostResult]) -> ExitCode:
    """HOST_FAILED if any host failed a step, else UNREACHABLE if any was unreachable, else OK."""
    if any(r.error for r in results):
        return ExitCode.HOST_FAILED
    if any(r.unreachable for r in results):
        return ExitCode.UNREACHABLE
    return ExitCode.OK


def operator() -> str:
    """Who is running vigil: the local user at the control machine, or CI."""
    who = os.environ.get("VIGIL_OPERATOR") or f"{getpass.getuser()}@{socket.gethostname()}"
    return who + (" (ci)" if os.environ.get("CI") else "")


def audit_record(task: str, env: str, hosts: list[str], result: str, when: float, changed: int = 0) -> dict[str, Any]:
    """One audit line: who ran which task on which env and hosts, when, with what result."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
        "who": operator(),
        "task": task,
        "env": env,
        "hosts": hosts,
        "result": result,
        "changed": changed,
    }


def audit_command(record: dict[str, Any]) -> Command:
    """Append `record` as one JSON line to the host's audit log (the line travels on stdin)."""
    line = (json.dumps(REDACTOR.redact_data(record), sort_keys=True) + "\n").encode()
    return script(
        'install -d -m 0750 "$(dirname -- "$1")" && umask 027 && cat >> "$1"',
        REMOTE_AUDIT_LOG,
        stdin=line,
    )


def append_local_audit(record: dict[str, Any], env: Environment) -> None:
    path = env.local_audit_log
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:
        log.write(json.dumps(REDACTOR.redact_data(record), sort_keys=True) + "\n")
