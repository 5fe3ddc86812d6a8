"""Output: everything a task prints goes through a `Reporter`: progress, lines, tables, the recap, JSON.

The Reporter passes lines, errors, progress, recaps and JSON through the process-wide redactor first,
so a secret that reached a host's output is masked on the screen and in JSON alike; a table's cells and
a marked line are built by the caller, who redacts and escapes what came from a host. Plain lines go
out as they are (no markup, no wrapping); only progress, recaps and tables are rich.
"""

from __future__ import annotations

import functools
import io
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from vigil.core.errors import ExitCode
from vigil.core.paths import LocalState
from vigil.core.redaction import REDACTOR
from vigil.core.runner import CHANGED, FAILED, OK, SKIPPED, HostResult, OperationResult

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# rich is imported on the first rich line, table or recap, not with this module: `--help TASK`, `--list`
# and a --json run start without it.

STATUS_STYLE = {OK: "green", CHANGED: "yellow", FAILED: "red", SKIPPED: "dim", "unreachable": "red"}


@dataclass
class Environment:
    """What a task writes to, what it keeps on this machine, and its clock: swapped by tests (httpie's
    Environment)."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    state: LocalState = field(default_factory=LocalState.default)
    clock: Any = time.time


def console_on(file: TextIO) -> Console:
    """A rich console on `file`: markup as written, no highlighting, emoji codes or wrapping of its own."""
    from rich.console import Console  # noqa: PLC0415  (see above: rich on first use)

    return Console(file=file, highlight=False, soft_wrap=True, emoji=False)


def escape(text: str) -> str:
    """`text` with rich's markup brackets escaped, for a rich line or table cell."""
    from rich.markup import escape as escape_markup  # noqa: PLC0415  (see above: rich on first use)

    return escape_markup(text)


def table_console(file: TextIO | None = None) -> Console:
    """A console for wide tables: a terminal's own width, else wide enough that piped output keeps whole ids."""
    console = console_on(file or sys.stdout)
    if not console.is_terminal:
        console.width = 200
    return console


# Colour and cursor codes an app's log carries (CSI and OSC sequences).
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
QUOTED_COMMAND = re.compile(r"`([^`]*)`")
BRIEF_COMMAND_CHARS = 60
BRIEF_LINE_CHARS = 200


def plain(text: str) -> str:
    """`text` without terminal escape codes."""
    return ANSI.sub("", text)


def brief(text: str) -> str:
    """An error as one line for a progress line or a recap cell: escape codes gone, a quoted multi-line
    command (a whole shell script) cut to its start, then the first line that says something; how
    many lines are left out is said. `-v` prints them, and the audit logs keep the whole error.

    Example: brief("`sh -c 'set -e\\n...'` exited 1: boom\\nmore") -> "`sh -c 'set -e …` exited 1: boom (+1 line: -v)"
    """

    def cut(match: re.Match) -> str:
        command = match.group(1)
        first = command.splitlines()[0] if command else ""
        if len(first) > BRIEF_COMMAND_CHARS or first != command:
            first = first[:BRIEF_COMMAND_CHARS].rstrip() + " …"
        return f"`{first}`"

    lines = [line.strip() for line in QUOTED_COMMAND.sub(cut, plain(text)).splitlines() if line.strip()]
    if not lines:
        return ""
    head = lines[0] if len(lines[0]) <= BRIEF_LINE_CHARS else lines[0][: BRIEF_LINE_CHARS - 1] + "…"
    left = len(lines) - 1
    return head + (f" (+{left} line{'s' if left > 1 else ''}: -v)" if left else "")


