"""The backup role: /usr/local/sbin/vigil-backup, its settings, and the timers that run it on the database host.

One program makes, verifies, prunes and restores backups whether a timer or
`invoke backup.*` runs it; it reads /etc/vigil/backup.json, written here from
the postgresql and backup roles' settings. `age` encrypts the copies that
leave the host (backup.pull).
"""

import json
import posixpath

from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.systemd import DaemonReload, SystemdUnit

HELPER = "/usr/local/sbin/vigil-backup"
CONFIG = "/etc/vigil/backup.json"
IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"
# systemd calendar expressions: digits, letters, and the punctuation they use; nothing a unit file would misread.
CALENDAR = r"[A-Za-z0-9 ,:*./~-]{1,64}"


def tasks(role, vars):
    """The backup role's operations for one host, in order."""
    directory, status = vars.path("backup_dir"), vars.path("backup_status_file")
    settings = {
        "database": vars.string("postgresql_database", IDENTIFIER),
        "owner": vars.string("postgresql_user", IDENTIFIER),
        "directory": directory,
        "status": status,
        "status_group": vars.user("backup_status_group"),
        "retention": {rule: vars.integer(f"backup_keep_{rule}", minimum=1) for rule in ("daily", "weekly", "monthly")},
        "migrations_table": vars.string("backup_migrations_table", IDENTIFIER),
    }
    if status.startswith(directory.rstrip("/") + "/"):
        raise ConfigError(f"{vars.where('backup_status_file')}: keep it out of backup_dir ({directory}); a full "
                          "backup filesystem must not stop the failure being recorded")
    status_dir = posixpath.dirname(status)
    units = {"directory": directory, "status_dir": status_dir,
             "timeout": vars.integer("backup_job_timeout_seconds", minimum=60)}
    timers = []
    for job, command, schedule in (("create", "create scheduled", "backup_create_schedule"),
                                   ("verify", "verify --latest", "backup_verify_schedule")):
        calendar = vars.string(schedule, CALENDAR)
        timers += [
            File(
                f"/etc/systemd/system/vigil-backup-{job}.service",
                render_template(
                    role.template("job.service.j2"),
                    {**units, "job": job, "command": f"{HELPER} {command}", "prune": job == "create"},
                ),
                notify=("reload systemd",),
                name=f"Ensure the {job} job runs {HELPER} {command}.",
            ),
            File(
                f"/etc/systemd/system/vigil-backup-{job}.timer",
                render_template(
                    role.template("job.timer.j2"),
                    {"job": job, "calendar": calendar, "delay": vars.integer("backup_randomized_delay", minimum=0)},
                ),
                notify=("reload systemd",),
                name=f"Ensure the {job} timer fires at {calendar}.",
            ),
        ]
    return [
        AptPackages(["age"], name="Ensure age is installed (backups leave the host encrypted)."),
        Directory(directory, owner="postgres", group="postgres", mode="0700"),
        Directory("/etc/vigil", mode="0755"),
        # Where the status file goes: the jobs may write there and nowhere else but the backups.
        Directory(status_dir, mode="0755"),
        File(CONFIG, json.dumps(settings, indent=2, sort_keys=True) + "\n", mode="0644",
             name=f"Ensure {CONFIG} describes the database and where its backups go."),
        File(HELPER, role.file("vigil-backup"), mode="0755", name=f"Ensure {HELPER} is installed."),
        *timers,
        SystemdUnit("vigil-backup-create.timer", enabled=True, running=True),
        SystemdUnit("vigil-backup-verify.timer", enabled=True, running=True),
    ]


def handlers(role, vars):
    return {"reload systemd": DaemonReload()}
