"""The audit trail: who ran which task on which env and hosts, when, with what result.

Every mutating run appends one JSON line to each host's /var/log/vigil/audit.log (the line travels on
stdin) and one to this machine's .vigil/audit.log; both redacted.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from typing import Any

from vigil.core.commands import Command, script
from vigil.core.output import Environment
from vigil.core.redaction import REDACTOR

REMOTE_AUDIT_LOG = "/var/log/vigil/audit.log"
# Root's own line for each change the deploy user asked of a root helper (vigil-app-unit,
# vigil-switch-upstream): the deploy user can add to it only through them, read its newest TRAIL_LINES
# only through `vigil-app-unit trail`, and never edit it.
REMOTE_ACTIONS_LOG = "/var/log/vigil/deploy-actions.jsonl"
TRAIL_LINES = 200
# The shell function root's helpers (vigil-app-unit, vigil-switch-upstream) call as
# `record HELPER ACTION ARGS` to append to REMOTE_ACTIONS_LOG; its values are the helpers' checked words.
RECORD_ACTION = r"""
# One root-owned line per change asked for (read-only actions are not), in the audit trail the deploy
# user can add to only through these helpers and never edit.
record() {
    by=${SUDO_USER:-root}
    case "$by" in *[!A-Za-z0-9._-]*) by=unknown ;; esac
    (umask 027 && install -d -m 0750 "$(dirname -- "$VIGIL_ACTIONS_LOG")" \
        && printf '{"time":"%s","by":"%s","helper":"%s","action":"%s","args":"%s"}\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$by" "$1" "$2" "$3" >> "$VIGIL_ACTIONS_LOG") || true
}
""".replace("$VIGIL_ACTIONS_LOG", REMOTE_ACTIONS_LOG)


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


def append_local_audit(record: dict[str, Any], env: Environment | None = None) -> None:
    """Append `record` to this machine's audit log (.vigil/audit.log)."""
    path = (env or Environment()).state.audit_log
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:
        log.write(json.dumps(REDACTOR.redact_data(record), sort_keys=True) + "\n")


def audit_locally(task: str, env_name: str, hosts: list[str], result: str, environment: Environment | None = None,
                  **details: Any) -> None:
    """One line in this machine's audit log for a task that is not a run of operations (a backup, a
    secrets edit), with whatever else says what it did.

    Example: audit_locally("backup.create", "production", ["db1"], "ok", backup="20261126T031500Z-manual")
    """
    environment = environment or Environment()
    append_local_audit({**audit_record(task, env_name, hosts, result, environment.clock()), **details}, environment)
