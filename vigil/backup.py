"""Backups from the control machine: every task asks the database host's own vigil-backup (roles/backup).

The program on the host makes, verifies, prunes and restores backups (the
timers run the same one), so a task is one or two round trips as the admin
user. What leaves the host leaves encrypted: `pull` streams an age-encrypted
copy, checks its sha256 against what the host sent, and only then names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable

from vigil.commands import REDACTOR, Command, script
from vigil.config import REPO_ROOT, Host, Inventory, load_inventory, rel
from vigil.errors import ConfigError, ExitCode, VigilError

HELPER = "/usr/local/sbin/vigil-backup"
BACKUP_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9._-]{1,120}$")
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
# The release the backend serves, and its migrations (roles/app layout, app_migrations).
RELEASE_MIGRATIONS = "/srv/together-pray/backend/current/dist/migrations"
PULLED = REPO_ROOT / ".vigil" / "backups"


class BackupError(VigilError):
    exit_code = ExitCode.HOST_FAILED


def check_id(backup_id: str, flag: str = "ID") -> str:
    if not BACKUP_ID.match(backup_id or ""):
        raise ConfigError(f"{flag}: {backup_id!r} is not a backup id (`invoke backup.list` shows them)")
    return backup_id


def database_host(env: str) -> tuple[Inventory, Host]:
    """The env's database host, logged in to as the admin user (the backup program runs as root)."""
    from vigil import secrets

    inventory = load_inventory(env)
    return inventory, secrets.database_host(inventory).as_admin()


def connect(inventory: Inventory, host: Host):
    from vigil.transport import SSHTransport

    return SSHTransport(host, inventory.known_hosts, inventory.env).connect()


def ask(transport, host: Host, *args: str, timeout: float = 3600):
    """vigil-backup ARGS on the host; its JSON answer, or BackupError with its one-line reason."""
    result = transport.run(Command((HELPER, *args), sudo=True), timeout=timeout)
    if not result.ok:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exited {result.status}"
        if result.status == 127 or "command not found" in result.stderr:
            reason = f"{HELPER} is not installed: run `invoke provision.server --limit={host.name}`"
        raise BackupError(f"{host.name}: {REDACTOR.redact(reason)}")
    return json.loads(result.stdout)


# --- pull and decrypt --------------------------------------------------------------------------


