"""Keys: this machine's age identities for an env, and the env's recipients (who can decrypt it)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from pyrage import x25519

from vigil.core.local_files import write_private
from vigil.core.paths import rel
from vigil.vault.env_files import FORBIDDEN_CHARACTERS
from vigil.vault.paths import SecretsError, SecretsPaths

RECIPIENT_PATTERN = re.compile(r"^age1[0-9a-z]{58}$")
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"


def parse_identities(text: str, where: str) -> list[x25519.Identity]:
    """Every `AGE-SECRET-KEY-1...` line of an identity file (comments and blanks skipped)."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(x25519.Identity.from_str(line))
        except Exception:
            raise SecretsError(f"{where}: line {number} is not an age identity (AGE-SECRET-KEY-1...)") from None
    if not found:
        raise SecretsError(f"{where}: holds no age identity")
    return found


def load_identities(env: str, paths: SecretsPaths) -> list[x25519.Identity]:
    """This machine's identities for `env`: $VIGIL_AGE_IDENTITY (CI), else the identity file."""
    if os.environ.get("VIGIL_AGE_IDENTITY"):
        return parse_identities(os.environ["VIGIL_AGE_IDENTITY"], "$VIGIL_AGE_IDENTITY")
    path = paths.identity_file(env)
    if not path.exists():
        raise SecretsError(
            f"no age identity for env {env!r}: set VIGIL_AGE_IDENTITY, or create {path} "
            f"with `invoke secrets.init --env={env}` (or copy it from a teammate's password manager)"
        )
    check_private(path)
    return parse_identities(path.read_text(), str(path))


def check_private(path: Path) -> None:
    """Refuse an identity file others may read, as ssh refuses such a private key: whoever can read it
    can decrypt every secret of the env."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise SecretsError(f"{path}: an age identity must be a regular file")
    if mode & 0o077:
        raise SecretsError(
            f"{path}: permissions {stat.S_IMODE(mode):04o} are too open: an age identity must be readable by its "
            f"owner only (group and others can read every secret of the env); run `chmod 600 {path}`"
        )


def parse_recipients(text: str, where: str) -> list[tuple[str, str]]:
    """(public key, label) per line `age1... # who` of a recipients file."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        key, _, label = line.partition("#")
        key = key.strip()
        if not key:
            continue
        try:
            if not RECIPIENT_PATTERN.match(key):
                raise ValueError(key)
            x25519.Recipient.from_str(key)
        except Exception:
            raise SecretsError(
                f"{where}:{number}: not an age recipient (age1..., 62 characters, valid checksum)"
            ) from None
        if FORBIDDEN_CHARACTERS.search(label):
            raise SecretsError(f"{where}:{number}: the label contains a control character")
        found.append((key, label.strip()))
    return found


def load_recipients(env: str, paths: SecretsPaths) -> list[tuple[str, str]]:
    path = paths.recipients(env)
    if not path.exists():
        raise SecretsError(f"{rel(path)}: no recipients for env {env!r}; run `invoke secrets.init --env={env}`")
    found = parse_recipients(path.read_text(), rel(path))
    if not found:
        raise SecretsError(f"{rel(path)}: lists no recipient; nobody could decrypt {env}'s secrets")
    return found


def create_identity(env: str, paths: SecretsPaths) -> tuple[x25519.Identity, Path]:
    """A new key pair for `env`, its private half saved 0600 in the identity file (never overwritten)."""
    path = paths.identity_file(env)
    if path.exists():
        check_private(path)
        return parse_identities(path.read_text(), str(path))[0], path
    identity = x25519.Identity.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, f"# vigil age identity for env {env}\n{identity}\n".encode())
    return identity, path
