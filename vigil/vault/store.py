"""The encrypted store: secrets/<env>.env.age decrypted, validated and encrypted again, atomically.

Every value that is decrypted is registered with the redactor, in the forms it is likely to appear in,
before anything else can print it.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import pyrage
from pyrage import x25519

from vigil.core.audit_log import audit_locally
from vigil.core.errors import VigilError
from vigil.core.inventory import SecretLookup
from vigil.core.local_files import lock_within, write_private
from vigil.core.paths import rel
from vigil.vault.env_files import FORBIDDEN_CHARACTERS, parse_dotenv, render_dotenv
from vigil.vault.generate import generate_missing
from vigil.vault.keys import create_identity, load_identities, load_recipients, parse_recipients
from vigil.vault.masking import register
from vigil.vault.paths import SANDBOX, SecretsError, SecretsPaths, check_env
from vigil.vault.schema import Schema, load_schema


def encrypt(text: str, recipients: list[str]) -> bytes:
    return pyrage.encrypt(text.encode(), [x25519.Recipient.from_str(key) for key in recipients])


def decrypt(data: bytes, identities: list[x25519.Identity], where: str) -> str:
    try:
        return pyrage.decrypt(data, identities).decode()
    except pyrage.DecryptError as error:
        if "No matching keys" in str(error):
            raise SecretsError(
                f"{where}: none of your age identities can open it (not a recipient, or the wrong key)"
            ) from None
        raise SecretsError(f"{where}: cannot decrypt: the file is corrupt, truncated or was tampered with") from None
    except UnicodeDecodeError:
        raise SecretsError(f"{where}: decrypted content is not UTF-8 text") from None


def load(env: str, paths: SecretsPaths | None = None, schema: "Schema | None" = None) -> dict[str, str]:
    """Decrypt and parse `secrets/<env>.env.age`; every secret value is registered with the redactor first."""
    paths = paths or SecretsPaths.default()
    check_env(env)
    schema = schema or load_schema(paths)
    if env == SANDBOX:
        ensure_sandbox(paths, schema)
    path = paths.encrypted(env)
    if not path.exists():
        hint = "" if env != SANDBOX else " (sandbox secrets are generated on first use)"
        raise SecretsError(f"{rel(path)}: no secrets for env {env!r}; run `invoke secrets.init --env={env}`{hint}")
    text = decrypt(path.read_bytes(), load_identities(env, paths), rel(path))
    values = parse_dotenv(text, rel(path))  # its errors name keys, never values
    register(values, schema)
    return values


def lookup(env: str, paths: SecretsPaths | None = None) -> SecretLookup:
    """The env's secrets for roles to read (HostVars.secret): decrypted on first use, then kept for the
    lookup's life (one run); a new lookup reads the file again (after a rotation).

    Example: run_playbook(..., secrets=lookup("staging"))
    """
    return functools.cache(lambda: load(env, paths))


def load_for_masking(env: str) -> tuple[dict[str, str], str]:
    """The env's values, each registered with the redactor so that a log or an error quoting one is
    masked, and "" or, where this machine cannot decrypt them (a CI deploy key without the identity),
    ({}, why): URL passwords and values named as secrets are still masked by their shape.
    """
    try:
        return load(env), ""
    except VigilError as error:
        return {}, error.message


def save(env: str, values: dict[str, str], schema: "Schema", paths: SecretsPaths | None = None,
         validate: bool = True) -> Path:
    """Validate `values` against the schema, then encrypt them to the env's recipients, atomically.

    Nothing is written when anything is wrong: the existing file stays as it was.
    validate: False only for a new env's first file, whose other values a person still has to choose.
    """
    paths = paths or SecretsPaths.default()
    register(values, schema)
    problems = schema.problems(env, values) if validate else []
    if problems:
        raise SecretsError(f"{env}: " + "; ".join(problems))
    recipients = [key for key, _ in load_recipients(env, paths)]
    text = render_dotenv(values, list(schema.keys))
    data = encrypt(text, recipients)
    write_private(paths.encrypted(env), data, 0o644)
    return paths.encrypted(env)


# How long a change waits for another vigil process to finish changing the same env's secrets. The short
# ones (generate, set, rotate) take seconds, so a second one waits its turn, as apt waits for its lock; a
# secrets.edit held open in an editor outlasts the wait, and the change is refused rather than queued.
LOCK_WAIT_SECONDS = 60.0


@contextlib.contextmanager
def locked(env: str, paths: SecretsPaths, wait: float = LOCK_WAIT_SECONDS):
    """Hold `env`'s secrets for one load -> save, so two vigil processes never overwrite each other's change.
    Waits up to `wait` seconds for a holder to finish, then refuses."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.root / f".{env}.lock", "a") as handle:
        if not lock_within(handle, wait):
            raise SecretsError(f"the secrets of {env} are being changed by another vigil process "
                               f"(secrets.edit?) and were not free within {wait:g} s; try again when it is done")
        yield


