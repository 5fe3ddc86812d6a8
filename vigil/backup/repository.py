"""The pgBackRest repository on the backup host (roles/pgbackrest): where it is, what it holds, and
the window of time a restore can reach.

pgBackRest does the work; vigil finds the hosts, asks in one round trip, and reads its JSON. A
window runs from the end of the oldest backup to the arrival of the newest archived WAL: any second
in between can be restored, as WAL is replayed on top of the backup before it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from vigil.backup.access import BackupError
from vigil.core.commands import Command, script
from vigil.core.errors import ConfigError
from vigil.core.inventory import Host, Inventory
from vigil.core.redaction import REDACTOR
from vigil.core.roles import load_role
from vigil.core.topology import inventory_repository_ends

REPOSITORY_USER = "pgbackrest"
# roles/pgbackrest's lock-path on the backup host, shared by its timers and the backup tasks.
LOCK_PATH = "/var/lib/pgbackrest/lock"
BACKUP_TYPES = ("full", "diff", "incr")
# pgBackRest's stanza status codes (info): 0 ok, 2 no valid backup yet; anything else is a problem.
STANZA_OK, STANZA_NO_BACKUP = 0, 2
# Seconds a backup may take before vigil stops waiting (the backup host's own timer has its own deadline).
BACKUP_TIMEOUT = 6 * 3600


@dataclass(frozen=True)
class Repository:
    """The env's repository host, its database host, and how pgBackRest names the cluster there."""

    host: Host
    database: Host
    stanza: str
    path: str
    # Where the restore drill keeps its scratch cluster and last result (pgbackrest_drill_path).
    drill_path: str = "/var/lib/pgbackrest/drill"


def find_repository(inventory: Inventory) -> Repository | None:
    """The env's repository (the first host of pgbackrest_repository_group) and database host; None when
    the inventory has no repository group, as roles/pgbackrest then configures none."""
    ends = inventory_repository_ends(inventory)
    if ends is None:
        return None
    host, database = (inventory.hosts[name] for name in ends)
    settings = inventory.vars_for(host, [load_role("pgbackrest")])
    return Repository(host.as_admin(), database.as_admin(),
                      settings.string("pgbackrest_stanza", r"[a-z][a-z0-9_-]{0,62}"),
                      settings.path("pgbackrest_repository_path"), settings.path("pgbackrest_drill_path"))


def require_repository(inventory: Inventory, task: str) -> Repository:
    """The env's repository, or the refusal of `task` (before it connects anywhere) saying what to add where."""
    repository = find_repository(inventory)
    if repository is None:
        raise ConfigError(f"{task} needs a backup host: inventory/{inventory.env}.yml has no host in group `backup` "
                          f"(roles/pgbackrest keeps the database's backups and WAL there; see docs/backup.md)")
    return repository


def pgbackrest(repository: Repository, *args: str) -> Command:
    """pgBackRest ARGS for the stanza, as the repository's own user on the backup host."""
    return Command(("pgbackrest", f"--stanza={repository.stanza}", *args), sudo=True, as_user=REPOSITORY_USER)


# What the repository holds, then when its newest WAL arrived (seconds since the epoch), in one round trip.
# The backup host's repository (repo1) only: a second one on S3 has a window of its own.
CONTENTS = r'''
cd /
pgbackrest --stanza="$1" --repo=1 info --output=json || exit
# pgBackRest's JSON ends without a newline.
echo
echo "@wal"
find "$2/archive/$1" -type f -name '0*' -printf '%T@\n' 2>/dev/null | sort -n | tail -n 1
# Each timeline's history (which timelines it came from, and where each ended), decrypted by pgBackRest.
echo "@history"
for history in "$2/archive/$1"/*/[0-9A-F]*.history*; do
    [ -f "$history" ] || continue
    echo "@@${history#"$2/archive/$1/"}"
    pgbackrest --stanza="$1" repo-get "archive/$1/${history#"$2/archive/$1/"}" 2>/dev/null || echo "#unreadable"
    echo  # a history ends with a newline; should one not, its last line still ends here
done
'''


def contents_command(repository: Repository) -> Command:
    return script(CONTENTS, repository.stanza, repository.path, as_user=REPOSITORY_USER)


