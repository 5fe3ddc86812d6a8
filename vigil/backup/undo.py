"""Undoing a release's migrations by the database's history instead of its down migrations
(`deploy.rollback --restore-point`): the code goes back first, through the usual health-gated
switch, then the database to the restore point the release made just before it migrated.

Code first: the earlier release reading the newer schema for a moment is what expand/contract
migrations allow, a rollback that fails its health gate leaves the database untouched, and the
restore's own health checks then run against the code that matches the restored schema. Whatever
can refuse (no backup host, no restore point, a point the repository's window no longer reaches,
no confirmation) refuses before anything changes.
"""

from __future__ import annotations

from typing import Callable

from vigil.backup import pitr
from vigil.backup import restore as restoring
from vigil.backup.helper import connect
from vigil.backup.repository import find_repository, read_contents
from vigil.core.errors import ConfigError, ExitCode, VigilError
from vigil.core.inventory import load_inventory
from vigil.core.runner import HostResult
from vigil.deploy.rollout import serving_restore_point

FLAG = "--restore-point"
Say = Callable[[str], None]


def undo_migrations_by_restore(env: str, service: str, limit: str | None, yes: bool, say: Say,
                               roll_back: Callable[[], tuple[ExitCode, list[HostResult]]],
                               ) -> tuple[ExitCode, list[HostResult], dict | None]:
    """Roll `service` back (`roll_back`), then restore the database to the restore point its serving
    release made before its migrations. Returns the rollback's exit code and host results, and the
    restore's report (None when the rollback failed and the database was left as it was)."""
    inventory = load_inventory(env)
    repository = find_repository(inventory)
    if repository is None:
        raise ConfigError(f"{FLAG} needs a backup host (group `backup`, roles/pgbackrest) and inventory/{env}.yml "
                          "has none; --migrations runs the down migrations instead")
    host, point = serving_restore_point(env, service, limit)
    target = pitr.parse_target(point["name"], timeline=point["timeline"], flag=FLAG)
    with connect(inventory, repository.host) as transport:
        contents = read_contents(transport, repository)
    pitr.check_target(target, contents, repository, flag=FLAG)
    pitr.choose_backup(target, contents.backups, flag=FLAG)
    say(f"{host}: {service} release {point.get('release', '?')} made restore point {point['name']} "
        f"(timeline {point['timeline']}) before its migrations ran; after the rollback the database returns "
        "to it, and every write since is lost (a safety point is made first)")
    restoring.confirm(env, yes)
    code, results = roll_back()
    if code != ExitCode.OK:
        say("the rollback failed: the database was not restored")
        return code, results, None
    try:
        return code, results, pitr.restore_to(env, inventory, repository, target, say)
    except pitr.OutcomeUnknown:
        raise  # the restore may still be running: its own message says what to look at
    except VigilError as error:
        # The code is back already: say so, and how to finish, with whatever stopped the restore.
        error.message = (f"{service} was rolled back, but the database was not restored to {point['name']}: "
                         f"{error.message} (to finish: invoke backup.restore {point['name']} "
                         f"--timeline={point['timeline']} --env={env})")
        raise
