"""Operations: (facts, desired state) -> the commands needed, or the reason none are.

Every operation names the facts it reads and plans from them alone, so plans
are pure and tested without SSH. An operation that always changes says so.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jinja2

from vigil import facts as F
from vigil.commands import MASK, REDACTOR, Command, cmd, script

PACKAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
UNIT_PATTERN = re.compile(r"^[A-Za-z0-9:_.@-]+\.(service|socket|timer|target|mount|path)$")
MODE_PATTERN = re.compile(r"^0?[0-7]{3,4}$")
# A fresh server's apt-daily job may hold the dpkg lock for a while: wait for it instead of failing.
APT_LOCK_WAIT = "DPkg::Lock::Timeout=300"


class OperationError(Exception):
    """The host is in a state the operation refuses to change (it would lose data)."""


@dataclass(frozen=True)
class Plan:
    """What an operation would do: commands to run, or a reason for doing nothing.

    summary: one line on what changes (shown in the plan and the recap).
    diff: a unified diff for file content, secrets already masked.
    """

    commands: tuple[Command, ...] = ()
    reason: str = ""
    summary: str = ""
    diff: str | None = None

    @property
    def changes(self) -> bool:
        return bool(self.commands)


def noop(reason: str) -> Plan:
    return Plan(reason=reason)


def change(summary: str, *commands: Command, diff: str | None = None) -> Plan:
    return Plan(commands=tuple(commands), summary=summary, diff=diff)


class Operation:
    """Base class: a named desired state on one host.

    name: an imperative sentence shown in progress and the recap.
    notify: handler names to run once at the end of the host's run if this changed.
    """

    name: str = ""
    notify: tuple[str, ...] = ()

    def facts(self) -> list[F.Fact]:
        """The facts `plan` reads."""
        return []

    def plan(self, known: Mapping[str, Any]) -> Plan:
        """The commands that bring the host to the desired state, given the facts by key."""
        raise NotImplementedError


def _mode(mode: str) -> str:
    """Normalise an octal mode to the four digits `stat -c %a` reports (zero-padded)."""
    if not isinstance(mode, str) or not MODE_PATTERN.match(mode):
        raise ValueError(f"file mode must be octal like 0644, got {mode!r}")
    return format(int(mode, 8), "04o")


def parent_of(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) or "/"


def writer_for(path: str, parent: F.FileState, owner: str) -> str | None:
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


def _differences(state: F.FileState, owner: str, group: str, mode: str) -> list[str]:
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
    content: str | bytes
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
        return [F.file_fact(self.path), F.file_fact(parent_of(self.path))]

    def plan(self, known):
        state: F.FileState = known[f"file:{self.path}"]
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


_TEMPLATES = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> jinja2.Template:
    # Compiling is most of a render's cost, and every host of a run renders the same templates.
    return _TEMPLATES.from_string(source)


def render_template(source: str, variables: Mapping[str, Any]) -> str:
    """Render Jinja2 `source` with `variables`; an undefined variable is an error, never ''."""
    return _compiled(source).render(**variables)


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
        return [F.file_fact(self.path), F.file_fact(parent_of(self.path))]

    def plan(self, known):
        state: F.FileState = known[f"file:{self.path}"]
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
        return [F.file_fact(self.path)]

    def plan(self, known):
        state: F.FileState = known[f"file:{self.path}"]
        if state.kind == "link" and state.target == self.target:
            return noop(f"{self.path} already links to {self.target}")
        if state.kind in ("directory", "other"):
            raise OperationError(f"{self.path} is a {state.kind}; refusing to replace it with a link")
        before = f"link to {state.target}" if state.kind == "link" else (state.kind or "nothing")
        return change(f"{self.path}: {before} -> link to {self.target}", script(_ATOMIC_SYMLINK, self.target, self.path))


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
        return [F.file_fact(self.path), F.file_fact(parent_of(self.path))]

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
        state: F.FileState = known[f"file:{self.path}"]
        if state.kind not in (None, "file"):
            raise OperationError(f"{self.path} is a {state.kind}, not a file")
        if state.kind == "file" and state.content is None:
            raise OperationError(f"{self.path} is larger than {F.CONTENT_LIMIT} bytes; manage it as a whole file")
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
class AptPackages(Operation):
    """Debian packages installed; `apt-get update` only when the cache is older than `cache_valid_seconds`.

    A run where everything is installed never touches the cache.
    Example: AptPackages(["curl", "unattended-upgrades"])
    """

    packages: Sequence[str]
    cache_valid_seconds: int = 3600
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        for package in self.packages:
            if not PACKAGE_PATTERN.match(package):
                raise ValueError(f"not a Debian package name: {package!r}")
        self.name = self.name or f"Ensure packages are installed: {', '.join(self.packages)}."

    def facts(self):
        return [F.apt_installed_fact(), F.apt_cache_age_fact()]

    def plan(self, known):
        installed = known["apt:installed"]
        missing = [package for package in self.packages if package not in installed]
        if not missing:
            return noop(f"already installed: {', '.join(self.packages)}")
        commands = []
        age = known["apt:cache-age"]
        if age is None or age > self.cache_valid_seconds:
            commands.append(cmd("apt-get", "update", "-q", "-o", APT_LOCK_WAIT))
        commands.append(
            cmd("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "-o", APT_LOCK_WAIT,
                "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold", *missing)
        )
        return change(f"install {', '.join(missing)}", *commands)


@dataclass
class User(Operation):
    """A local user with this shell, home and groups; `authorized_keys` (if given) exactly these keys.

    Example: User("deploy", shell="/bin/bash", groups=["sudo"], authorized_keys=["ssh-ed25519 AAAA... ops"])
    """

    user: str
    shell: str = "/bin/bash"
    home: str | None = None
    system: bool = False
    groups: Sequence[str] = ()
    authorized_keys: Sequence[str] | None = None
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        self.home = self.home or f"/home/{self.user}"
        self.name = self.name or f"Ensure user {self.user} exists."

    def _keys_path(self) -> str:
        return f"{self.home}/.ssh/authorized_keys"

    def facts(self):
        found = [F.user_fact(self.user)]
        if self.authorized_keys is not None:
            found += [F.file_fact(f"{self.home}/.ssh"), F.file_fact(self._keys_path())]
        return found

    def plan(self, known):
        state: F.UserState = known[f"user:{self.user}"]
        commands, notes = [], []
        if not state.exists:
            args = ["useradd", "--create-home", "--home-dir", self.home, "--shell", self.shell]
            if self.system:
                args.append("--system")
            if self.groups:
                args += ["--groups", ",".join(self.groups)]
            commands.append(cmd(*args, "--", self.user))
            notes.append(f"create user {self.user}")
        else:
            if state.shell != self.shell:
                commands.append(cmd("usermod", "--shell", self.shell, "--", self.user))
                notes.append(f"shell {state.shell} -> {self.shell}")
            if state.home != self.home:
                raise OperationError(f"user {self.user} has home {state.home}, not {self.home}; refusing to move it")
            missing = [group for group in self.groups if group not in state.groups]
            if missing:
                commands.append(cmd("usermod", "--append", "--groups", ",".join(missing), "--", self.user))
                notes.append(f"add to groups {', '.join(missing)}")
        if self.authorized_keys is not None:
            wanted = ("\n".join(self.authorized_keys) + "\n").encode()
            ssh_dir: F.FileState = known.get(f"file:{self.home}/.ssh", F.FileState(None)) if state.exists else F.FileState(None)
            keys: F.FileState = known.get(f"file:{self._keys_path()}", F.FileState(None)) if state.exists else F.FileState(None)
            # Written as the user: root writing inside a directory the user controls could be led astray by a link.
            if ssh_dir.kind != "directory" or (ssh_dir.owner, ssh_dir.mode) != (self.user, "0700"):
                commands.append(cmd("install", "-d", "-m", "0700", f"{self.home}/.ssh", as_user=self.user))
            if keys.sha256 != hashlib.sha256(wanted).hexdigest() or (keys.owner, keys.mode) != (self.user, "0600"):
                commands.append(atomic_write(self._keys_path(), wanted, self.user, self.user, "0600", as_user=self.user))
                notes.append("set authorized keys")
        if not commands:
            return noop(f"user {self.user} already as wanted")
        return change(", ".join(notes) or f"fix {self.home}/.ssh", *commands)


# UnitFileState values: these count as enabled; the others below cannot be enabled or disabled at all.
ENABLED_STATES = ("enabled", "enabled-runtime", "alias")
UNTOGGLEABLE_STATES = ("static", "indirect", "generated", "transient", "masked", "masked-runtime")


@dataclass
class SystemdUnit(Operation):
    """A systemd unit enabled/disabled and running/stopped; daemon-reload first when its file changed.

    Example: SystemdUnit("unattended-upgrades.service", enabled=True, running=True)
    """

    unit: str
    enabled: bool | None = True
    running: bool | None = True
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        if not UNIT_PATTERN.match(self.unit):
            raise ValueError(f"not a systemd unit name: {self.unit!r}")
        wants = [w for w, on in (("enabled", self.enabled), ("running", self.running)) if on]
        self.name = self.name or f"Ensure {self.unit} is {' and '.join(wants) or 'stopped'}."

    def facts(self):
        return [F.unit_fact(self.unit)]

    def plan(self, known):
        state: F.UnitState = known[f"unit:{self.unit}"]
        commands, notes = [], []
        if state.needs_daemon_reload:
            commands.append(cmd("systemctl", "daemon-reload"))
            notes.append("daemon-reload (unit file changed)")
        if not state.exists and not state.needs_daemon_reload and (self.enabled or self.running):
            # A unit installed earlier in this run is unknown until systemd reloads.
            commands.append(cmd("systemctl", "daemon-reload"))
        toggleable = state.enabled not in UNTOGGLEABLE_STATES
        if self.enabled is not None and toggleable and (state.enabled in ENABLED_STATES) != self.enabled:
            commands.append(cmd("systemctl", "enable" if self.enabled else "disable", self.unit))
            notes.append("enable" if self.enabled else "disable")
        if self.running is not None and (state.active in ("active", "activating", "reloading")) != self.running:
            commands.append(cmd("systemctl", "start" if self.running else "stop", self.unit))
            notes.append("start" if self.running else "stop")
        if not notes:
            return noop(f"{self.unit} already {state.enabled or 'present'} and {state.active}")
        return change(", ".join(notes), *commands)


@dataclass
class DaemonReload(Operation):
    """`systemctl daemon-reload`, for a handler after a unit file or drop-in changed. Always changes."""

    name: str = "Reload systemd's unit files."
    notify: tuple[str, ...] = ()

    def plan(self, known):
        return change("systemctl daemon-reload", cmd("systemctl", "daemon-reload"))


UNIT_GLOB_PATTERN = re.compile(r"^[A-Za-z0-9:_.@*-]+\.(service|socket|timer)$")


@dataclass
class ServiceAction(Operation):
    """Restart or reload units (names or globs like `app@*.service`). Always changes: meant for handlers.

    unit: one unit, or a list of them.
    `try-reload-or-restart` touches only units that are running, so it is safe
    before the units exist; a glob matching nothing does nothing.
    Example: ServiceAction("ssh.service", "reload")
    """

    unit: str | Sequence[str]
    action: str = "restart"
    name: str = ""
    notify: tuple[str, ...] = ()
    # Run first; its failure stops the action (nginx -t before a reload keeps a broken config out).
    check: Command | None = None

    def __post_init__(self):
        if self.action not in ("restart", "reload", "try-restart", "reload-or-restart", "try-reload-or-restart"):
            raise ValueError(f"unknown service action {self.action!r}")
        units = [self.unit] if isinstance(self.unit, str) else list(self.unit)
        for unit in units:
            if not isinstance(unit, str) or not UNIT_GLOB_PATTERN.match(unit):
                raise ValueError(f"not a systemd unit name: {unit!r}")
        if not units:
            raise ValueError("a service action needs at least one unit")
        self.units = tuple(units)
        self.name = self.name or f"{self.action.capitalize()} {' '.join(units)}."

    def plan(self, known):
        action = script(RETRY_SPAWN_FAILURE, self.action, *self.units)
        commands = (self.check, action) if self.check else (action,)
        return change(f"{self.action} {' '.join(self.units)} (always changes)", *commands)


# `systemctl "$@"`, once more two seconds later when the job failed with result 'resources' (systemctl:
# "unavailable resources"): nothing ran then. systemd in a container on a cgroup-v1 host (the sandbox)
# can fail to spawn a unit restarted moments after its last stop, while that stop's cgroup is still
# being removed ("Failed to spawn executor"); a person would simply run it again. Other failures stand.
RETRY_SPAWN_FAILURE = ('out=$(systemctl "$@" 2>&1) && exit 0; status=$?; case $out in *"unavailable resources"*) '
                       'sleep 2; exec systemctl "$@";; esac; printf "%s\\n" "$out" >&2; exit "$status"')


@dataclass
class ConfirmLogin(Operation):
    """A handler: after a change to how the host takes logins, a fresh login must still work,
    or `revert` runs over the session that is still open. The runner makes the login.

    Example: ConfirmLogin([cmd("mv", "-f", "/etc/ssh/sshd_config.vigil-previous", "/etc/ssh/sshd_config"),
                           cmd("systemctl", "reload", "ssh.service")])
    """

    revert: Sequence[Command]
    name: str = "Confirm a fresh SSH login still works, else revert."
    notify: tuple[str, ...] = ()
    # Users to log in as besides the one vigil runs as (without sudo): only those whose
    # key vigil holds, or the check would fail for want of a key, not for the change.
    also_users: tuple[str, ...] = ()

    def plan(self, known):
        return noop("checked by the runner with a fresh connection")


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
        return [F.file_fact(self.path)]

    def plan(self, known):
        state: F.FileState = known[f"file:{self.path}"]
        if state.kind is None:
            return noop(f"{self.path} is already absent")
        if state.kind == "directory":
            raise OperationError(f"{self.path} is a directory; refusing to remove it")
        return change(f"remove {self.path}", cmd("rm", "-f", "--", self.path))


@dataclass
class Guarded(Operation):
    """Commands run only when `creates` is absent and `unless` fails: the escape hatch, still idempotent.

    Example: Guarded([cmd("mkswap", "/swapfile")], creates="/swapfile", name="Create the swap file.")
    """

    commands: Sequence[Command]
    creates: str | None = None
    unless: Command | None = None
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        if self.creates is None and self.unless is None:
            raise ValueError("a guarded command needs `creates` or `unless`; otherwise it is not idempotent")
        self.name = self.name or "Run a guarded command."

    def facts(self):
        found = []
        if self.creates:
            found.append(F.file_fact(self.creates))
        if self.unless:
            found.append(F.status_fact(self.unless))
        return found

    def plan(self, known):
        if self.creates and known[f"file:{self.creates}"].kind is not None:
            return noop(f"{self.creates} exists")
        if self.unless and known[f"status:{self.unless.display()}"] == 0:
            return noop(f"`{self.unless.display()}` succeeded")
        return change("run " + "; ".join(c.display() for c in self.commands), *self.commands)


OTHER_TIME_DAEMONS = ("chrony.service", "ntpsec.service", "ntp.service", "openntpd.service")


@dataclass
class TimeSync(Operation):
    """The clock kept in sync: systemd-timesyncd unless another time daemon already runs.

    Nothing in a container, whose clock is the outer host's. timesyncd is
    installed only where needed: Debian's package replaces chrony or ntp.
    Example: TimeSync()
    """

    name: str = "Ensure the clock is kept in sync."
    notify: tuple[str, ...] = ()

    def facts(self):
        return [F.container_fact(), F.unit_fact("systemd-timesyncd.service"),
                *[F.unit_fact(unit) for unit in OTHER_TIME_DAEMONS]]

    def plan(self, known):
        if known["container"]:
            return noop(f"runs in a {known['container']} container: the outer host keeps the clock")
        running = [unit for unit in OTHER_TIME_DAEMONS if known[f"unit:{unit}"].active == "active"]
        if running:
            return noop(f"{running[0]} keeps the clock")
        timesyncd: F.UnitState = known["unit:systemd-timesyncd.service"]
        if not timesyncd.exists:
            return change("install and start systemd-timesyncd",
                          cmd("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "-o",
                              APT_LOCK_WAIT, "systemd-timesyncd"),
                          cmd("systemctl", "enable", "--now", "systemd-timesyncd.service"))
        return SystemdUnit("systemd-timesyncd.service", enabled=True, running=True).plan(known)


@dataclass
class Swapfile(Operation):
    """A swap file of `size_mb` MiB, active and in /etc/fstab, when the host has no swap at all.

    In a container swap belongs to the outer host, so nothing is done there.
    Example: Swapfile("/swapfile", 1024)
    """

    path: str = "/swapfile"
    size_mb: int = 1024
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.size_mb, int) or self.size_mb <= 0:
            raise ValueError(f"swap size must be a positive number of MiB, got {self.size_mb!r}")
        self.name = self.name or f"Ensure a {self.size_mb} MiB swap file exists if the host has no swap."

    def facts(self):
        return [F.swaps_fact(), F.container_fact()]

    def plan(self, known):
        if known["container"]:
            return noop(f"runs in a {known['container']} container: swap is the outer host's to manage")
        if known["swaps"]:
            return noop(f"swap already active: {', '.join(known['swaps'])}")
        fstab_line = f"{self.path} none swap sw 0 0"
        return change(
            f"create and enable {self.path}",
            cmd("fallocate", "-l", f"{self.size_mb}M", self.path),
            cmd("chmod", "0600", self.path),
            cmd("mkswap", self.path),
            cmd("swapon", self.path),
            # Append on a line of its own even when fstab lacks a final newline.
            script('grep -qxF -- "$1" /etc/fstab || { [ -z "$(tail -c1 /etc/fstab)" ] || echo >> /etc/fstab; '
                   'printf "%s\\n" "$1" >> /etc/fstab; }', fstab_line),
        )
