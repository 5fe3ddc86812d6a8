"""Local users: shell, home, groups and exactly these authorized keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from vigil.core.commands import cmd
from vigil.core.operations import Operation, OperationError, change, noop
from vigil.facts.files import FileState, file_fact
from vigil.facts.users import UserState, user_fact
from vigil.operations.files import atomic_write


@dataclass
class User(Operation):
    """A local user with this shell, home and groups; `authorized_keys` (if given) exactly these keys.

    not_groups: groups the user must not be in (a privilege an older version gave, taken back).
    Example: User("deploy", shell="/bin/bash", groups=["sudo"], authorized_keys=["ssh-ed25519 AAAA... ops"])
    """

    user: str
    shell: str = "/bin/bash"
    home: str | None = None
    system: bool = False
    groups: Sequence[str] = ()
    not_groups: Sequence[str] = ()
    authorized_keys: Sequence[str] | None = None
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        self.home = self.home or f"/home/{self.user}"
        self.name = self.name or f"Ensure user {self.user} exists."

    def _keys_path(self) -> str:
        return f"{self.home}/.ssh/authorized_keys"

    def facts(self):
        found = [user_fact(self.user)]
        if self.authorized_keys is not None:
            found += [file_fact(f"{self.home}/.ssh"), file_fact(self._keys_path())]
        return found

    def plan(self, known):
        state: UserState = known[f"user:{self.user}"]
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
            extra = [group for group in self.not_groups if group in state.groups]
            commands += [cmd("gpasswd", "--delete", self.user, group) for group in extra]
            if extra:
                notes.append(f"remove from groups {', '.join(extra)}")
        if self.authorized_keys is not None:
            wanted = ("\n".join(self.authorized_keys) + "\n").encode()
            ssh_dir: FileState = (
                known.get(f"file:{self.home}/.ssh", FileState(None)) if state.exists else FileState(None)
            )
            keys: FileState = (
                known.get(f"file:{self._keys_path()}", FileState(None)) if state.exists else FileState(None)
            )
            # Written as the user: root writing inside a directory the user controls could be led astray by a link.
            if ssh_dir.kind != "directory" or (ssh_dir.owner, ssh_dir.mode) != (self.user, "0700"):
                commands.append(cmd("install", "-d", "-m", "0700", f"{self.home}/.ssh", as_user=self.user))
            if keys.sha256 != hashlib.sha256(wanted).hexdigest() or (keys.owner, keys.mode) != (self.user, "0600"):
                commands.append(
                    atomic_write(self._keys_path(), wanted, self.user, self.user, "0600", as_user=self.user)
                )
                notes.append("set authorized keys")
        if not commands:
            return noop(f"user {self.user} already as wanted")
        return change(", ".join(notes) or f"fix {self.home}/.ssh", *commands)
