"""`backup.import --from-dump`: a pg_dump archive on this machine (what a PaaS's backup download or a
team's own `pg_dump --format=custom` gives), checked here, then put on the database host for the copy.

The archive is read there by the host's pg_restore, so it travels once, checked on arrival by its
SHA-256, into a directory only postgres reads; it is removed when the import ends, however it ends.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from vigil.backup.access import BackupError
from vigil.core.commands import checked_upload, script
from vigil.core.connectors import Transport
from vigil.core.errors import ConfigError

UPLOADS = "/var/lib/postgresql/vigil-import"
# The archive's size twice over must be free: the archive itself, and room for the restore to start.
FREE_FACTOR = 2


@dataclass(frozen=True)
class DumpFile:
    """An archive to import: where it is here, and the name it gets on the host."""

    path: Path
    remote: str

    @property
    def shown(self) -> str:
        return str(self.path)


def check_dump(path: Path, flag: str = "--from-dump") -> DumpFile:
    """The file is a pg_dump archive pg_restore reads from a file (custom or tar format), else a clear error."""
    if not path.is_file():
        raise ConfigError(f"{flag}: {path} is not a file")
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError as error:
        raise ConfigError(f"{flag}: {path} cannot be read: {error.strerror}") from None
    custom = head.startswith(b"PGDMP")
    tar = len(head) == 512 and head[257:262] == b"ustar" and head.startswith(b"toc.dat\0")
    if not (custom or tar):
        if head.lstrip().startswith(b"--") and b"PostgreSQL database dump" in head:
            raise ConfigError(f"{flag}: {path} is a plain SQL dump; backup.import reads pg_dump's archives, whose "
                              "tables it can count and check: make one with pg_dump --format=custom")
        raise ConfigError(f"{flag}: {path} is not a pg_dump archive (pg_dump --format=custom or --format=tar)")
    return DumpFile(path, f"{UPLOADS}/import-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{os.getpid()}.dump")


def put_dump(transport: Transport, host: str, dump: DumpFile) -> None:
    """The archive streamed to the host (never read into memory here), checked there by its SHA-256."""
    size = dump.path.stat().st_size
    result = transport.run(checked_upload(dump.path, dump.remote, "postgres:postgres", FREE_FACTOR * size),
                           timeout=7200)
    if not result.ok:
        raise BackupError(f"{host}: putting {dump.path} there failed: {result.stderr.strip()[-300:]}; nothing "
                          "was changed")


def remove_dump(transport: Transport, dump: DumpFile) -> None:
    transport.run(script('rm -f -- "$1"', dump.remote), timeout=60)