# What the status screen asks the backup host, in one round trip: the repository, then the last drill.
STATUS = CONTENTS + 'echo "@drill"\ncat "$3" 2>/dev/null || true  # none before the first drill\n'


def status_command(repository: Repository) -> Command:
    return script(STATUS, repository.stanza, repository.path, f"{repository.drill_path}/last.json",
                  as_user=REPOSITORY_USER)


def parse_status(stdout: str, stanza: str) -> tuple[Contents, dict | None]:
    """STATUS's answer: the repository's contents and the last drill's result (None before the first)."""
    contents_part, marked, drill_part = stdout.rpartition("\n@drill\n")
    # CONTENTS's answer as it ends alone; no drill part at all (a script cut short): contents only.
    contents_part, drill_part = (contents_part + "\n", drill_part) if marked else (stdout, "")
    try:
        drill = json.loads(drill_part) if drill_part.strip() else None
    except ValueError:
        drill = {"at": "", "ok": False, "error": "its result file is not JSON"}
    return parse_contents(contents_part, stanza), drill if isinstance(drill, dict) else None


@dataclass(frozen=True)
class Backup:
    label: str
    type: str
    started: float
    stopped: float
    size: int  # the database's bytes
    stored: int  # the repository's bytes for this backup (compressed, encrypted)
    annotation: dict = field(default_factory=dict)
    # PostgreSQL's page checksums failed on some page while it was copied: a damaged database, saved as it was.
    page_errors: bool = False
    # The WAL segments from the backup's start to its stop: what makes its copy consistent.
    wal_start: str = ""
    wal_stop: str = ""
    # The earlier sets a diff or incr backup takes unchanged files from (none for a full).
    references: tuple[str, ...] = ()
    # The archive directory its WAL is in (PostgreSQL's version and the repository's database id: 17-1).
    archive_id: str = ""

    @property
    def timeline(self) -> int | None:
        """The timeline it was taken on (its first WAL segment's name says), None when not known."""
        try:
            return int(self.wal_start[:8], 16) if len(self.wal_start) == 24 else None
        except ValueError:
            return None

    @property
    def ended_by(self) -> int | None:
        """An LSN its copy is consistent by: the end of its last WAL segment (16 MiB segments, PostgreSQL's
        default), a little past where it stopped. None when not known."""
        try:
            log, segment = int(self.wal_stop[8:16], 16), int(self.wal_stop[16:24], 16)
        except ValueError:
            return None
        return (log << 32) + ((segment + 1) << 24) if len(self.wal_stop) == 24 else None

    @property
    def drill(self) -> str | None:
        """The last restore drill of this set, as the drill annotated it: "ok", "failed", or None (none yet)."""
        return self.annotation.get("vigil-drill")


@dataclass(frozen=True)
class Contents:
    """What the repository holds: its status, backups (oldest first) and the restore window."""

    status: int
    message: str
    backups: list[Backup]
    newest_wal: float | None
    # PostgreSQL's system identifier of the cluster the repository backs up now (None: not known yet).
    system_id: str | None = None
    # Each timeline after the first: the timelines it came from, each with the LSN where it ended (from its
    # history file); None for a timeline whose history could not be read.
    histories: dict[int, list[tuple[int, int]] | None] = field(default_factory=dict)

    @property
    def window(self) -> tuple[float, float] | None:
        """(earliest, latest) second a restore can reach, or None before the first backup."""
        if not self.backups:
            return None
        earliest = self.backups[0].stopped + 1  # a backup serves targets strictly after its end
        latest = max(self.newest_wal or 0, self.backups[-1].stopped)
        return earliest, max(latest, earliest)


# Where CONTENTS's histories begin (STATUS's drill part may follow right after, without a blank line).
HISTORY_PART = re.compile(r"\n@history(?:\n|$)")


