"""A backup set copied off the backup host (`backup.pull` where the env has a repository).

What arrives is a small pgBackRest repository of its own, in one tar file: the set, the earlier sets a
diff or incr set takes files from, the WAL from the set's start to its stop (what makes its copy
consistent), the timelines' history files, and the repository's info files. Its files stay as the
repository keeps them, encrypted with the repository's cipher: the copy is as safe to keep anywhere as
the repository is, and pgBackRest restores from it with the env's passphrase:

    tar -xf production-20261203-021500F.pgbackrest.tar -C /var/tmp/pulled
    PGBACKREST_REPO1_CIPHER_PASS=... pgbackrest --stanza=together-pray --reset-repo1-host --reset-pg1-host \
        --repo1-path=/var/tmp/pulled --repo1-cipher-type=aes-256-cbc --pg1-path=DATA \
        --set=20261203-021500F --type=immediate restore

The backup host packs and checksums it in one pass; it is named here only once the checksum matches.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from vigil.backup.access import BackupError
from vigil.backup.pitr import LABEL
from vigil.backup.repository import REPOSITORY_USER, Backup, Repository
from vigil.backup.transfer import receive
from vigil.core.commands import Command
from vigil.core.connectors import Transport
from vigil.core.errors import ConfigError

# Run by python3 on the backup host, as the repository's user: the tar on stdout, then its sha256, size
# and what it holds as one JSON line on stderr. Arguments: the repository, the stanza, the archive id,
# the first and last WAL segment, then the sets. A segment missing in between stops it: a copy that
# cannot be restored is worse than none.
PACK = r'''
import hashlib, json, os, sys, tarfile
repository, stanza, archive_id, first, last, *sets = sys.argv[1:]
def segment(name):
    # PostgreSQL's default 16 MB segments: 256 to a log file.
    return int(name[:8], 16), int(name[8:16], 16) * 256 + int(name[16:24], 16)
timeline, start = segment(first)
stop = segment(last)[1]
members = [f"backup/{stanza}/{name}" for name in ("backup.info", "backup.info.copy")]
members += [f"archive/{stanza}/{name}" for name in ("archive.info", "archive.info.copy")]
for label in sets:
    top = f"backup/{stanza}/{label}"
    if not os.path.isdir(os.path.join(repository, top)):
        sys.exit(f"backup set {label} is not in the repository")
    def unreadable(error):
        raise error
    for directory, subdirectories, files in os.walk(os.path.join(repository, top), onerror=unreadable):
        subdirectories.sort()
        members += sorted(os.path.relpath(os.path.join(directory, name), repository) for name in files)
archive, found = f"archive/{stanza}/{archive_id}", set()
for entry in sorted(os.listdir(os.path.join(repository, archive))):
    path = os.path.join(repository, archive, entry)
    if os.path.isfile(path):
        members.append(f"{archive}/{entry}")  # a timeline's history file
        continue
    for name in sorted(os.listdir(path)):
        head = name[:24]
        if len(head) == 24 and segment(head)[0] == timeline and start <= segment(head)[1] <= stop:
            members.append(f"{archive}/{entry}/{name}")
            found.add(segment(head)[1])
missing = sorted(set(range(start, stop + 1)) - found)
if missing:
    sys.exit(f"WAL segment {timeline:08X}{missing[0] // 256:08X}{missing[0] % 256:08X} of the set is not in "
             "the repository")
class Hashing:
    def __init__(self, out):
        self.out, self.digest, self.size = out, hashlib.sha256(), 0
    def write(self, data):
        self.digest.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)
out = Hashing(sys.stdout.buffer)
with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
    for member in members:
        path = os.path.join(repository, member)
        if not os.path.exists(path):
            if member.endswith(".copy"):
                continue  # pgBackRest's spare copy of an info file: the file itself is there
            sys.exit(f"{member} vanished while it was packed (an expire ran?): the copy is not complete")
        tar.add(path, arcname=member, recursive=False)
sys.stdout.buffer.flush()
print(json.dumps({"sha256": out.digest.hexdigest(), "size": out.size, "files": len(members),
                  "wal": len(found)}), file=sys.stderr)
'''


def check_label(label: str) -> str:
    if not LABEL.fullmatch(label):  # pitr's: the label a restore takes
        raise ConfigError(f"ID: {label!r} is neither `latest` nor a backup set's label (invoke backup.list)")
    return label


def pack_command(repository: Repository, backup: Backup) -> Command:
    if not (backup.wal_start and backup.wal_stop and backup.archive_id):
        raise BackupError(f"{repository.host.name}: pgBackRest lists no WAL range for {backup.label}; it cannot be "
                          "copied as a set that restores")
    return Command(("python3", "-I", "-c", PACK, repository.path, repository.stanza, backup.archive_id,
                    backup.wal_start, backup.wal_stop, backup.label, *backup.references),
                   sudo=True, as_user=REPOSITORY_USER)


def pull_set(transport: Transport, repository: Repository, backup: Backup, env: str, into: Path) -> Path:
    """Copy `backup` off the backup host as a repository of its own into `into`; the tar is named only
    once its sha256 matches what the host packed. Returns the tar (its record beside it, .json)."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{env}-{backup.label}.pgbackrest.tar"
    partial = target.with_name(target.name + ".partial")
    sha256, size, _ = receive(transport, pack_command(repository, backup), target, repository.host.name,
                              f"backup set {backup.label}")
    record = {
        "id": backup.label,
        "env": env,
        "from": repository.host.name,
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sha256": sha256,
        "size": size,
        "type": backup.type,
        "sets": [backup.label, *backup.references],
        "wal": [backup.wal_start, backup.wal_stop],
        "stanza": repository.stanza,
        "drill": backup.drill or "none yet",
        "encrypted_with": "the repository's cipher (PGBACKREST_CIPHER_PASS in the env's secrets)",
        "restore": (f"tar -xf {target.name} -C DIR; then, where pgBackRest and PostgreSQL of the same major "
                    f"version are, with PGBACKREST_REPO1_CIPHER_PASS set: pgbackrest --stanza={repository.stanza} "
                    "--reset-repo1-host --reset-pg1-host --repo1-path=DIR --repo1-cipher-type=aes-256-cbc "
                    f"--pg1-path=DATA --set={backup.label} --type=immediate restore"),
    }
    target.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(partial, target)
    return target
