"""Branching a point in time (Neon's branches): the app's database as it was at a moment, restored from
the pgBackRest repository into a new database beside the live one, to inspect yesterday's data or
seed a preview, without touching the live database.

The backup host does the work (roles/pgbackrest's vigil-pgbackrest-drill `branch`): it restores the
backup set vigil chose into its scratch cluster, replays WAL to the target, and copies the app's
database into the new one on the database host, owned by the app's role, its rows counted on both
sides. A branch is marked as vigil's (a comment on the database), and only such a database is dropped.
"""

from __future__ import annotations

import json
import re

from vigil.backup.access import BackupError, connect
from vigil.backup.pitr import Target, check_target, choose_backup
from vigil.backup.repository import REPOSITORY_USER, Repository, last_line, read_contents
from vigil.core.commands import Command, script
from vigil.core.errors import ConfigError
from vigil.core.inventory import Inventory
from vigil.core.roles import load_role

DRILL = "/usr/local/lib/vigil/vigil-pgbackrest-drill"
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Seconds a branch may take: the restore and WAL replay, then the copy.
BRANCH_TIMEOUT = 4 * 3600
# What vigil-pgbackrest-drill writes on a branch's database; a drop refuses any database without it.
MARK = "vigil branch of "


def check_name(name: str, inventory: Inventory, database_host) -> str:
    """A branch's name: a new database's, never the app's own or PostgreSQL's."""
    if not NAME.match(name or ""):
        raise ConfigError(f"--name: {name!r} is not a database name (lower-case letters, digits and _, "
                          "at most 63, not starting with a digit)")
    app = inventory.vars_for(database_host, [load_role("postgresql")]).string("postgresql_database")
    if name in (app, "postgres", "template0", "template1"):
        raise ConfigError(f"--name: {name} is the app's or PostgreSQL's own database; a branch needs a new name")
    return name


def branch_command(name: str, label: str, target: Target, owner: str = "") -> Command:
    """The backup host's branch program: the set is its own argument, then the owner when it is not the app's
    role (a preview's), then pgBackRest's target options."""
    options = [option for option in target.options(label) if not option.startswith("--set=")]
    owned = (f"--owner={owner}",) if owner else ()
    return Command((DRILL, "branch", name, label, *owned, *options), sudo=True, as_user=REPOSITORY_USER)


def parse_branch(answer, host: str) -> dict:
    """The branch program's JSON, or why it could not run."""
    try:
        result = json.loads(answer.stdout.strip().splitlines()[-1]) if answer.stdout.strip() else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise BackupError(f"{host}: the branch did not run: {last_line(answer)}")
    if not result.get("ok"):
        raise BackupError(f"{host}: the branch {result.get('name', '')} was not made: "
                          f"{result.get('error', 'no reason given')}")
    return result


def make_branch(inventory: Inventory, repository: Repository, target: Target, name: str,
                force: bool = False, owner: str = "") -> dict:
    """The database as of `target`, as a new database `name` on the database host, owned by the app's role
    or `owner` (a preview's role); the program's report (name, backup, rows and tables copied, its last
    transaction's time, seconds)."""
    check_name(name, inventory, repository.database)
    with connect(inventory, repository.host) as transport:
        contents = read_contents(transport, repository)
        check_target(target, contents, repository, flag="--at")
        backup = choose_backup(target, contents.backups, force, flag="--at", histories=contents.histories)
        answer = transport.run(branch_command(name, backup.label, target, owner), timeout=BRANCH_TIMEOUT)
    report = parse_branch(answer, repository.host.name)
    report["target"] = target.describe()
    return report


# Drop a branch: only a database vigil made as one (its comment says so), connections ended first.
DROP = r'''
cd /
found=$(psql -XAtqc "select 'found:' || coalesce(shobj_description(oid, 'pg_database'), '')
                     from pg_database where datname = '$1'") || exit 1
case "$found" in
    "") echo "there is no database $1 on this host" >&2; exit 3 ;;
    "found:$2"*) ;;
    *) echo "$1 is not a branch vigil made (its comment does not say so): not dropped" >&2; exit 3 ;;
esac
dropdb --force "$1"
'''


def drop_branch(inventory: Inventory, repository: Repository, name: str) -> None:
    check_name(name, inventory, repository.database)
    with connect(inventory, repository.database) as transport:
        answer = transport.run(script(DROP, name, MARK, as_user="postgres"), timeout=600)
    if not answer.ok:
        raise BackupError(f"{repository.database.name}: {last_line(answer)}")