def pull(transport, host: Host, env: str, backup_id: str, recipients: list[str], into: Path, record: dict | None = None) -> Path:
    """Stream the backup, age-encrypted on the host to `recipients`, into `into`; the file is named
    only once its sha256 matches what the host sent. Returns the .age file (metadata beside it).
    record: the backup's metadata if the caller listed it already (else it is asked for)."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{env}-{backup_id}.dump.age"
    partial = target.with_name(target.name + ".partial")
    digest, size = hashlib.sha256(), 0
    with open(partial, "wb") as out:
        def sink(chunk: bytes) -> None:
            nonlocal size
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)

        try:
            result = transport.run(Command((HELPER, "export", backup_id, *recipients), sudo=True), timeout=7200, sink=sink)
        except BaseException:
            out.close()
            partial.unlink(missing_ok=True)
            raise
    try:
        sent = _last_json(result.stderr)
        if not result.ok or not sent:
            raise BackupError(f"{host.name}: export of {backup_id} failed: {REDACTOR.redact(result.stderr.strip()[-300:])}")
        if (sent.get("sha256"), sent.get("size")) != (digest.hexdigest(), size):
            raise BackupError(f"{host.name}: {backup_id} arrived damaged (sha256 {digest.hexdigest()[:16]}, {size} bytes; "
                              f"sent {str(sent.get('sha256'))[:16]}, {sent.get('size')} bytes); nothing was kept")
        record = record or next((entry for entry in ask(transport, host, "list") if entry.get("id") == backup_id), {})
        if not record.get("sha256"):
            raise BackupError(f"{host.name}: {backup_id} has no recorded checksum to check a decrypted copy against; nothing was kept")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sidecar = {"id": backup_id, "env": env, "from": host.name, "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "encrypted_sha256": digest.hexdigest(), "encrypted_size": size, "recipients": recipients,
               "dump_sha256": record.get("sha256"), "backup": record}
    target.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    os.replace(partial, target)
    return target


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def decrypt(path: Path, identities: list, out: Path) -> Path:
    """Decrypt a pulled backup to `out`, checked against the dump's recorded sha256; on any failure
    (a wrong key above all) nothing is written."""
    import pyrage

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    sidecar_path = path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
    try:
        data = pyrage.decrypt(path.read_bytes(), identities)
    except pyrage.DecryptError as error:
        raise BackupError(f"{path}: cannot decrypt it with the identities given ({error}); nothing was written") from None
    want = sidecar.get("dump_sha256")
    if not want:
        raise BackupError(f"{sidecar_path}: missing, or without the dump's checksum; nothing was written")
    if hashlib.sha256(data).hexdigest() != want:
        raise BackupError(f"{path}: decrypted, but not the dump the host recorded (sha256 differs); nothing was written")
    if out.exists():
        raise ConfigError(f"{out}: exists already; nothing was written")
    partial = out.with_name(out.name + ".partial")
    try:
        with open(partial, "wb", opener=lambda p, flags: os.open(p, flags, 0o600)) as handle:
            handle.write(data)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


def copy_to_host(transport, host: Host, path: Path, directory: str) -> str:
    """Put a pulled (encrypted) backup and its metadata on another inventory host, checked on arrival."""
    body = ('set -e; install -d -m 0700 -- "$1"; cat > "$2.partial"; '
            'got=$(sha256sum -- "$2.partial" | cut -d" " -f1); '
            'if [ "$got" != "$3" ]; then rm -f -- "$2.partial"; echo "arrived damaged: $got" >&2; exit 65; fi; '
            'mv -f -- "$2.partial" "$2"')
    for file in (path.with_suffix(".json"), path):  # the metadata first: the backup's arrival completes the copy
        content = file.read_bytes()
        result = transport.run(script(body, directory, f"{directory}/{file.name}", hashlib.sha256(content).hexdigest(),
                                      stdin=content), timeout=7200)
        if not result.ok:
            raise BackupError(f"{host.name}: copying {file.name} failed: {result.stderr.strip()[-300:]}")
    target = f"{directory}/{path.name}"
    return target


# --- restore -----------------------------------------------------------------------------------


def migration_drift(restored: list[str], release_files: list[str]) -> list[str]:
    """Warnings when the restored database's applied migrations (timestamps) differ from the release's files."""
    shipped = {name.split("-", 1)[0] for name in release_files if name.endswith(".js") and name.split("-", 1)[0].isdigit()}
    applied = set(restored)
    warnings = []
    if shipped - applied:
        warnings.append(f"the serving release has migrations the restored database lacks ({', '.join(sorted(shipped - applied))}): "
                        "run the backend's migrate task (deploy.backend) or roll back to a release that matches")
    if applied - shipped:
        warnings.append(f"the restored database has migrations the serving release does not know ({', '.join(sorted(applied - shipped))})")
    return warnings


def web_hosts(inventory: Inventory) -> list[Host]:
    return [host.as_admin() for host in inventory.select("web")]


def maintenance(env: str, hosts: list[Host], on: bool) -> list[str]:
    """Maintenance mode on or off on `hosts`, as incident.maintenance does it (planned, applied, audited);
    returns the hosts where it failed."""
    from vigil.incident import set_maintenance

    if not hosts:
        return []
    try:
        _, failed = set_maintenance(env, on, ",".join(host.name for host in hosts))
    except VigilError:
        return [host.name for host in hosts]
    return failed


HEALTH = r'''
port=$1; end=$(( $(date +%s) + 60 ))
while [ "$(date +%s)" -lt "$end" ]; do
    if body=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/api/health" 2>&1) && printf '%s' "$body" | grep -q '"database":"up"'; then
        echo "$body"; exit 0
    fi
    sleep 1
done
echo "not healthy within 60s: $body" >&2; exit 1
'''


def health(inventory: Inventory, host: Host, port: int) -> tuple[bool, str]:
    """The backend's /health through nginx's loopback listener on `host` (its pool reconnects after a restore)."""
    with connect(inventory, host) as transport:
        result = transport.run(script(HEALTH, str(port), sudo=False), timeout=120)
    return result.ok, (result.stdout or result.stderr).strip()[-300:]


def release_migrations(inventory: Inventory, host: Host) -> list[str]:
    with connect(inventory, host) as transport:
        result = transport.run(Command(("ls", "-1", "--", RELEASE_MIGRATIONS), sudo=True))
    if not result.ok:
        raise BackupError(f"{host.name}: {result.stderr.strip()[-200:] or 'no release is deployed'}")
    return result.stdout.split()


def confirm(env: str, yes: bool, prompt: Callable[[str], str] = input) -> None:
    """A restore replaces the env's database: --yes, or the env's name typed at a terminal."""
    if yes:
        return
    import sys

    if not sys.stdin.isatty():
        raise ConfigError(f"restoring replaces the {env} database: pass --yes to confirm (no terminal to ask on)")
    if prompt(f"Restoring replaces the {env} database (a safety backup is taken first). Type {env!r} to go on: ").strip() != env:
        raise ConfigError("not confirmed; nothing was changed")


def pulled_dir(env: str, to_dir: str | None) -> Path:
    return Path(to_dir) if to_dir else PULLED / env


def describe(path: Path) -> str:
    return rel(path) if path.is_relative_to(REPO_ROOT) else str(path)
