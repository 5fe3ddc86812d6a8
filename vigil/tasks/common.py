"""What every host-touching task shares: its flags' help and turning errors into exit codes."""

from __future__ import annotations

import functools
import os
import sys
import traceback

from invoke.exceptions import Exit

from vigil.commands import REDACTOR
from vigil.errors import ExitCode, VigilError

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
            print(f"error: {REDACTOR.redact(error.message)}", file=sys.stderr)
            raise Exit(code=int(error.exit_code)) from None
        except (Exit, KeyboardInterrupt):
            raise
        except Exception as error:
            # A bug, not bad input: still never a value on the screen. VIGIL_DEBUG=1 shows where.
            print(f"error: unexpected {type(error).__name__}: {REDACTOR.redact(str(error))}", file=sys.stderr)
            if os.environ.get("VIGIL_DEBUG"):
                print(REDACTOR.redact(traceback.format_exc()), file=sys.stderr)
            raise Exit(code=int(ExitCode.HOST_FAILED)) from None

    return wrapper
