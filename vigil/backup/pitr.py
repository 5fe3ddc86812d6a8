"""Restoring the env's database to a point in time from the pgBackRest repository (`backup.restore
TIME`, a backup's LABEL, or `latest`), on the database host, step by step:

1. the target is checked against the repository's window before anything changes;
2. maintenance on on the web hosts;
3. a safety point: PostgreSQL's current WAL is switched out and archived, so the moment just before
   the restore stays restorable (the report says how to go back to it);
4. PostgreSQL stopped, `pgbackrest restore --delta` to the target (only changed files are rewritten),
   PostgreSQL started, and waited for until recovery has reached the target and it accepts writes;
5. maintenance off, the backend's health checked on every web host.

pgBackRest restores; vigil decides the target, guards the order and reports.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from vigil.backup.access import BackupError, connect
from vigil.backup.repository import (
    Backup,
    Contents,
    Repository,
    hold_backups,
    last_line,
    read_contents,
    release_backups,
    utc,
)
from vigil.backup.restore import Say, back_in_service, maintenance_off, maintenance_on
from vigil.core.audit_log import audit_locally
from vigil.core.commands import script
from vigil.core.errors import ConfigError, UnreachableError, VigilError
from vigil.core.inventory import Inventory
from vigil.deploy.safety import POINT_NAME


@dataclass(frozen=True)
class Target:
    """Where a restore goes: a second (`at`), a backup's end (`backup`), or the newest archived second."""

    at: float | None = None
    backup: str | None = None
    # The timeline to follow (None: the latest). Going back to a safety point, after a restore started
    # a new timeline, follows the safety point's own.
    timeline: int | None = None
    # A named restore point (a safety point); `at` is then its time, read from its name.
    point: str | None = None

    def describe(self) -> str:
        if self.point:
            return f"restore point {self.point}"
        if self.at is not None:
            return utc(self.at)
        return f"backup {self.backup}" if self.backup else "the latest archived second"

    def options(self, backup: str) -> list[str]:
        """pgBackRest's restore options for this target, replayed from `backup` (choose_backup's)."""
        timeline = [f"--target-timeline={self.timeline}"] if self.timeline else []
        chosen = [f"--set={backup}"]
        if self.point:
            return ["--type=name", f"--target={self.point}", "--target-action=promote", *chosen, *timeline]
        if self.at is not None:
            return ["--type=time", f"--target={utc(self.at)}", "--target-action=promote", *chosen, *timeline]
        if self.backup:
            return [*chosen, "--type=immediate", "--target-action=promote"]
        return ["--type=default", *chosen]


# pgBackRest's backup labels: a full's start, and for a diff or incr its own after an underscore.
LABEL = re.compile(r"^[0-9]{8}-[0-9]{6}F(_[0-9]{8}-[0-9]{6}[DI])?$")
# vigil's named restore points (deploy/safety.py), e.g. vigil-safety-20261203T151828Z.
RESTORE_POINT = re.compile(POINT_NAME)


def check_label(label: str, flag: str = "TARGET") -> str:
    if not LABEL.fullmatch(label or ""):
        raise ConfigError(f"{flag}: {label!r} is not a backup label like 20261203-031500F (invoke backup.list)")
    return label


