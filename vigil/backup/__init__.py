"""Backups from the control machine: every task asks the database host's own vigil-backup (roles/backup).

The program on the host makes, verifies, prunes and restores backups (the
timers run the same one), so a task is one or two round trips as the admin
user. What leaves the host leaves encrypted: `pull` streams an age-encrypted
copy, checks its sha256 against what the host sent, and only then names it.

helper: asking the host's vigil-backup; transfer: pull, decrypt, copy to another host; restore: the
restore procedure (docs/runbooks/restore.md) from maintenance on to health checked.
"""
