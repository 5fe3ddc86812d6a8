"""What every host-touching task shares: its flags' help and turning errors into exit codes."""

from __future__ import annotations

import functools
import os
import sys
import traceback

from invoke.exceptions import Exit

from vigil.core.errors import ConfigError, ExitCode, VigilError
from vigil.core.output import Reporter

HOST_FLAGS_HELP = {
    "env": "Environment: inventory/<env>.yml (default: sandbox).",
    "limit": "Only these hosts or groups, comma-separated (default: all).",
    "check": "Plan only: print what would change, change nothing.",
    "diff": "Show file differences (secret values masked).",
    "verbose": "Also print the commands each change runs.",
    "json": "Print one JSON document instead of progress and a table.",
    "forks": "How many hosts run at once (default: 10).",
    "serial": "Roll through the hosts in batches of this many (default: all at once).",
    "var": "Override a variable: --var key=value (repeatable); beats every inventory level.",
}


def exits_cleanly(function):
    """Turn a VigilError into its one-line message and named exit code, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except VigilError as error:
            Reporter().error(f"error: {error.message}")
            raise Exit(code=int(error.exit_code)) from None
        except (Exit, KeyboardInterrupt):
            raise
        except Exception as error:
            # A bug, not bad input: still never a value on the screen. VIGIL_DEBUG=1 shows where.
            reporter = Reporter()
            reporter.error(f"error: unexpected {type(error).__name__}: {error}")
            if os.environ.get("VIGIL_DEBUG"):
                reporter.error(traceback.format_exc())
            raise Exit(code=int(ExitCode.HOST_FAILED)) from None

    return wrapper


def exit_unless_ok(code: ExitCode) -> None:
    """Leave with `code` unless it is OK."""
    if code != ExitCode.OK:
        raise Exit(code=int(code))


def confirm_key(task_name: str, describe: str, question: str, yes: bool) -> bool:
    """A host key shown (its fingerprint) and accepted by a person at the terminal, or by --yes.

    Without a terminal and without --yes nothing can be confirmed: an error, not a silent accept.
    """
    Reporter().line(describe)
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(f"{task_name}: no terminal to confirm on; check the fingerprint and pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