def parse_target(text: str, timeline: int | None = None, flag: str = "TARGET") -> Target:
    """`backup.restore TARGET`: `latest`, a backup's label, a restore point or a time (see parse_time);
    `flag` names where it came from in errors."""
    named = RESTORE_POINT.fullmatch(text)
    if text == "latest":
        target = Target()
    elif named:
        try:
            at = datetime.strptime(named.group("made"), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:  # the shape of a time, not a real one (month 13, second 99)
            raise ConfigError(f"{flag}: {text!r} is not a restore point: its time is not a real one") from None
        target = Target(at=at, point=text)
    elif LABEL.fullmatch(text):
        target = Target(backup=text)
    else:
        try:
            target = Target(at=parse_time(text, flag))
        except ConfigError:
            raise ConfigError(f"{flag}: {text!r} is not a time (2026-12-03T14:15:00Z; UTC unless it has an offset "
                              "such as +01:00), a backup label (20261203-031500F), a restore point "
                              "(vigil-safety-20261203T151828Z) or latest") from None
    if timeline is not None:
        if target.at is None:
            raise ConfigError(f"--timeline follows a timeline to a time: give a time or a restore point as {flag}")
        target = Target(at=target.at, point=target.point, timeline=timeline)
    return target


def parse_time(text: str, flag: str = "TARGET") -> float:
    """An ISO 8601 time (2026-12-03T14:15:00Z, 2026-12-03 14:15:00+01:00; without an offset, UTC) as
    epoch seconds; anything else is refused naming the flag."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a time; give it as 2026-12-03T14:15:00Z (UTC, or with "
                          "its offset: +01:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def check_target(target: Target, contents: Contents, repository: Repository, flag: str = "TARGET") -> None:
    """Refuse a target the repository cannot reach, naming what it can (and `flag`, where it came from)."""
    window = contents.window
    where = f"the repository on {repository.host.name}"
    if window is None:
        raise ConfigError(f"{where} holds no backup yet: nothing to restore (invoke backup.create --type=full)")
    if target.backup is not None:
        labels = [backup.label for backup in contents.backups]
        if target.backup not in labels:
            raise ConfigError(f"{flag}: {target.backup!r} is not a backup in {where} "
                              f"({', '.join(labels)}; invoke backup.list)")
    if target.timeline is not None and target.at is None:
        raise ConfigError(f"--timeline follows a timeline to a time: give a time or a restore point as {flag}")
    if target.at is not None and not window[0] <= target.at <= window[1]:
        raise ConfigError(f"{flag}: {utc(target.at)} is outside the window {where} can restore to: "
                          f"any second from {utc(window[0])} to {utc(window[1])}")


def on_history(backup: Backup, timeline: int, histories: dict[int, list[tuple[int, int]] | None]) -> bool:
    """Whether recovery along `timeline` can replay from `backup`: taken on it, or on a timeline it came
    from before that one ended. Unknown (a history not read, a backup's WAL not named): assumed so, and
    pgBackRest checks it again before it writes anything."""
    history = histories.get(timeline, [] if timeline == 1 else None)  # the first timeline came from none
    if backup.timeline is None or backup.timeline == timeline or history is None:
        return True
    ended = dict(history).get(backup.timeline)
    return ended is not None and backup.ended_by is not None and backup.ended_by <= ended


def choose_backup(target: Target, backups: list[Backup], force: bool = False, flag: str = "TARGET",
                  histories: dict[int, list[tuple[int, int]] | None] | None = None) -> Backup:
    """The backup set a restore to `target` replays from: the named one, else the newest that ended
    before the target (pgBackRest would take the newest of all, maybe after a restore point) on the
    target's timeline history: after a restore that went back in time, a backup taken on the timeline
    it left cannot reach the target (`histories`: Contents.histories). A set whose restore drill failed
    is passed over for an older one, and refused by name, unless `force`."""
    if target.backup is not None:
        candidates = [backup for backup in backups if backup.label == target.backup]
    elif target.at is not None:
        candidates = [backup for backup in backups if backup.stopped < target.at]
    else:
        candidates = list(backups)
    if candidates and histories and target.backup is None:
        # The target's timeline: the one named, else the newest (every timeline after the first has a
        # history file), as recovery itself takes it ("latest").
        timeline = target.timeline or max([1, *histories])
        reachable = [backup for backup in candidates if on_history(backup, timeline, histories)]
        if not reachable:
            raise ConfigError(f"{flag}: no backup before {target.describe()} is on timeline {timeline}'s history "
                              "(each was taken on a timeline a restore left): take a full backup, `invoke "
                              "backup.create --type=full`, to restore the seconds after it")
        candidates = reachable
    if not candidates:
        raise ConfigError(f"{flag}: no backup ended before {target.describe()}")
    sound = candidates if force else [backup for backup in candidates if backup.drill != "failed"]
    if not sound:
        failed = ", ".join(backup.label for backup in candidates)
        raise ConfigError(f"{flag}: {target.describe()} can only be restored from a backup that failed its restore "
                          f"drill ({failed}; invoke backup.list): restore anyway with --force, or choose an earlier "
                          "target")
    return sound[-1]


# The safety point: a named restore point now (a record in the WAL that recovery can stop at exactly:
# a time after the last commit of a timeline cannot be reached), then `pgbackrest check`, which closes
# the current WAL segment and waits until the repository has it. Prints its time, timeline and name.
# A cluster that is not the repository's (its system identifier differs: a database host rebuilt
# after a loss) holds nothing to keep: it prints "new" and its identifier instead.
SAFETY_POINT = r'''
cd /
system=$(runuser -u postgres -- psql -XAtqc "select system_identifier from pg_control_system()") || exit
if [ "$system" != "$2" ]; then echo "new|$system"; exit 0; fi
name="vigil-safety-$(date -u +%Y%m%dT%H%M%SZ)"
point=$(runuser -u postgres -- psql -XAtqc \
    "select extract(epoch from now()), timeline_id, pg_create_restore_point('$name') from pg_control_checkpoint()") \
    || exit
runuser -u postgres -- pgbackrest --stanza="$1" check >/dev/null || exit
echo "$point|$name"
'''
# Stop PostgreSQL, restore over its data directory (only changed files: --delta), start it, and wait
# for recovery to reach the target and promote. PostgreSQL that stops instead (a target past the end
# of the archived WAL) is reported with the last lines of its log.
RESTORE = r'''
cd /
stanza=$1; deadline=$2; shift 2
# Every cluster down ("down", or "down,recovery" with a recovery pending).
down() { pg_lsclusters --no-header | awk '$4 !~ /^down/ { up = 1 } END { exit up }'; }
systemctl stop postgresql.service || exit
# Stopping postgresql.service stops its clusters in the same transaction, but may return first.
end=$(( $(date +%s) + 120 ))
until down; do
    [ "$(date +%s)" -lt "$end" ] || { echo "PostgreSQL did not stop within 120 s; nothing was restored" >&2; exit 3; }
    sleep 1
done
runuser -u postgres -- pgbackrest --stanza="$stanza" --delta --log-level-console=warn "$@" restore
code=$?
if [ "$code" -ne 0 ]; then
    case "$code" in
        # Refused before anything was written (PostgreSQL running, a target it cannot reach, the
        # repository out of reach...): the database is as it was, so it serves again.
        31|32|37|38|40|58|72|75|103)
            systemctl start postgresql.service
            echo "pgbackrest restore refused (exit $code): nothing was restored and PostgreSQL runs again" >&2 ;;
        *) echo "pgbackrest restore failed (exit $code); PostgreSQL is stopped: restore again" >&2 ;;
    esac
    exit 3
fi
systemctl start postgresql.service
end=$(( $(date +%s) + deadline ))
while [ "$(date +%s)" -lt "$end" ]; do
    state=$(runuser -u postgres -- psql -XAtqc "select pg_is_in_recovery()" 2>/dev/null)
    if [ "$state" = f ]; then
        # The checkpointer went to sleep for checkpoint_timeout while still in recovery, where
        # archive_timeout does not apply: wake it, or WAL waits up to 5 minutes to be archived.
        runuser -u postgres -- psql -XAtqc "select pg_reload_conf()" >/dev/null
        runuser -u postgres -- psql -XAtqc "select extract(epoch from now()), timeline_id from pg_control_checkpoint()"
        exit 0
    fi
    # A cluster that stopped by itself (a target past the archived WAL) will not come back.
    if down; then break; fi
    sleep 1
done
echo "PostgreSQL did not come back writable after the restore:" >&2
tail -n 5 "$(ls -t /var/log/postgresql/postgresql-*.log | head -n 1)" >&2
exit 4
'''
# What RESTORE says when pgBackRest refused before writing anything and PostgreSQL runs again.
REFUSED_UNTOUCHED = "nothing was restored and PostgreSQL runs again"


# pgBackRest's refusal of a backup whose timeline the target's history branched away from before the
# backup ended (a restore went back past it, to an older point or timeline).
OFF_HISTORY = "ERROR: [058]"


def refusal(answer) -> str:
    """pgBackRest's own reason for refusing (its ERROR line), else RESTORE's; with what to do about a
    backup off the target's history (choose_backup passes those over, where it could read the history)."""
    errors = [line for line in answer.stderr.splitlines() if "ERROR" in line]
    reason = (errors or [last_line(answer)])[-1].strip()
    if OFF_HISTORY in reason:
        reason += (" (the newest backup before the target was taken on a timeline a later restore left: restore "
                   "to an older backup by its label, or take a full backup, `invoke backup.create --type=full`, "
                   "for the seconds after it)")
    return reason


# Seconds PostgreSQL may take to replay WAL up to the target and promote.
RECOVERY_DEADLINE = 3600
# Seconds a restore holds the repository's backup lock at most: every step's own deadline (the safety
# point, pgBackRest's restore and recovery, the health checks), so it never lapses under a restore.
HOLD_SECONDS = 300 + RECOVERY_DEADLINE + 600 + 1800
# And what runs between the restore and the site's return (a code rollback), at most.
BEFORE_SERVICE_SECONDS = 1800


class OutcomeUnknown(BackupError):
    """The connection to the database host was lost mid-restore: it may still be running there."""


def restore_to(env: str, inventory: Inventory, repository: Repository, target: Target, say: Say,
               force: bool = False, before_service: Callable[[], None] | None = None) -> dict:
    """Restore the env's database host to `target` from `repository`; returns the report (the target,
    the backup replayed from, the safety point, seconds taken, each web host's health). `say` gets a
    line per step. force: replay even from a backup set whose restore drill failed. before_service:
    run once the database is restored, maintenance mode still on (a code rollback to match it); if it
    raises, maintenance mode stays on."""
    with connect(inventory, repository.host) as transport:
        contents = read_contents(transport, repository)
        check_target(target, contents, repository)
        backup = choose_backup(target, contents.backups, force, histories=contents.histories)
        # No backup or expire runs while the database is restored: they would copy a cluster being
        # replaced, or remove what the restore reads.
        hold_backups(transport, repository, HOLD_SECONDS + (BEFORE_SERVICE_SECONDS if before_service else 0))
    try:
        return restore_held(env, inventory, repository, target, say, contents, backup, before_service)
    finally:
        # After a lost connection the restore may still run on the database host: the lock then stays
        # until its deadline.
        if sys.exc_info()[0] is not OutcomeUnknown:
            try:
                with connect(inventory, repository.host) as transport:
                    release_backups(transport, repository)
            except VigilError as error:
                say(f"{repository.host.name}: could not release the backup lock ({error}); it ends by itself "
                    f"within {HOLD_SECONDS // 60} minutes of the restore's start")


def restore_held(env: str, inventory: Inventory, repository: Repository, target: Target, say: Say,
                 contents: Contents, backup: Backup, before_service: Callable[[], None] | None = None) -> dict:
    """restore_to's work, the repository's backup lock held."""
    database = repository.database
    report: dict = {"env": env, "target": target.describe(), "host": database.name, "backup": backup.label}
    passed_over = [item.label for item in contents.backups if item.drill == "failed" and item.stopped > backup.stopped
                   and (target.at is None or item.stopped < target.at) and target.backup is None]
    if passed_over:
        say(f"{repository.host.name}: replaying from {backup.label}, passing over {', '.join(passed_over)} "
            f"(failed its restore drill)")
    web = maintenance_on(env, inventory, say)
    try:
        with connect(inventory, database) as transport:
            safety = transport.run(script(SAFETY_POINT, repository.stanza, contents.system_id or ""), timeout=300)
            if not safety.ok:
                raise BackupError(f"{database.name}: the safety point could not be archived, so nothing was "
                                  f"restored: {last_line(safety)}")
            at, timeline, *named = safety.stdout.strip().split("|")
            if at == "new":
                report["safety_point"] = None
                say(f"{database.name}: its cluster (system {timeline}) is not the one the repository backs up "
                    f"({contents.system_id}): a new database host, nothing to keep; no safety point")
            else:
                name = named[-1]
                report["safety_point"] = {"name": name, "at": utc(float(at)), "timeline": int(timeline)}
                say(f"{database.name}: safety point {name} archived (timeline {int(timeline)}); to go back to "
                    f"it: invoke backup.restore {name} --timeline={int(timeline)} --env={env}")
            began = datetime.now(timezone.utc).timestamp()
            restored = transport.run(script(RESTORE, repository.stanza, str(RECOVERY_DEADLINE),
                                            *target.options(backup.label)),
                                     timeout=RECOVERY_DEADLINE + 600)
    except UnreachableError:
        audit_locally("backup.restore", env, [database.name], "unknown", target=target.describe())
        raise OutcomeUnknown(f"{database.name}: the connection was lost during the restore; maintenance mode stays "
                             f"on, and no backup runs until the restore's deadline. Check PostgreSQL on "
                             f"{database.name}, then `invoke incident.maintenance off --env={env}`") from None
    except BackupError:
        maintenance_off(env, web, say)
        audit_locally("backup.restore", env, [database.name], "failed", target=target.describe())
        raise
    if not restored.ok:
        audit_locally("backup.restore", env, [database.name], "failed", target=target.describe())
        if REFUSED_UNTOUCHED in restored.stderr:
            maintenance_off(env, web, say)
            raise BackupError(f"{database.name}: the restore to {target.describe()} was refused and nothing changed: "
                              f"{refusal(restored)}")
        # PostgreSQL may be stopped or half-recovered: the site stays in maintenance until someone looks.
        raise BackupError(f"{database.name}: the restore to {target.describe()} failed and maintenance mode stays on: "
                          f"{last_line(restored)}")
    report["seconds"] = round(datetime.now(timezone.utc).timestamp() - began, 1)
    report["timeline"] = int(restored.stdout.strip().split("|")[1])
    say(f"{database.name}: restored to {target.describe()} in {report['seconds']}s "
        f"(now on timeline {report['timeline']})")
    if before_service is not None:
        try:
            before_service()
        except VigilError:
            audit_locally("backup.restore", env, [database.name], "ok, maintenance stays on",
                          target=target.describe())
            raise
    report["health"] = healthy = back_in_service(env, inventory, web, say)
    audit_locally("backup.restore", env, [database.name], "ok" if all(healthy.values()) else "unhealthy",
                  target=target.describe(), safety_point=(report["safety_point"] or {}).get("at", "none"))
    return report
