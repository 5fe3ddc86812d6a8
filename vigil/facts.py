"""Facts: a command that reads one thing on a host, plus a pure parser for its output.

Facts are never fetched one SSH exec at a time: `batch_script` folds every fact
a step needs into one shell script, run in one round trip, and `split_batch`
cuts the answer back into each fact's output and exit status.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import shlex
from dataclasses import dataclass
from typing import Any, Callable

from vigil.commands import Command, _reveal, cmd, script

# Files larger than this are compared by checksum only; their content is not fetched.
CONTENT_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Fact:
    """A read-only command and the parser that turns (stdout, exit status) into a value.

    key: identifies the fact within a host's run, so two operations share one read.
    Example: file_fact("/etc/motd").parse("file\\t644\\troot\\troot\\t0\\n", 0)
    """

    key: str
    command: Command
    parse: Callable[[str, int], Any]
    # Set when one command can read this fact together with others of its kind (see Together).
    together: "Together | None" = None


@dataclass(frozen=True)
class Together:
    """Facts of one kind that a single command reads at once: a batch asks it once for all of them.

    kind: which facts go together; argument: this fact's part of the shared command;
    command: the shared command for the arguments, in order; split: its (stdout, status) -> each
    argument's stdout, in order (ValueError when the answer does not have one part per argument).
    Example: `systemctl show -p ... -- a.service b.service` answers for both unit facts.
    """

    kind: str
    argument: str
    command: Callable[[tuple[str, ...]], Command]
    split: Callable[[str, int, int], list[str]]


# --- files -----------------------------------------------------------------


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
    """Parse `_FILE_SCRIPT` output: a stat line, then a checksum (empty when the content follows) or link target, then content."""
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
    return ("%s\t%o\t%s\t%s\t%d\n" % (kind, st.st_mode & 0o7777, name("u", st.st_uid), name("g", st.st_gid), st.st_size)).encode()
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


# --- packages --------------------------------------------------------------


def parse_dpkg_installed(stdout: str, status: int) -> dict[str, str]:
    """Parse `dpkg-query -W` lines `name<TAB>status<TAB>version` into {name: version} of installed ones."""
    installed = {}
    for line in stdout.splitlines():
        parts = line.split("\t")
        # "install ok installed", "hold ok installed": the last word is the package's state.
        if len(parts) == 3 and parts[1].split(" ")[-1] == "installed":
            installed[parts[0].split(":")[0]] = parts[2]
    return installed


def apt_installed_fact() -> Fact:
    """Every installed Debian package and its version."""
    return Fact(
        "apt:installed",
        cmd("dpkg-query", "-W", "-f", "${Package}\t${Status}\t${Version}\n"),
        parse_dpkg_installed,
    )


def parse_age_seconds(stdout: str, status: int) -> int | None:
    """Parse `<now> <mtime>` into an age in seconds; None when the file was absent."""
    parts = stdout.split()
    if len(parts) != 2:
        return None
    return max(0, int(parts[0]) - int(parts[1]))


def apt_cache_age_fact() -> Fact:
    """Seconds since the apt package lists were last updated (None: never)."""
    # pkgcache.bin is rebuilt by every `apt-get update`, so its mtime is the cache's age.
    return Fact(
        "apt:cache-age",
        script('m=$(stat -c %Y /var/cache/apt/pkgcache.bin 2>/dev/null) && echo "$(date +%s) $m"'),
        parse_age_seconds,
    )


# --- users -----------------------------------------------------------------


@dataclass(frozen=True)
class UserState:
    """A local user as passwd and group membership describe it; exists False when absent."""

    exists: bool
    uid: int = -1
    home: str = ""
    shell: str = ""
    groups: tuple[str, ...] = ()


def parse_user(stdout: str, status: int) -> UserState:
    """Parse a `getent passwd` line followed by an `id -nG` line."""
    lines = stdout.splitlines()
    if not lines or not lines[0].strip():
        return UserState(exists=False)
    fields = lines[0].split(":")
    groups = tuple(lines[1].split()) if len(lines) > 1 else ()
    return UserState(exists=True, uid=int(fields[2]), home=fields[5], shell=fields[6], groups=groups)


def user_fact(name: str) -> Fact:
    """The passwd entry and groups of user `name`."""
    return Fact(f"user:{name}", script('getent passwd "$1" && id -nG "$1"', name), parse_user)


# --- systemd ---------------------------------------------------------------


@dataclass(frozen=True)
class UnitState:
    """A systemd unit's load, activity and enablement, as `systemctl show` reports them."""

    load: str
    active: str
    enabled: str
    needs_daemon_reload: bool

    @property
    def exists(self) -> bool:
        return self.load == "loaded"


