"""What a deploy keeps before it changes the database (migrations, or reverting them), so the change
can be undone to the second before it.

That is a named restore point in the pgBackRest repository on the env's backup host
(`vigil-migrate-<UTC>`, archived at once by vigil-restore-point on the database host, a root helper
the deploy user's sudo allows with fixed words only): nothing is copied, and `backup.restore <name>`
returns the database to exactly that moment. An env without a backup host keeps nothing, and the
deploy says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from vigil.core.commands import Command, script
from vigil.core.redaction import REDACTOR
from vigil.deploy.scripts import helper
from vigil.deploy.settings import RESTORE_POINT_HELPER
from vigil.deploy.state import parse_json_object

# A restore point's name: what made it and when (UTC), the one pattern deploys and backup.restore read.
POINT_NAME = r"vigil-[a-z]+-(?P<made>[0-9]{8}T[0-9]{6}Z)"
# vigil-restore-point's answer: epoch seconds, timeline, the point's name.
POINT = re.compile(rf"^([0-9]+(?:\.[0-9]+)?)\|([0-9]+)\|({POINT_NAME})$")
# Beside a release's files: the restore point made before its migrations ran.
RECORD = ".vigil-restore-point.json"


@dataclass(frozen=True)
class DatabaseHost:
    """The env's database host as a deploy reaches it (as the deploy user), and whether its WAL goes
    to a pgBackRest repository (only then can a deploy keep a restore point)."""

    name: str
    connect: Callable[[], Any]
    restore_points: bool = False
    env: str = "sandbox"  # named in the command a restore point's record gives


@dataclass(frozen=True)
class Kept:
    """What was kept: the restore point and the command back to it (for messages), and its record beside
    the release."""

    summary: str
    record: dict


class KeepFailed(Exception):
    """Nothing could be kept (the helper failed or answered what it never says): the deploy stops."""


def keep_command(label: str) -> Command:
    """The helper call: a restore point of kind `revert` before reverting migrations (label pre-revert),
    else `migrate`."""
    return helper(RESTORE_POINT_HELPER, "revert" if "revert" in label else "migrate")


def parse_kept(database: DatabaseHost, stdout: str, release: str) -> Kept:
    """The helper's answer as the restore point kept, with the command that returns to it."""
    found = POINT.match(stdout.strip().splitlines()[-1] if stdout.strip() else "")
    if not found:
        raise KeepFailed(f"{database.name}: vigil-restore-point answered {REDACTOR.redact(stdout.strip()[-200:])!r}")
    at, timeline, name = float(found.group(1)), int(found.group(2)), found.group(3)
    back = f"invoke backup.restore {name} --timeline={timeline} --env={database.env}"
    record = {"name": name, "at": datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "timeline": timeline, "release": release, "restore": back}
    return Kept(f"restore point {name} (timeline {timeline}); to return to it: {back}", record)


def keep(database: DatabaseHost, transport, host, label: str, release: str, timeout: float) -> Kept:
    """Keep the database now, from `host` (over `transport`, or a connection of the database host's own
    when it is another host); KeepFailed says why not."""
    command = keep_command(label)
    if database.name == host.name:
        result = transport.run(command, timeout=timeout)
    else:
        with database.connect() as other:
            result = other.run(command, timeout=timeout)
    if not result.ok:
        raise KeepFailed(f"{database.name}: `{command.display(host.user)}` exited {result.status}: "
                         f"{REDACTOR.redact(result.stderr.strip()[-500:])}")
    return parse_kept(database, result.stdout, release)


def record_json(kept: Kept) -> str:
    return json.dumps(kept.record, sort_keys=True)


# The release serving now, then the restore point it made before its migrations ran (RECORD beside its
# files), as the deploy user; no record (it ran no migration, or the env had no backup host then) is an
# empty second part.
SERVING_POINT = r'''
current=$(readlink -- "$1") || exit 0
printf '%s\n' "${current##*/}"
cat -- "$2/${current##*/}/$3" 2>/dev/null || true
'''


def serving_point_command(current_link: str, releases: str) -> Command:
    return script(SERVING_POINT, current_link, releases, RECORD, sudo=False)


def parse_serving_point(stdout: str) -> tuple[str | None, dict | None]:
    """SERVING_POINT's answer: the serving release (None: none) and its restore point record (name, at,
    timeline, release), or None when there is none or it is not one: a record is read, never trusted,
    so its name, time, timeline and release are checked."""
    release, _, rest = stdout.partition("\n")
    release = release.strip() or None
    record = parse_json_object(rest) if rest.strip() else None
    if not record:
        return release, None
    name, timeline = record.get("name"), record.get("timeline")
    if not isinstance(name, str) or not re.fullmatch(POINT_NAME, name) or type(timeline) is not int or timeline < 1:
        return release, None
    try:
        datetime.strptime(name.rsplit("-", 1)[1], "%Y%m%dT%H%M%SZ")
    except ValueError:  # a name of the right shape, but no real time
        return release, None
    return release, record if record.get("release") == release else None
