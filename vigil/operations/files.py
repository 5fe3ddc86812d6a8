"""Files: content, directories, links and single lines, each written atomically and never through a link."""

from __future__ import annotations

import difflib
import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from typing import Sequence

from vigil.core.commands import Command, cmd, script
from vigil.core.operations import Operation, OperationError, change, noop
from vigil.core.redaction import MASK, REDACTOR
from vigil.facts.files import CONTENT_LIMIT, FileState, file_fact

MODE_PATTERN = re.compile(r"^0?[0-7]{3,4}$")


def _mode(mode: str) -> str:
    """Normalise an octal mode to the four digits `stat -c %a` reports (zero-padded)."""
    if not isinstance(mode, str) or not MODE_PATTERN.match(mode):
        raise ValueError(f"file mode must be octal like 0644, got {mode!r}")
    return format(int(mode, 8), "04o")


def parent_of(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) or "/"


def writer_for(path: str, parent: FileState, owner: str) -> str | None:
    """Who may safely write into `path`'s directory: None for root, else the directory's owner.

    Root following a symlink planted in a directory someone else controls would
    write or chmod any file on the host, so root only writes where only root
    can rename entries; elsewhere the write runs as that directory's owner, and
    only if the file is theirs too.
    """
    if parent.kind != "directory":
        return None  # absent now: created by an earlier step, as root
    mode = int(parent.mode or "0", 8)
    shared = bool(mode & 0o022) and not mode & 0o1000  # group/other may rename entries (no sticky bit)
    if parent.owner == "root" and not shared:
        return None
    if parent.owner == owner and not shared:
        return owner
    raise OperationError(
        f"refusing to write {path}: its directory is writable by {parent.owner}"
        f"{' and others' if shared else ''}, and the file would belong to {owner}"
    )


# Writes stdin to a fresh temporary file beside the target (noclobber: never
# through an existing name or link), sets owner and mode on it, then renames it
# over the target: readers see the old or the new file, never half of one.
_ATOMIC_WRITE = (
    'tmp=$(mktemp -u -- "$(dirname -- "$1")/.$(basename -- "$1").vigil-XXXXXXXX") || exit 1; '
    'trap \'rm -f -- "$tmp"\' EXIT; '
    '(set -C && umask 077 && cat > "$tmp") && chown -h -- "$2" "$tmp" && chmod -- "$3" "$tmp" && '
    'mv -T -f -- "$tmp" "$1"'
)


# The same, plus a validator run on the temporary file before it replaces anything
# (`sshd -t -f`, `visudo -cf`) and, optionally, the old file kept as PATH.vigil-previous.
_CHECKED_WRITE = (
    'p=$1 owner=$2 mode=$3 backup=$4; shift 4; '
    'tmp=$(mktemp -u -- "$(dirname -- "$p")/.$(basename -- "$p").vigil-XXXXXXXX") || exit 1; '
    'trap \'rm -f -- "$tmp"\' EXIT; '
    '(set -C && umask 077 && cat > "$tmp") && chown -h -- "$owner" "$tmp" && chmod -- "$mode" "$tmp" && '
    '{ [ $# -eq 0 ] || "$@" "$tmp"; } && '
    '{ [ "$backup" = no ] || [ ! -e "$p" ] || cp -p -- "$p" "$p.vigil-previous"; } && '
    'mv -T -f -- "$tmp" "$p"'
)


def atomic_write(path: str, content: bytes, owner: str, group: str, mode: str, as_user: str | None = None,
                 validate: Sequence[str] = (), backup: bool = False) -> Command:
    """The command that replaces `path` with `content` atomically (content goes on stdin).

    as_user: write as this user instead of root (see `writer_for`).
    validate: a command that gets the temporary file's path appended and must accept it first.
    backup: keep the file it replaces as PATH.vigil-previous.
    Example: atomic_write("/etc/motd", b"hi\\n", "root", "root", "0644")
    """
    if validate or backup:
        return script(_CHECKED_WRITE, path, f"{owner}:{group}", mode, "yes" if backup else "no", *validate,
                      stdin=content, as_user=as_user)
    return script(_ATOMIC_WRITE, path, f"{owner}:{group}", mode, stdin=content, as_user=as_user)


def _env_keys(content: bytes | None) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (content or b"").decode(errors="replace").splitlines() if "=" in line)
    return {key.strip(): value for key, value in pairs if not key.lstrip().startswith("#")}


def _key_diff(path: str, before: bytes | None, after: bytes) -> str:
    """What changed in a secret env file, by key name only."""
    old, new = _env_keys(before), _env_keys(after)
    parts = [
        ("added", sorted(set(new) - set(old))),
        ("removed", sorted(set(old) - set(new))),
        ("changed", sorted(k for k in set(old) & set(new) if old[k] != new[k])),
    ]
    lines = [f"keys {label}: {', '.join(keys)}" for label, keys in parts if keys]
    return f"--- {path} (host)\n+++ {path} (vigil)\n" + "\n".join(lines or ["(no key changed)"]) + f"\nvalues: {MASK}\n"


