"""Backups from the control machine, on pgBackRest: the database host archives its WAL, and the backup
host keeps the backups, in an encrypted repository (roles/pgbackrest).

pgBackRest does the work; vigil finds the two ends, asks each in as few round trips as it can,
reads pgBackRest's JSON, and adds what it lacks: the window a restore can reach, maintenance mode and
a safety point around a restore, the restore drill's row counts and RTO, a branch of a past second,
and the portable export.

access: the tasks' error, connections and hosts; repository: what the repository holds and the
window; pitr: a restore to a second; branch: a past second as a new database; undo: a deploy's
migrations undone by its restore point; offsite: a set pulled off the backup host; export: the
portable pg_dump; transfer: streaming copies in, decrypting an export, copying on to another host;
restore: the steps around a restore (confirmation, maintenance, health).
"""
