"""Commands as data: argv tokens that know how to quote and how to hide secrets.

Nothing here does I/O. Operations and concern modules build `Command` objects;
only the transport sends `Command.render()` to a host. Whatever vigil prints
uses `Command.display()`, where every `Secret` token reads `***`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from vigil.core.local_files import sha256_of
from vigil.core.redaction import MASK, REDACTOR, Redactor


class Secret:
    """A value that must never be displayed; registering it lets the redactor mask it anywhere.

    Example: Command(("chpasswd",), stdin=Secret("deploy:hunter2"))
    """

    __slots__ = ("value",)

    def __init__(self, value: str):
        if not isinstance(value, str) or len(value) < Redactor.MIN_LENGTH:
            raise ValueError(
                f"a secret must be a string of at least {Redactor.MIN_LENGTH} characters, or it cannot be masked"
            )
        self.value = value
        REDACTOR.add(value)

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = __repr__


Token = Union[str, Secret]


def reveal(token: Token) -> str:
    """The token as the host must see it: a Secret's value itself (for the transport only)."""
    return token.value if isinstance(token, Secret) else token


def _show(token: Token) -> str:
    return MASK if isinstance(token, Secret) else shlex.quote(token)


@dataclass(frozen=True)
class Command:
    """One program invocation on a host.

    argv: the program and its arguments; each token is quoted when rendered.
    sudo: run as root (through `sudo -n` when the login user is not root).
    as_user: run as this user instead (through `sudo -n -u`).
    stdin: bytes fed to the program, or a local file's path to stream from (a backup of any size, never
        held in memory); never shown, so secrets travel here, not in argv.
    timeout: seconds this command may run when it waits longer than the host's command_timeout by design (a
        new member copying the leader's data); the longer of the two applies. None: the host's.
    Example: Command(("systemctl", "reload", "nginx")).render("deploy")
             -> "sudo -n -H -- systemctl reload nginx"
    """

    argv: tuple[Token, ...]
    sudo: bool = True
    as_user: str | None = None
    stdin: bytes | Path | None = field(default=None, repr=False, compare=False)
    timeout: float | None = None

    def __post_init__(self):
        if not self.argv:
            raise ValueError("a command needs at least a program")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"a command's timeout must be positive seconds, got {self.timeout!r}")
        for token in self.argv:
            if not isinstance(token, (str, Secret)):
                raise TypeError(f"command tokens must be str or Secret, got {token!r}")

    def _prefix(self, login_user: str | None) -> list[str]:
        if self.as_user and self.as_user != login_user:
            return ["sudo", "-n", "-H", "-u", self.as_user, "--"]
        if self.sudo and not self.as_user and login_user not in (None, "root"):
            return ["sudo", "-n", "-H", "--"]
        return []

    def render(self, login_user: str | None = None) -> str:
        """The exact shell line sent to the host, secrets included: for the transport only."""
        prefix = [shlex.quote(part) for part in self._prefix(login_user)]
        return " ".join(prefix + [shlex.quote(reveal(token)) for token in self.argv])

    def display(self, login_user: str | None = None) -> str:
        """The shell line as shown to people and logs, secrets masked."""
        prefix = [shlex.quote(part) for part in self._prefix(login_user)]
        return " ".join(prefix + [_show(token) for token in self.argv])

    def __str__(self) -> str:
        return self.display()


def cmd(*argv: Token, sudo: bool = True, as_user: str | None = None, stdin: bytes | Path | None = None) -> Command:
    """Shorthand for `Command(argv)`.

    Example: cmd("mkdir", "-p", "/srv/app")
    """
    return Command(tuple(argv), sudo=sudo, as_user=as_user, stdin=stdin)


def script(
    body: str, *args: Token, sudo: bool = True, as_user: str | None = None, stdin: bytes | Path | None = None,
    timeout: float | None = None,
) -> Command:
    """A fixed shell snippet that reads its values only from "$1", "$2"...

    `body` must be a constant written in vigil's code, never built from values;
    the values travel as separate, quoted arguments, so no input can change
    what the snippet does.
    Example: script('test -e "$1" || touch "$1"', "/etc/vigil")
    """
    return Command(("sh", "-c", body, "vigil", *args), sudo=sudo, as_user=as_user, stdin=stdin, timeout=timeout)


# A local file streamed on stdin into "$2.partial", checked by its SHA-256 ($3), then renamed to "$2": a
# damaged or cut upload leaves nothing behind. "$1" (the directory) is made 0700 for "$5" (user:group), which
# also owns the file (0600); "$4" bytes must be free in "$1" first (0: not checked).
CHECKED_UPLOAD = (
    'set -e; install -d -m 0700 -o "${5%%:*}" -g "${5#*:}" -- "$1"; '
    'if [ "$4" -gt 0 ]; then free=$(df --output=avail -B1 -- "$1" | tail -n 1); '
    'if [ "$free" -lt "$4" ]; then echo "only $free bytes free in $1, and $4 are needed" >&2; exit 66; fi; fi; '
    'trap \'rm -f -- "$2.partial"\' EXIT; cat > "$2.partial"; got=$(sha256sum -- "$2.partial" | cut -d" " -f1); '
    'if [ "$got" != "$3" ]; then echo "arrived damaged (its SHA-256 is $got, not $3)" >&2; exit 65; fi; '
    'chown -- "$5" "$2.partial"; chmod 0600 -- "$2.partial"; mv -f -- "$2.partial" "$2"'
)


def checked_upload(path: Path, target: str, owner: str = "root:root", free_needed: int = 0) -> Command:
    """`path` streamed (never read into memory here) to `target` on a host, checked there by its SHA-256.

    Example: checked_upload(Path("paas.dump"), "/var/lib/postgresql/vigil-import/x.dump", "postgres:postgres")
    """
    directory = target.rsplit("/", 1)[0]
    return script(CHECKED_UPLOAD, directory, target, sha256_of(path), str(free_needed), owner, stdin=path)