def text_diff(path: str, before: bytes | None, after: bytes, secret: bool, env_file: bool = False) -> str:
    if secret and env_file:
        return _key_diff(path, before, after)
    if secret:
        return f"--- {path}\n+++ {path}\n(content hidden: the file holds secrets) {MASK}\n"
    try:
        old = (before or b"").decode().splitlines(keepends=True)
        new = after.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"binary file {path} differs\n"
    return "".join(difflib.unified_diff(old, new, f"{path} (host)", f"{path} (vigil)"))


def _differences(state: FileState, owner: str, group: str, mode: str) -> list[str]:
    notes = []
    if (state.owner, state.group) != (owner, group):
        notes.append(f"owner {state.owner}:{state.group} -> {owner}:{group}")
    if state.mode != mode:
        notes.append(f"mode {state.mode} -> {mode}")
    return notes


@dataclass
class File(Operation):
    """A file with exactly this content, owner, group and mode, written atomically.

    secret: the content holds secrets; diffs never show it. Content that holds
    any registered Secret value is treated as secret whatever this says.
    env_file: the content is KEY=value lines; a secret diff then names the keys that changed.
    replace: False writes the file only when it is missing: a seed another task then owns
    (nginx's upstreams, which deploys switch between colors).
    validate: argv that must accept the new content (the temporary file's path is appended).
    backup: keep the replaced file as PATH.vigil-previous (what a lock-out check reverts to).
    Example: File("/etc/motd", "Welcome\\n", name="Ensure the login banner is managed.")
    """

    path: str
    # Never in the operation's repr (a traceback, a test's failure): it may hold secrets.
    content: str | bytes = field(repr=False)
    owner: str = "root"
    group: str = "root"
    mode: str = "0644"
    name: str = ""
    notify: tuple[str, ...] = ()
    secret: bool = False
    env_file: bool = False
    replace: bool = True
    validate: tuple[str, ...] = ()
    backup: bool = False

    def __post_init__(self):
        self.mode = _mode(self.mode)
        if isinstance(self.content, str):
            self.content = self.content.encode()
        self.secret = self.secret or REDACTOR.contains(self.content.decode(errors="replace"))
        self.name = self.name or f"Ensure {self.path} has the managed content."

    def facts(self):
        return [file_fact(self.path), file_fact(parent_of(self.path))]

    def plan(self, known):
        state: FileState = known[f"file:{self.path}"]
        if state.kind in ("directory", "other"):
            raise OperationError(f"{self.path} is a {state.kind}; refusing to replace it with a file")
        writer = writer_for(self.path, known[f"file:{parent_of(self.path)}"], self.owner)
        write = atomic_write(self.path, self.content, self.owner, self.group, self.mode, as_user=writer,
                             validate=self.validate, backup=self.backup)
        if state.kind == "link":
            # The rename replaces the link itself; nothing is written through it.
            return change(f"replace the link at {self.path} (to {state.target}) with a file", write)
        if state.kind is None:
            return change(f"create {self.path}", write,
                          diff=text_diff(self.path, None, self.content, self.secret, self.env_file))
        if not self.replace:
            return noop(f"{self.path} exists; it is only created, never replaced")
        if state.sha256 != hashlib.sha256(self.content).hexdigest():
            return change(f"update {self.path}", write,
                          diff=text_diff(self.path, state.content, self.content, self.secret, self.env_file))
        notes = _differences(state, self.owner, self.group, self.mode)
        if notes:
            # Rewriting beats chown/chmod on the path, which would follow a link swapped in meanwhile.
            return change(", ".join(notes), write)
        return noop(f"{self.path} already has the wanted content, owner and mode")


@dataclass
class Directory(Operation):
    """A directory with this owner, group and mode (parents created as needed).

    Example: Directory("/var/log/vigil", mode="0750")
    """

    path: str
    owner: str = "root"
    group: str = "root"
    mode: str = "0755"
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        self.mode = _mode(self.mode)
        self.name = self.name or f"Ensure directory {self.path} exists."

    def facts(self):
        return [file_fact(self.path), file_fact(parent_of(self.path))]

    def plan(self, known):
        state: FileState = known[f"file:{self.path}"]
        writer = writer_for(self.path, known[f"file:{parent_of(self.path)}"], self.owner)
        if state.kind is None:
            return change(
                f"create directory {self.path}",
                cmd("install", "-d", "-o", self.owner, "-g", self.group, "-m", self.mode, self.path, as_user=writer),
            )
        if state.kind != "directory":
            raise OperationError(f"{self.path} exists and is a {state.kind}, not a directory; refusing to replace it")
        notes = _differences(state, self.owner, self.group, self.mode)
        if not notes:
            return noop(f"directory {self.path} already exists with the wanted owner and mode")
        # Five digits: GNU chmod keeps a directory's setgid bit unless told explicitly.
        return change(
            ", ".join(notes),
            cmd("chown", "-h", f"{self.owner}:{self.group}", self.path, as_user=writer),
            cmd("chmod", f"0{self.mode}", self.path, as_user=writer),
        )