def parse_systemctl_show(stdout: str, status: int) -> UnitState:
    """Parse `systemctl show -p LoadState,ActiveState,UnitFileState,NeedDaemonReload` key=value lines."""
    values = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    return UnitState(
        load=values.get("LoadState", "not-found"),
        active=values.get("ActiveState", "inactive"),
        enabled=values.get("UnitFileState", ""),
        needs_daemon_reload=values.get("NeedDaemonReload") == "yes",
    )


_UNIT_PROPERTIES = "LoadState,ActiveState,UnitFileState,NeedDaemonReload"


def _units_command(units: tuple[str, ...]) -> Command:
    return cmd("systemctl", "show", "-p", _UNIT_PROPERTIES, "--", *units)


def _split_units(stdout: str, status: int, count: int) -> list[str]:
    """`systemctl show A B`: each unit's properties, in order, separated by an empty line."""
    if status != 0 and not stdout.strip():
        return [""] * count  # systemd did not answer (no bus): each unit reads as not found, as alone
    parts = stdout.strip("\n").split("\n\n") if stdout.strip() else []
    if len(parts) != count:
        raise ValueError(f"systemctl show answered for {len(parts)} units, not {count}")
    return parts


def unit_fact(unit: str) -> Fact:
    """The state of systemd unit `unit` (read with every other unit fact of the batch, in one systemctl)."""
    return Fact(f"unit:{unit}", _units_command((unit,)), parse_systemctl_show,
                together=Together("systemctl-show", unit, _units_command, _split_units))


# --- guards and host traits --------------------------------------------------


def parse_status(stdout: str, status: int) -> int:
    """The fact is the command's exit status."""
    return status


def status_fact(command: Command) -> Fact:
    """The exit status of a read-only check command, e.g. a guard's `unless`."""
    return Fact(f"status:{command.display()}", command, parse_status)


def parse_swaps(stdout: str, status: int) -> list[str]:
    """Parse /proc/swaps into the active swap devices or files."""
    return [line.split()[0] for line in stdout.splitlines()[1:] if line.strip()]


def swaps_fact() -> Fact:
    """Active swap areas."""
    return Fact("swaps", cmd("cat", "/proc/swaps"), parse_swaps)


def parse_container(stdout: str, status: int) -> str | None:
    """Parse `systemd-detect-virt --container`: the container technology, or None on a VM or metal."""
    value = stdout.strip()
    return value if status == 0 and value and value != "none" else None


def container_fact() -> Fact:
    """Which container technology the host runs in, if any (swap and clocks belong to the outer host)."""
    return Fact("container", cmd("systemd-detect-virt", "--container"), parse_container)


# --- batching --------------------------------------------------------------


