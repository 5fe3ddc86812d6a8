"""Files: what is at a path (kind, mode, owner, checksum, small content), read for a whole batch in one process."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from vigil.core.commands import Command, script
from vigil.core.facts import Fact, Together

# Files larger than this are compared by checksum only; their content is not fetched.
CONTENT_LIMIT = 256 * 1024


@dataclass(frozen=True)
class FileState:
    """What is at a path: kind is None (absent), 'file', 'directory', 'link' or 'other'."""

    kind: str | None
    mode: str = ""
    owner: str = ""
    group: str = ""
    size: int = 0
    sha256: str = ""
    target: str = ""
    content: bytes | None = None

    def __post_init__(self):
        # The checksum follows from content that came whole (a small file), however the state was built.
        if self.content is not None and not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.content).hexdigest())


# One stat; a file small enough to send comes whole (its checksum is computed here, from the content),
# a bigger one as its checksum only: no process the answer does not need.
_FILE_SCRIPT = r"""p=$1
if [ -L "$p" ]; then printf 'link\t\t\t\t0\n'; readlink -- "$p"
elif [ -e "$p" ]; then
  s=$(stat -c '%F	%a	%U	%G	%s' -- "$p") || exit 1
  printf '%s\n' "$s"
  if [ -f "$p" ]; then
    if [ "${s##*	}" -le "$2" ]; then echo; base64 -w0 -- "$p"; echo
    else sha256sum -- "$p" | cut -d' ' -f1; fi
  fi
fi"""

_KINDS = {"regular file": "file", "regular empty file": "file", "directory": "directory"}


def parse_file(stdout: str, status: int) -> FileState:
    """Parse `_FILE_SCRIPT` output: a stat line, then a checksum or link target, then content.

    The checksum line is empty when the content follows.
    """
    lines = stdout.splitlines()
    if not lines or not lines[0].strip():
        return FileState(kind=None)
    kind, mode, owner, group, size = (lines[0].split("\t") + [""] * 5)[:5]
    if kind == "link":
        return FileState(kind="link", target=lines[1] if len(lines) > 1 else "")
    kind = _KINDS.get(kind, "other")
    state = FileState(kind=kind, mode=mode.zfill(4), owner=owner, group=group, size=int(size or 0))
    if kind == "file" and len(lines) > 1:
        content = base64.b64decode(lines[2]) if len(lines) > 2 else None
        if content is None and state.size == 0:
            content = b""
        checksum = lines[1].strip() or (hashlib.sha256(content).hexdigest() if content is not None else "")
        state = FileState(**{**state.__dict__, "sha256": checksum, "content": content})
    return state


# Every file fact of a batch in one process: what _FILE_SCRIPT prints for each path, in order, each
# after a break line that carries a random token (a link target or file name cannot forge it). With
# python3 on the host (Debian's images have it; the monitor role installs it) one interpreter stats and
# reads them all; without, the shell does, a few processes per path. A path that cannot be read answers
# for itself (a stat line without content), never for the others.
FILE_BREAK = "@@vigil-next-file"
_FILES_PYTHON = r"""
import base64, grp, hashlib, os, pwd, stat, sys
marker, limit, names = sys.argv[1].encode() + b"\n", int(sys.argv[2]), {}
out = sys.stdout.buffer
def name(table, key):
    if (table, key) not in names:
        try:
            names[table, key] = (pwd.getpwuid if table == "u" else grp.getgrgid)(key)[0]
        except KeyError:
            names[table, key] = "UNKNOWN"
    return names[table, key]
def line(st, kind):
    fields = (kind, st.st_mode & 0o7777, name("u", st.st_uid), name("g", st.st_gid), st.st_size)
    return ("%s\t%o\t%s\t%s\t%d\n" % fields).encode()
for path in map(os.fsencode, sys.argv[3:]):
    out.write(marker)
    try:
        st = os.lstat(path)
    except OSError:
        continue
    if stat.S_ISLNK(st.st_mode):
        try:
            out.write(b"link\t\t\t\t0\n" + os.readlink(path) + b"\n")
        except OSError:
            out.write(b"link\t\t\t\t0\n\n")
        continue
    if not stat.S_ISREG(st.st_mode):
        out.write(line(st, "directory" if stat.S_ISDIR(st.st_mode) else "other"))
        continue
    try:
        # Not through a link swapped in since lstat, and never blocking on a fifo swapped in.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        out.write(line(st, "regular file" if st.st_size else "regular empty file"))
        continue
    with os.fdopen(fd, "rb") as data:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            out.write(line(st, "other"))
            continue
        out.write(line(st, "regular file" if st.st_size else "regular empty file"))
        try:
            if st.st_size <= limit:
                out.write(b"\n" + base64.b64encode(data.read()) + b"\n")
            else:
                digest = hashlib.sha256()
                for block in iter(lambda: data.read(1 << 20), b""):
                    digest.update(block)
                out.write(digest.hexdigest().encode() + b"\n")
        except OSError:
            pass
"""
_FILES_SCRIPT = (
    'marker=$1; py=$2; limit=$3; shift 3\n'
    'if command -v python3 >/dev/null 2>&1; then exec python3 -c "$py" "$marker" "$limit" "$@"; fi\n'
    'one() {\n' + _FILE_SCRIPT + '\n}\n'
    'for p; do printf "%s\\n" "$marker"; ( one "$p" "$limit" ); done'
)


def _files_command(paths: tuple[str, ...]) -> Command:
    return script(_FILES_SCRIPT, f"{FILE_BREAK} {secrets.token_hex(8)}", _FILES_PYTHON, str(CONTENT_LIMIT), *paths)


def _split_files(stdout: str, status: int, count: int) -> list[str]:
    """Each path's answer, cut at the break line the answer starts with (its token is this run's)."""
    marker = stdout.split("\n", 1)[0]
    if not marker.startswith(FILE_BREAK + " "):
        raise ValueError(f"the files' answer does not start with a break line (exit {status})")
    parts = stdout.split(marker + "\n")
    if len(parts) != count + 1 or parts[0]:
        raise ValueError(f"the files' answer holds {len(parts) - 1} files, not {count}")
    return parts[1:]


def file_fact(path: str) -> Fact:
    """The kind, mode, owner, checksum and (when small) content of `path`, without following links
    (read with every other file fact of the batch, in one process).

    Example: file_fact("/etc/timezone")
    """
    return Fact(f"file:{path}", script(_FILE_SCRIPT, path, str(CONTENT_LIMIT)), parse_file,
                together=Together("files", path, _files_command, _split_files))