class Reporter:
    """Progress lines while hosts run, then a recap table or one JSON document; and every other line a
    task prints.

    json_output: print nothing but the final JSON document on stdout.
    verbose: also print each change's commands.
    """

    def __init__(
        self, env: Environment | None = None, json_output: bool = False, verbose: bool = False, check: bool = False
    ):
        self.env = env or Environment()
        self.json_output = json_output
        self.verbose = verbose
        self.check = check
        self._lock = threading.Lock()

    @functools.cached_property
    def console(self) -> Console:
        return console_on(self.env.stdout)

    @functools.cached_property
    def errors(self) -> Console:
        return console_on(self.env.stderr)

    @classmethod
    def quiet(cls) -> "Reporter":
        """A reporter that prints nothing: for a run another task drives and reports itself."""
        silent = io.StringIO()
        return cls(Environment(stdout=silent, stderr=silent), json_output=True)

    def say(self, text: str) -> None:
        """A progress line, left out of --json output."""
        if not self.json_output:
            self.line(text)

    def line(self, text: str = "", end: str = "\n") -> None:
        """A line of the task's output, exactly as given but redacted."""
        with self._lock:
            self.env.stdout.write(REDACTOR.redact(text) + end)
            self.env.stdout.flush()

    def prompt(self, question: str) -> str:
        """Ask on stderr (stdout may be --json's document) and read the answer from stdin."""
        with self._lock:
            self.env.stderr.write(question)
            self.env.stderr.flush()
        return sys.stdin.readline()

    def error(self, text: str) -> None:
        """A line on stderr (red on a terminal)."""
        with self._lock:
            self.errors.print(escape(REDACTOR.redact(text)), style="red")

    def document(self, data: Any) -> None:
        """One JSON document on stdout; strings are redacted before serialising, since JSON escaping
        would hide a secret from the redactor."""
        self.line(json.dumps(REDACTOR.redact_data(data), indent=2))

    def table(self, table: Table) -> None:
        """A rich table (cells already escaped), as wide as piped output needs."""
        with self._lock:
            table_console(self.env.stdout).print(table)

    def marked(self, markup: str) -> None:
        """A line with rich markup (styles); whatever came from a host in it must be escaped already."""
        with self._lock:
            table_console(self.env.stdout).print(markup)

    def progress(self, host: str, op: OperationResult) -> None:
        """One line per operation as it finishes; changes show their summary (and diff with --diff)."""
        if self.json_output:
            return
        status = "would change" if (self.check and op.status == CHANGED) else op.status
        style = STATUS_STYLE.get(op.status, "")
        detail = plain(op.error or op.summary) if self.verbose else brief(op.error or op.summary)
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
            self.document({"task": task, "env": env, "check": self.check, "exit_code": int(exit_code(results)),
                           "hosts": [result.as_dict() for result in results], **({"notes": notes} if notes else {})})
            return
        from rich.table import Table  # noqa: PLC0415  (see above: rich on first use)

        table = Table(title=f"{task} on {env}" + (" (check mode: nothing was changed)" if self.check else ""))
        for column in ("host", "ok", "changed", "failed", "skipped", "time", "result"):
            table.add_column(column, justify="right" if column not in ("host", "result") else "left")
        for result in results:
            style = STATUS_STYLE.get(result.status, "")
            outcome = (
                result.unreachable
                or result.error
                or (f"skipped: {result.skipped}" if result.skipped else result.status)
            )
            table.add_row(
                result.host, str(result.count(OK)), str(result.count(CHANGED)), str(result.failures),
                str(result.count(SKIPPED)), f"{result.finished - result.started:.1f}s",
                f"[{style}]{escape(REDACTOR.redact(plain(outcome) if self.verbose else brief(outcome)))}[/]",
            )
        with self._lock:
            self.console.print(table)
            for name, line in (notes or {}).items():
                self.console.print(f"{escape(name)}: {escape(REDACTOR.redact(line))}")


def exit_code(results: list[HostResult]) -> ExitCode:
    """HOST_FAILED if any host failed a step, else UNREACHABLE if any was unreachable, else OK."""
    if any(r.error for r in results):
        return ExitCode.HOST_FAILED
    if any(r.unreachable for r in results):
        return ExitCode.UNREACHABLE
    return ExitCode.OK