def parse_lsn(text: str) -> int:
    """PostgreSQL's LSN as a number: 0/34000028 -> 0x34000028."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def parse_histories(text: str, archive_id: str) -> dict[int, list[tuple[int, int]] | None]:
    """CONTENTS's @history part: `@@<archive id>/<timeline>.history` then the file (lines of parent
    timeline, the LSN where it ended, the reason), for the cluster the repository backs up now (its
    archive id: a cluster before a major upgrade numbered its timelines apart). A timeline whose file
    could not be read, or is not of that shape, is there with None: it exists, its history is unknown."""
    histories: dict[int, list[tuple[int, int]] | None] = {}
    for block in text.split("@@")[1:]:
        name, _, body = block.partition("\n")
        directory, _, file = name.strip().partition("/")
        try:
            timeline = int(file.split(".history", 1)[0], 16)
        except ValueError:
            continue
        if directory != archive_id:
            continue
        try:
            ended = [(int(fields[0]), parse_lsn(fields[1])) for fields in
                     (line.split("\t") for line in body.splitlines() if line.strip() and not line.startswith("#"))]
        except (ValueError, IndexError):  # not a history file's text
            ended = []
        histories[timeline] = ended or None
    return histories


def parse_contents(stdout: str, stanza: str) -> Contents:
    """CONTENTS's answer. pgBackRest's `info` exits 0 whatever the stanza's status: read the code."""
    found = HISTORY_PART.search(stdout)
    stdout, history_part = (stdout[:found.start() + 1], stdout[found.end():]) if found else (stdout, "")
    info_part, _, wal_part = stdout.rpartition("\n@wal\n")
    try:
        # strict=False: an error message in it may quote raw bytes (a file decrypted with the wrong key).
        stanzas = json.loads(info_part, strict=False)
    except ValueError:
        raise ConfigError(f"pgBackRest's info is not JSON: {info_part.strip()[:200]!r}") from None
    stanza_info = next((item for item in stanzas if isinstance(item, dict) and item.get("name") == stanza), None)
    if stanza_info is None:
        return Contents(1, f"no stanza {stanza} in the repository", [], None)
    status = stanza_info.get("status") or {}
    archive_ids = {
        (item.get("database") or {}).get("id"): str(item.get("id", ""))
        for item in stanza_info.get("archive") or [] if isinstance(item, dict)
    }
    backups = [
        Backup(
            label=str(item.get("label", "")),
            type=str(item.get("type", "")),
            started=float((item.get("timestamp") or {}).get("start", 0)),
            stopped=float((item.get("timestamp") or {}).get("stop", 0)),
            size=int((item.get("info") or {}).get("size", 0)),
            stored=int(((item.get("info") or {}).get("repository") or {}).get("delta", 0)),
            annotation=dict(item.get("annotation") or {}),
            page_errors=bool(item.get("error")),
            wal_start=str((item.get("archive") or {}).get("start") or ""),
            wal_stop=str((item.get("archive") or {}).get("stop") or ""),
            references=tuple(str(label) for label in item.get("reference") or []),
            archive_id=archive_ids.get((item.get("database") or {}).get("id"), ""),
        )
        for item in stanza_info.get("backup") or []
        if isinstance(item, dict)
    ]
    wal = wal_part.strip()
    try:
        newest_wal = float(wal) if wal else None
    except ValueError:
        raise ConfigError(f"the newest WAL's time is not a number: {wal[:60]!r}") from None
    databases = [item for item in stanza_info.get("db") or [] if isinstance(item, dict)]
    current = archive_ids.get(databases[-1].get("id"), "") if databases else ""
    return Contents(int(status.get("code", 99)), str(status.get("message", "")), backups, newest_wal,
                    str(databases[-1].get("system-id")) if databases and databases[-1].get("system-id") else None,
                    parse_histories(history_part, current))


def read_contents(transport, repository: Repository) -> Contents:
    """The repository's status, backups and window, from the backup host."""
    answer = transport.run(contents_command(repository), timeout=120)
    if not answer.ok:
        raise BackupError(f"{repository.host.name}: pgBackRest's info failed: {last_line(answer)}")
    return parse_contents(answer.stdout, repository.stanza)