def init_env(env: str, paths: SecretsPaths, schema: Schema, label: str) -> dict[str, Any]:
    """Create `env`'s key pair (kept), recipients file and, if absent, its secrets file with generated values."""
    check_env(env)
    if FORBIDDEN_CHARACTERS.search(label) or "#" in label:
        raise SecretsError("--label: one line of text without '#' or control characters")
    identity, identity_path = create_identity(env, paths)
    public = str(identity.to_public())
    recipients_path = paths.recipients(env)
    existing = parse_recipients(recipients_path.read_text(), rel(recipients_path)) if recipients_path.exists() else []
    added = False
    if public not in [key for key, _ in existing]:
        recipients_path.parent.mkdir(parents=True, exist_ok=True)
        with open(recipients_path, "a") as handle:
            handle.write(f"{public}  # {label}\n")
        added = True
    created = False
    if not paths.encrypted(env).exists():
        values: dict[str, str] = {}
        generate_missing(schema, values, env)
        # The sandbox's generated values are complete; other envs need values a person must choose (URLs...).
        save(env, values, schema, paths, validate=env == SANDBOX)
        created = True
    return {"identity": identity_path, "public": public, "recipient_added": added, "secrets_created": created}


def ensure_sandbox(paths: SecretsPaths, schema: Schema) -> None:
    """The sandbox needs no setup: create its key, recipients and generated secrets on first use."""
    if not paths.encrypted(SANDBOX).exists():
        init_env(SANDBOX, paths, schema, "sandbox (generated on this machine)")


def diff_values(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """Key names added, removed and changed between two sets of values; values never appear."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(key for key in set(before) & set(after) if before[key] != after[key]),
    }


def reencrypt(env: str, paths: SecretsPaths, recipients: list[str]) -> None:
    """Encrypt the env's current content to `recipients` (after adding or removing one)."""
    text = decrypt(paths.encrypted(env).read_bytes(), load_identities(env, paths), rel(paths.encrypted(env)))
    write_private(paths.encrypted(env), encrypt(text, recipients), 0o644)


def open_env(env: str) -> tuple[SecretsPaths, Schema]:
    """The vault's paths and schema for `env`; the sandbox's key and generated secrets exist from here on."""
    check_env(env)
    paths = SecretsPaths.default()
    schema = load_schema(paths)
    if env == SANDBOX:
        ensure_sandbox(paths, schema)
    return paths, schema


def audit_secrets_task(task_name: str, env: str, result: str = "ok") -> None:
    """One line in this machine's audit log for a secrets task (no host is involved)."""
    audit_locally(task_name, env, [], result)


def change_recipients(env: str, paths: SecretsPaths, add: str | None, remove: str | None) -> list[tuple[str, str]]:
    """Add (`age1... # who`) or remove (`age1...`) a recipient of `env` and encrypt its file to the new
    list; the old list is put back when the encryption fails. Returns the new recipients."""
    updated = list(load_recipients(env, paths))
    if add:
        parsed = parse_recipients(add, "--add")
        if len(parsed) != 1:
            raise SecretsError("--add: exactly one public key, 'age1... # who'")
        (new,) = parsed
        if new[0] not in [key for key, _ in updated]:
            updated.append(new)
    if remove:
        if remove not in [key for key, _ in updated]:
            raise SecretsError(f"--remove: {remove[:12]}... is not a recipient of {env}")
        updated = [(key, label) for key, label in updated if key != remove]
    if not updated:
        raise SecretsError(f"--remove: refusing to remove the last recipient of {env}; nobody could decrypt it")
    with locked(env, paths):
        # The list first: were it written after, a failure between the two would
        # let the next save encrypt to a recipient just removed.
        before = paths.recipients(env).read_bytes()
        write_private(paths.recipients(env), "".join(f"{key}  # {label}\n" for key, label in updated).encode(), 0o644)
        try:
            reencrypt(env, paths, [key for key, _ in updated])
        except BaseException:
            write_private(paths.recipients(env), before, 0o644)
            raise
    return updated
