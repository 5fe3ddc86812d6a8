"""Commands as data: argv tokens that know how to quote and how to hide secrets.

Nothing here does I/O. Operations and concern modules build `Command` objects;
only the transport sends `Command.render()` to a host. Whatever vigil prints
uses `Command.display()`, where every `Secret` token reads `***`.
"""

from __future__ import annotations

import shlex
import threading
from dataclasses import dataclass, field
from typing import Iterable, Union

MASK = "***"


class Secret:
    """A value that must never be displayed; registering it lets the redactor mask it anywhere.

    Example: Command(("chpasswd",), stdin=Secret("deploy:hunter2"))
    """

    __slots__ = ("value",)

    def __init__(self, value: str):
        if not isinstance(value, str) or len(value) < Redactor.MIN_LENGTH:
            raise ValueError(f"a secret must be a string of at least {Redactor.MIN_LENGTH} characters, or it cannot be masked")
        self.value = value
        REDACTOR.add(value)

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = __repr__


class Redactor:
    """Masks every registered secret value in text; one process-wide instance, thread safe."""

    # Shorter values would mask ordinary words; Secret refuses them.
    MIN_LENGTH = 4

    def __init__(self):
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Register a secret, and each line of a multi-line one (a diff or a log shows them apart)."""
        parts = [value] + [line.strip() for line in value.splitlines()]
        with self._lock:
            self._values.update(part for part in parts if len(part) >= self.MIN_LENGTH)

    def contains(self, text: str) -> bool:
        with self._lock:
            return any(value in text for value in self._values)

    def redact_data(self, data):
        """`data` (JSON-like: dicts, lists, strings) with every string redacted, before it is serialised."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {key: self.redact_data(value) for key, value in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.redact_data(value) for value in data]
        return data

    def redact(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            text = text.replace(value, MASK)
        return text


REDACTOR = Redactor()

Token = Union[str, Secret]


def _reveal(token: Token) -> str:
    return token.value if isinstance(token, Secret) else token


def _show(token: Token) -> str:
    return MASK if isinstance(token, Secret) else shlex.quote(token)


@dataclass(frozen=True)
class Command:
    """One program invocation on a host.

    argv: the program and its arguments; each token is quoted when rendered.
    sudo: run as root (through `sudo -n` when the login user is not root).
    as_user: run as this user instead (through `sudo -n -u`).
    stdin: bytes fed to the program; never shown, so secrets travel here, not in argv.
    Example: Command(("systemctl", "reload", "nginx")).render("deploy")
             -> "sudo -n -H -- systemctl reload nginx"
    """

    argv: tuple[Token, ...]
    sudo: bool = True
    as_user: str | None = None
    stdin: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not self.argv:
            raise ValueError("a command needs at least a program")
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
        return " ".join(prefix + [shlex.quote(_reveal(token)) for token in self.argv])

    def display(self, login_user: str | None = None) -> str:
        """The shell line as shown to people and logs, secrets masked."""
        prefix = [shlex.quote(part) for part in self._prefix(login_user)]
        return " ".join(prefix + [_show(token) for token in self.argv])

    def __str__(self) -> str:
        return self.display()


def cmd(*argv: Token, sudo: bool = True, as_user: str | None = None, stdin: bytes | None = None) -> Command:
    """Shorthand for `Command(argv)`.

    Example: cmd("mkdir", "-p", "/srv/app")
    """
    return Command(tuple(argv), sudo=sudo, as_user=as_user, stdin=stdin)


def script(body: str, *args: Token, sudo: bool = True, as_user: str | None = None, stdin: bytes | None = None) -> Command:
    """A fixed shell snippet that reads its values only from "$1", "$2"...

    `body` must be a constant written in vigil's code, never built from values;
    the values travel as separate, quoted arguments, so no input can change
    what the snippet does.
    Example: script('test -e "$1" || touch "$1"', "/etc/vigil")
    """
    return Command(("sh", "-c", body, "vigil", *args), sudo=sudo, as_user=as_user, stdin=stdin)


def join_display(commands: Iterable[Command], login_user: str | None = None) -> list[str]:
    """The display form of several commands, in order."""
    return [command.display(login_user) for command in commands]