def create_backup(transport, repository: Repository, backup_type: str, label: str) -> Backup:
    """A `backup_type` backup taken now, annotated with `label`; the repository's newest backup after it."""
    check_backup_type(backup_type)
    answer = transport.run(pgbackrest(repository, f"--type={backup_type}", f"--annotation=vigil-label={label}",
                                      "backup"), timeout=BACKUP_TIMEOUT)
    if not answer.ok:
        why = transport.run(script(WHY_BACKUP_FAILED, repository.path, HOLD_UNIT, as_user=REPOSITORY_USER), timeout=60)
        raise BackupError(f"{repository.host.name}: pgBackRest's backup failed: {last_line(answer)}"
                          f"{failure_note(why.stdout if why.ok else '')}")
    contents = read_contents(transport, repository)
    if not contents.backups:
        raise BackupError(f"{repository.host.name}: pgBackRest reported success but the repository lists no backup")
    return contents.backups[-1]


# A restore holds pgBackRest's own backup lock on the repository host for as long as it runs, so that
# no backup or expire (scheduled or asked for) runs at the same time: pgBackRest refuses them itself.
# A transient unit holds it (flock, as pgBackRest locks); vigil stops the unit when the restore ends,
# and a vigil that died mid-restore leaves it to end at its deadline. It cannot start while a backup
# holds the lock: the restore is then refused before anything changes.
HOLD_UNIT = "vigil-restore-hold.service"
# Written by the hold once it has the lock (so the restore knows it is its own that holds it).
HOLD_MARK = f"{LOCK_PATH}/vigil-restore-hold.held"
HOLD = r"""
cd /
unit=$1; mark=$2; lock="$3/$4-backup-1.lock"; deadline=$5
if systemctl is-active --quiet "$unit"; then
    echo "another restore is running (it holds the repository's backup lock: $unit)" >&2; exit 75
fi
systemctl reset-failed "$unit" 2>/dev/null
rm -f "$mark"
systemd-run --quiet --unit="$unit" --uid=pgbackrest --gid=pgbackrest --property=RuntimeMaxSec="$deadline" \
    --property=CollectMode=inactive-or-failed \
    flock --nonblock --conflict-exit-code 75 "$lock" sh -c 'touch "$1" && exec sleep infinity' hold "$mark" || exit
i=0
until [ -e "$mark" ]; do
    if ! systemctl is-active --quiet "$unit"; then
        echo "a backup is running (pgBackRest holds its backup lock): restore once it has ended" >&2; exit 75
    fi
    i=$((i + 1))
    if [ "$i" -ge 100 ]; then
        systemctl stop "$unit"; echo "the backup lock was not taken within 10 s" >&2; exit 75
    fi
    sleep 0.1
done
"""
RELEASE = 'systemctl stop "$1" 2>/dev/null; rm -f "$2"; true'


def hold_backups(transport, repository: Repository, seconds: int) -> None:
    """Take the repository's backup lock for at most `seconds`; BackupError (nothing held) when a backup
    or another restore runs."""
    answer = transport.run(script(HOLD, HOLD_UNIT, HOLD_MARK, LOCK_PATH, repository.stanza, str(seconds)),
                           timeout=60)
    if not answer.ok:
        raise BackupError(f"{repository.host.name}: nothing was restored: {last_line(answer)}")


def release_backups(transport, repository: Repository) -> None:
    transport.run(script(RELEASE, HOLD_UNIT, HOLD_MARK), timeout=60)


# Why a backup failed, when pgBackRest's own words do not say: how full the repository's filesystem
# is (percent used, bytes available), and whether a restore holds the backup lock.
WHY_BACKUP_FAILED = ('df --output=pcent,avail -B1 -- "$1" | tail -n 1; '
                     'systemctl is-active --quiet "$2" && echo restoring; true')


def failure_note(answer: str) -> str:
    """What to add to a failed backup's error (WHY_BACKUP_FAILED's answer): a restore holds the lock, or the
    repository's disk is full (pgBackRest then reports what failed first, often WAL not archived)."""
    if "restoring" in answer.split():
        return "; a restore of the database is running and holds the repository's backup lock: back up once it ends"
    fields = answer.replace("%", " ").split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        return ""
    percent, available = (int(field) for field in fields)
    if percent < 99 and available >= 16 * 1048576:  # room for a WAL segment at least
        return ""
    return (f"; the repository's disk is full ({percent}% used): neither backups nor WAL fit. Free space there "
            "(or give it a bigger disk), then back up again")