@dataclass
class Batch:
    """Every fact of `facts` in one shell script; `outputs` cuts its answer back into one per fact.

    Facts that go together (Together) are one command in the script, placed where the first of them
    was; every other fact is its own. The nonce makes the frame markers impossible to forge from a
    file's content. The script runs under one sudo, so each command is rendered without a prefix.
    """

    facts: list[Fact]
    nonce: str
    # Per frame of the script: the indexes (into facts) it answers for, and the Together that joins them.
    frames: list[tuple[list[int], Together | None]]
    script: str

    @classmethod
    def of(cls, facts: list[Fact], nonce: str | None = None) -> "Batch":
        nonce = nonce or secrets.token_hex(8)
        frames: list[tuple[list[int], Together | None]] = []
        joined: dict[str, int] = {}
        for index, fact in enumerate(facts):
            if fact.together is None:
                frames.append(([index], None))
            elif fact.together.kind in joined:
                frames[joined[fact.together.kind]][0].append(index)
            else:
                joined[fact.together.kind] = len(frames)
                frames.append(([index], fact.together))
        functions: dict[str, str] = {}
        lines = []
        for number, (members, together) in enumerate(frames):
            command = together.command(tuple(facts[i].together.argument for i in members)) if together else facts[members[0]].command
            lines.append(f"echo '@@{nonce} begin {number}'")
            lines.append(f"( {_as_function_call(command, functions) or command.render(None)} ) 2>/dev/null </dev/null; s=$?")
            lines.append(f"echo; echo \"@@{nonce} end {number} $s\"")
        # Each script() body once, as a shell function: a call in a subshell is a fork, where `sh -c BODY`
        # per fact was a fork and an exec of sh (dozens of file facts share one body).
        definitions = [f"{name}() {{\n{body}\n}}" for body, name in functions.items()]
        return cls(facts, nonce, frames, "\n".join(definitions + lines) + "\n")

    def outputs(self, output: str) -> list[tuple[str, int]]:
        """(stdout, status) per fact, in order; ValueError when a frame is missing or a joined answer is short."""
        answers = split_batch(output, len(self.frames), self.nonce)
        per_fact: list[tuple[str, int] | None] = [None] * len(self.facts)
        for (members, together), (stdout, status) in zip(self.frames, answers, strict=True):
            parts = together.split(stdout, status, len(members)) if together else [stdout]
            for index, part in zip(members, parts, strict=True):
                per_fact[index] = (part, status)
        return per_fact


def batch_script(facts: list[Fact], nonce: str | None = None) -> tuple[str, str]:
    """One shell script that runs every fact's command and frames each output (see Batch); (script, nonce)."""
    batch = Batch.of(facts, nonce)
    return batch.script, batch.nonce


def _as_function_call(command: Command, functions: dict[str, str]) -> str | None:
    """`sh -c BODY vigil ARGS...` (a script() run as the batch's user) as `NAME ARGS...`, NAME defined once
    per distinct BODY in `functions`; None for any other command. The body reads only "$1", "$2"...,
    as script() requires, so it means the same as a function's body."""
    argv = command.argv
    if command.as_user or len(argv) < 4 or argv[:2] != ("sh", "-c") or argv[3] != "vigil" or not isinstance(argv[2], str):
        return None
    name = functions.setdefault(argv[2], f"vigil_fact_{len(functions)}")
    return " ".join([name, *(shlex.quote(_reveal(token)) for token in argv[4:])])


def split_batch(output: str, count: int, nonce: str) -> list[tuple[str, int]]:
    """Cut `batch_script` output into (stdout, status) per fact, in order.

    A fact whose frame is missing (the script died) raises ValueError.
    """
    results: list[tuple[str, int]] = []
    rest = output
    for index in range(count):
        begin = f"@@{nonce} begin {index}\n"
        start = rest.find(begin)
        end_marker = f"\n@@{nonce} end {index} "
        end = rest.find(end_marker, start)
        if start < 0 or end < 0:
            raise ValueError(f"fact {index} missing from the batch output")
        # The end marker starts with the newline `echo` printed, so the body is the output exactly.
        body = rest[start + len(begin) : end]
        status_line = rest[end + len(end_marker) :].split("\n", 1)
        results.append((body, int(status_line[0])))
        rest = status_line[1] if len(status_line) > 1 else ""
    return results


def sections(stdout: str):
    """(section, line) for each non-empty line of a one-round-trip answer made of "@name" headed sections.

    Example: list(sections("@units\nnginx active\n\n@now\nT\n")) -> [("units", "nginx active"), ("now", "T")]
    """
    section = None
    for line in stdout.splitlines():
        if line.startswith("@"):
            section = line[1:].strip()
        elif line.strip():
            yield section, line.strip()