# `ln -sfn` unlinks then links, leaving a moment with no link; a temporary link
# renamed over the old one (rename(2) via mv -T) switches in one step.
_ATOMIC_SYMLINK = (
    'tmp="$(dirname -- "$2")/.$(basename -- "$2").vigil-$$" && '
    'ln -s -- "$1" "$tmp" && mv -T -f -- "$tmp" "$2"'
)


@dataclass
class Symlink(Operation):
    """A symbolic link at `path` pointing to `target`, switched atomically.

    Example: Symlink("/etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
    """

    path: str
    target: str
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        self.name = self.name or f"Ensure {self.path} links to {self.target}."

    def facts(self):
        return [file_fact(self.path)]

    def plan(self, known):
        state: FileState = known[f"file:{self.path}"]
        if state.kind == "link" and state.target == self.target:
            return noop(f"{self.path} already links to {self.target}")
        if state.kind in ("directory", "other"):
            raise OperationError(f"{self.path} is a {state.kind}; refusing to replace it with a link")
        before = f"link to {state.target}" if state.kind == "link" else (state.kind or "nothing")
        return change(
            f"{self.path}: {before} -> link to {self.target}", script(_ATOMIC_SYMLINK, self.target, self.path)
        )


@dataclass
class Line(Operation):
    """A line present in (or absent from) a file; `regexp` finds the line to replace.

    The whole file is rewritten atomically with its existing owner and mode.
    Example: Line("/etc/fstab", "/swapfile none swap sw 0 0", regexp=r"^/swapfile\\s")
    """

    path: str
    line: str
    regexp: str | None = None
    present: bool = True
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        if "\n" in self.line:
            raise ValueError("a managed line cannot contain a newline")
        self.name = self.name or f"Ensure a line is {'in' if self.present else 'absent from'} {self.path}."

    def facts(self):
        return [file_fact(self.path), file_fact(parent_of(self.path))]

    def edit(self, text: str) -> str:
        """The file's text after the edit (pure); `text` itself when nothing needs to change."""
        lines = text.splitlines()
        pattern = re.compile(self.regexp) if self.regexp else None
        matches = [i for i, line in enumerate(lines) if (pattern.search(line) if pattern else line == self.line)]
        if not self.present:
            if not matches:
                return text
            lines = [line for i, line in enumerate(lines) if i not in matches]
        elif matches:
            if lines[matches[-1]] == self.line:
                return text
            lines[matches[-1]] = self.line
        elif self.line in lines:
            return text  # the regexp matches nothing, but the wanted line is already there
        else:
            lines.append(self.line)
        return "\n".join(lines) + ("\n" if lines else "")

    def plan(self, known):
        state: FileState = known[f"file:{self.path}"]
        if state.kind not in (None, "file"):
            raise OperationError(f"{self.path} is a {state.kind}, not a file")
        if state.kind == "file" and state.content is None:
            raise OperationError(f"{self.path} is larger than {CONTENT_LIMIT} bytes; manage it as a whole file")
        try:
            before = (state.content or b"").decode()
        except UnicodeDecodeError:
            raise OperationError(f"{self.path} is not UTF-8 text; manage it as a whole file") from None
        after = self.edit(before)
        if after == before or (state.kind is None and not self.present):
            return noop(f"{self.path} already {'has' if self.present else 'lacks'} the line")
        owner, group, mode = (state.owner, state.group, state.mode) if state.kind else ("root", "root", "0644")
        writer = writer_for(self.path, known[f"file:{parent_of(self.path)}"], owner)
        return change(
            f"{'add' if self.present else 'remove'} a line in {self.path}",
            atomic_write(self.path, after.encode(), owner, group, mode, as_user=writer),
            diff=text_diff(self.path, state.content, after.encode(), REDACTOR.contains(after)),
        )


@dataclass
class Absent(Operation):
    """Nothing at `path` (a file or link; directories are refused).

    Example: Absent("/etc/nginx/sites-enabled/default")
    """

    path: str
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        self.name = self.name or f"Ensure {self.path} is absent."

    def facts(self):
        return [file_fact(self.path)]

    def plan(self, known):
        state: FileState = known[f"file:{self.path}"]
        if state.kind is None:
            return noop(f"{self.path} is already absent")
        if state.kind == "directory":
            raise OperationError(f"{self.path} is a directory; refusing to remove it")
        return change(f"remove {self.path}", cmd("rm", "-f", "--", self.path))
