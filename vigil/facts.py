"""Facts: a command that reads one thing on a host, plus a pure parser for its output.

Facts are never fetched one SSH exec at a time: `batch_script` folds every fact
a step needs into one shell script, run in one round trip, and `split_batch`
cuts the answer back into each fact's output and exit status.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from vigil.commands import Command, cmd, script

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


_FILE_SCRIPT = r"""p=$1
if [ -L "$p" ]; then printf 'link\t\t\t\t0\n'; readlink -- "$p"
elif [ -e "$p" ]; then
  stat -c '%F	%a	%U	%G	%s' -- "$p"
  if [ -f "$p" ]; then
    sha256sum -- "$p" | cut -d' ' -f1
    if [ "$(stat -c %s -- "$p")" -le "$2" ]; then base64 -w0 -- "$p"; echo; fi
  fi
fi"""

_KINDS = {"regular file": "file", "regular empty file": "file", "directory": "directory"}


def parse_file(stdout: str, status: int) -> FileState:
    """Parse `_FILE_SCRIPT` output: a stat line, then a checksum or link target, then content."""
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
        state = FileState(**{**state.__dict__, "sha256": lines[1].strip(), "content": content})
    return state


def file_fact(path: str) -> Fact:
    """The kind, mode, owner, checksum and (when small) content of `path`, without following links.

    Example: file_fact("/etc/timezone")
    """
    return Fact(f"file:{path}", script(_FILE_SCRIPT, path, str(CONTENT_LIMIT)), parse_file)


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


def unit_fact(unit: str) -> Fact:
    """The state of systemd unit `unit`."""
    return Fact(
        f"unit:{unit}",
        cmd("systemctl", "show", unit, "-p", "LoadState,ActiveState,UnitFileState,NeedDaemonReload"),
        parse_systemctl_show,
    )


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


def batch_script(facts: list[Fact], nonce: str | None = None) -> tuple[str, str]:
    """One shell script that runs every fact's command and frames each output.

    Returns (script, nonce). The nonce makes the frame markers impossible to
    forge from a file's content. The script runs under one sudo, so each fact's
    own command is rendered without a prefix.
    """
    nonce = nonce or secrets.token_hex(8)
    lines = []
    for index, fact in enumerate(facts):
        lines.append(f"echo '@@{nonce} begin {index}'")
        lines.append(f"( {fact.command.render(None)} ) 2>/dev/null </dev/null; s=$?")
        lines.append(f"echo; echo \"@@{nonce} end {index} $s\"")
    return "\n".join(lines) + "\n", nonce


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
