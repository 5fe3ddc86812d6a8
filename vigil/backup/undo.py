"""Undoing a release's migrations by the database's history instead of its down migrations
(`deploy.rollback --restore-point`): the database returns to the restore point the serving release
made just before it migrated, and the code rolls back to the release before it while maintenance
mode still covers the site, so nobody is served one release on the other's schema.

Whatever can refuse (no backup host, a --limit short of every host the database serves, hosts that
disagree on the release, no restore point, a point the repository's window no longer reaches, no
confirmation) refuses before anything changes. The restore holds the repository's backup lock
until the rollback is done. A rollback that fails after the restore leaves maintenance mode on,
and says how to finish.
"""

from __future__ import annotations

from typing import Callable

from vigil.backup import pitr
from vigil.backup import restore as restoring
from vigil.backup.access import BackupError, connect
from vigil.backup.repository import find_repository, read_contents
from vigil.core.errors import ConfigError, ExitCode, VigilError
from vigil.core.inventory import load_inventory
from vigil.core.runner import HostResult
from vigil.deploy.rollout import serving_restore_point

FLAG = "--restore-point"
Say = Callable[[str], None]
RollBack = Callable[[], tuple[ExitCode, list[HostResult]]]


def undo_migrations_by_restore(env: str, service: str, limit: str | None, yes: bool, say: Say, roll_back: RollBack,
                               prompt: Callable[[str], str] = input) -> dict:
    """Restore the database to the restore point `service`'s serving release made before its migrations,
    then, maintenance mode still on, roll `service` back (`roll_back`). Returns the restore's report;
    raises BackupError when the rollback failed (the database restored, maintenance mode on)."""
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
    pitr.choose_backup(target, contents.backups, flag=FLAG, histories=contents.histories)
    about = (f"{host}: {service} release {point['release']} made restore point {point['name']} (timeline "
             f"{point['timeline']}) before its migrations ran. The database returns to it, losing every write "
             f"since (a safety point is made first), then {service} rolls back, under maintenance mode.")
    if yes:
        say(about)
    restoring.confirm(env, yes, lambda question: prompt(f"{about}\n{question}"))

    def roll_code_back() -> None:
        try:
            code, _ = roll_back()
            why = "" if code == ExitCode.OK else f"it exited {code.name.lower()}; its recap says where"
        except VigilError as error:  # refused before it began (a deploy lock held, a host out of reach)
            why = error.message
        if why:
            raise BackupError(
                f"the database was restored to {point['name']}, but rolling {service} back failed ({why}), so "
                f"maintenance mode stays on (nobody is served release {point['release']} on the older schema): "
                f"mend it, `invoke deploy.rollback --app={service} --env={env}`, then `invoke incident.maintenance "
                f"off --env={env}`")

    return pitr.restore_to(env, inventory, repository, target, say, before_service=roll_code_back)