# roles/pgbackrest's restore drill: its unit, and where it leaves its result on the backup host.
DRILL_UNIT = "vigil-pgbackrest-drill.service"
# Run the drill's unit (it blocks until the drill ends), then print when it was started and the result
# file, which a drill that did not get to run leaves older than that; then the unit's last lines.
DRILL = r'''
cd /
started=$(date +%s)
systemctl start "$1"
echo "@started $started"
cat "$2" 2>/dev/null
echo
echo "@log"
journalctl --unit="$1" --since="@$started" --output=cat --no-pager 2>/dev/null | tail -n 3
'''
# Seconds vigil waits for a drill (the unit has its own deadline, pgbackrest_drill_timeout_seconds).
DRILL_TIMEOUT = 4 * 3600


def drill_result_path(repository: Repository) -> str:
    return f"{repository.drill_path}/last.json"


def run_drill(transport, repository: Repository) -> dict:
    """The restore drill, run now through its unit on the backup host; its result (`ok` says whether it
    passed). A drill that could not start (another one runs, its settings are wrong) is a BackupError."""
    answer = transport.run(script(DRILL, DRILL_UNIT, drill_result_path(repository)), timeout=DRILL_TIMEOUT)
    return parse_drill(answer.stdout, repository.host.name)


def parse_drill(stdout: str, host: str) -> dict:
    """DRILL's answer: the result the drill wrote in this run, else why there is none."""
    head, _, log = stdout.partition("\n@log\n")
    started_line, _, document = head.partition("\n")
    started = started_line.removeprefix("@started ").strip()
    try:
        result = json.loads(document) if document.strip() else None
    except ValueError:
        result = None
    at = result.get("at") if isinstance(result, dict) else None
    if not started.isdigit() or not isinstance(at, str) or parse_stamp(at) < int(started):
        why = REDACTOR.redact(log.strip().splitlines()[-1] if log.strip() else "it left no result")
        raise BackupError(f"{host}: the restore drill did not run: {why}")
    return result


def parse_stamp(text: str) -> float:
    """The drill's UTC stamp (2026-12-03T17:21:40Z) as epoch seconds; 0 for anything else."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return 0.0


# A backup label anywhere in a line of pgBackRest's output.
LABEL_IN_TEXT = re.compile(r"\b[0-9]{8}-[0-9]{6}F(?:_[0-9]{8}-[0-9]{6}[DI])?\b")


def expire(transport, repository: Repository, dry_run: bool) -> dict:
    """pgBackRest's expire by the repository's retention (pgbackrest_window_days): the backups it removes
    (or, dry, would remove) and those it keeps. It never removes what the window still needs."""
    before = read_contents(transport, repository)
    answer = transport.run(pgbackrest(repository, "--log-level-console=info", *(["--dry-run"] if dry_run else []),
                                      "expire"), timeout=3600)
    if not answer.ok:
        raise BackupError(f"{repository.host.name}: pgBackRest's expire failed: {last_line(answer)}")
    labels = [backup.label for backup in before.backups]
    if dry_run:
        named = {label for line in answer.stdout.splitlines() if "expire" in line or "remove" in line
                 for label in LABEL_IN_TEXT.findall(line)}
        removed = [label for label in labels if label in named]
    else:
        after = {backup.label for backup in read_contents(transport, repository).backups}
        removed = [label for label in labels if label not in after]
    return {"dry_run": dry_run, "deleted": removed, "kept": [label for label in labels if label not in removed]}


def check_backup_type(backup_type: str) -> str:
    if backup_type not in BACKUP_TYPES:
        raise ConfigError(f"--type: {backup_type!r} is not one of {', '.join(BACKUP_TYPES)}")
    return backup_type


def last_line(answer) -> str:
    """The line that says why pgBackRest failed (its ERROR line, else the last), masked."""
    lines = [line.strip() for line in (answer.stderr + answer.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return REDACTOR.redact((errors or lines or [f"exited {answer.status}"])[-1])


def utc(seconds: float) -> str:
    """An epoch second as the time a restore takes: 2026-12-03 14:15:00+00."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S+00")
