"""secrets.*: encrypted per-environment secrets; values are never taken from argv nor printed."""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from vigil import secrets as S
from vigil.config import forget_secrets, load_inventory, rel
from vigil.errors import ExitCode
from vigil.play import Target, run_plans, run_playbook
from vigil.report import Environment, Reporter, append_local_audit, audit_record
from vigil.runner import RunOptions
from vigil.tasks.common import HOST_FLAGS_HELP, exits_cleanly

ENV_HELP = {"env": HOST_FLAGS_HELP["env"]}
PUSH_HELP = {name: text for name, text in HOST_FLAGS_HELP.items() if name != "var"}


def _say(text: str) -> None:
    print(S.REDACTOR.redact(text))


def _audit(task_name: str, env: str, result: str = "ok") -> None:
    environment = Environment()
    append_local_audit(audit_record(task_name, env, [], result, environment.clock()), environment)


def _context(env: str) -> tuple[S.SecretsPaths, S.Schema]:
    S.check_env(env)
    paths = S.SecretsPaths.default()
    schema = S.load_schema(paths)
    if env == S.SANDBOX:
        S.ensure_sandbox(paths, schema)
    return paths, schema


def _read_value(key: str) -> str:
    """A value from a hidden prompt (twice) on a terminal, else from stdin: never from argv."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"{key}: ")
        if getpass.getpass(f"{key} again: ") != first:
            raise S.SecretsError(f"{key}: the two entries differ; nothing changed")
        return first
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value


@task(help={**ENV_HELP, "label": "Who the key belongs to, written beside it in the recipients file."})
@exits_cleanly
def init(c, env="sandbox", label=None):
    """Create this machine's age key pair for an env, add it to the recipients, and create the secrets file.

    The private key goes to ~/.config/vigil/age/ENV.key (the sandbox's to .vigil/age/), mode 0600;
    share the public key with whoever must add you to another env.
    Example: invoke secrets.init --env=staging --label="alice laptop"
    """
    paths, schema = _context(env)
    done = S.init_env(env, paths, schema, label or f"{getpass.getuser()}@{os.uname().nodename}")
    _say(f"identity: {done['identity']} (keep it private; back it up in your password manager)")
    _say(f"public key: {done['public']} ({'added to' if done['recipient_added'] else 'already in'} {rel(paths.recipients(env))})")
    if done["secrets_created"]:
        _say(f"created {rel(paths.encrypted(env))} with generated values; fill in the others with secrets.edit")
    _audit("secrets.init", env)


@task(help=ENV_HELP)
@exits_cleanly
def edit(c, env="sandbox"):
    """Edit an env's secrets in $EDITOR: decrypted to a private 0600 temp file, validated, re-encrypted.

    An invalid edit is offered back to the editor (on a terminal) or discarded; it is never saved.
    Example: EDITOR=nano invoke secrets.edit --env=staging
    """
    paths, schema = _context(env)
    with S.locked(env, paths), _private_draft_directory() as directory:
        values = S.load(env, paths, schema)
        editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
        draft = directory / f"{env}.env"
        S.write_private(draft, S.render_dotenv(values, list(schema.keys)).encode())
        while True:
            if subprocess.run([*editor, str(draft)], env=S.child_environment()).returncode != 0:
                raise S.SecretsError(f"the editor {editor[0]} failed; nothing changed")
            try:
                edited = _validated_draft(draft, env, schema)
                break
            except S.SecretsError as error:
                _say(f"invalid: {error.message}")
                if not sys.stdin.isatty() or input("edit again? [Y/n] ").strip().lower() in ("n", "no"):
                    raise S.SecretsError(f"{env}: edit discarded; {rel(paths.encrypted(env))} is unchanged") from None
        changes = S.diff_values(values, edited)
        if not any(changes.values()):
            _say("no change")
            return
        S.save(env, edited, schema, paths)
    _say(_describe_changes(changes))
    _audit("secrets.edit", env)


def _validated_draft(draft: Path, env: str, schema: S.Schema) -> dict[str, str]:
    try:
        text = draft.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise S.SecretsError("your edit is not UTF-8 text") from None
    edited = S.parse_dotenv(text, "your edit")
    S.register(edited, schema)
    problems = schema.problems(env, edited)
    if problems:
        raise S.SecretsError("; ".join(problems))
    return edited


@contextlib.contextmanager
def _private_draft_directory():
    """A 0700 directory in memory (/dev/shm) for the plaintext draft, removed with everything an editor
    put in it (backups, swap files) however the edit ends, a hang-up or a kill included."""
    directory = Path(tempfile.mkdtemp(prefix="vigil-secrets-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {number: signal.signal(number, interrupted) for number in (signal.SIGHUP, signal.SIGTERM)}
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for number, handler in previous.items():
            signal.signal(number, handler)


def _describe_changes(changes: dict[str, list[str]]) -> str:
    parts = [f"{label}: {', '.join(keys)}" for label, keys in changes.items() if keys]
    return "; ".join(parts) if parts else "no change"


@task(help={**ENV_HELP, "key": "The key to set.", "generate": "A strong random value (generatable keys only)."})
@exits_cleanly
def set_(c, key, env="sandbox", generate=False):
    """Set one key: the value comes from a hidden prompt, stdin or --generate, never the command line.

    Example: printf '%s' "$DSN" | invoke secrets.set SENTRY_DSN --env=production
    """
    paths, schema = _context(env)
    if key not in schema.keys:
        raise S.SecretsError(f"{key}: not in {rel(schema.path)}; add it to the schema first")
    value = S.generate_value(schema.keys[key]) if generate else _read_value(key)
    S.check_value(key, value, "the new value")
    with S.locked(env, paths):
        values = S.load(env, paths, schema)
        updated = {**values, key: value}
        if env == S.SANDBOX:
            S.refresh_sandbox_defaults(schema, updated, [key])
        S.save(env, updated, schema, paths)
    _say(f"{key} {'changed' if values.get(key) != value else 'unchanged'} in {rel(paths.encrypted(env))}")
    _audit("secrets.set", env)


@task(help={**ENV_HELP, "key": "The key to remove."})
@exits_cleanly
def unset(c, key, env="sandbox"):
    """Remove one key (refused when the schema requires it in this env).

    Example: invoke secrets.unset SENTRY_DSN --env=staging
    """
    paths, schema = _context(env)
    with S.locked(env, paths):
        values = S.load(env, paths, schema)
        if key not in values:
            _say(f"{key} is not set in {env}; nothing changed")
            return
        S.save(env, {k: v for k, v in values.items() if k != key}, schema, paths)
    _say(f"removed {key} from {rel(paths.encrypted(env))}")
    _audit("secrets.unset", env)


@task(help=ENV_HELP)
@exits_cleanly
def list_(c, env="sandbox"):
    """List an env's keys (names only): which services get each, and whether it is set.

    Example: invoke secrets.list --env=production
    """
    paths, schema = _context(env)
    values = S.load(env, paths, schema)
    for key, rule in schema.keys.items():
        state = "set" if key in values else ("MISSING" if rule.required_in(env) else "derived" if rule.derive else "unset")
        _say(f"{key:<22} {state:<8} {', '.join(rule.services) or '(vigil only)'}")
    for key in sorted(set(values) - set(schema.keys)):
        _say(f"{key:<22} set      (not in the schema)")


@task(help={**ENV_HELP, "against": "Another env to compare with.",
            "hosts": "Compare with the env files on the hosts instead (like push --check --diff).",
            "limit": HOST_FLAGS_HELP["limit"]})
@exits_cleanly
def diff(c, env="sandbox", against=None, hosts=False, limit=None):
    """Which keys differ: between two envs, or between an env and its hosts. Values are never shown.

    Example: invoke secrets.diff --env=staging --against=production
    """
    if hosts:
        return push(c, env=env, limit=limit, check=True, diff=True)
    if not against:
        raise S.SecretsError("secrets.diff: give --against=ENV or --hosts")
    paths, schema = _context(env)
    values = S.load(env, paths, schema)
    other = S.load(S.check_env(against), paths, schema)
    _say(f"{against} -> {env}: {_describe_changes(S.diff_values(other, values))}")


@task(help=ENV_HELP)
@exits_cleanly
def check(c, env="sandbox"):
    """Validate an env's secrets against secrets/schema.yml; exit 3 naming every key at fault.

    Example: invoke secrets.check --env=production
    """
    paths, schema = _context(env)
    values = S.load(env, paths, schema)
    problems = schema.problems(env, values)
    if problems:
        raise S.SecretsError(f"{env}: " + "; ".join(problems))
    _say(f"{env}: {len(values)} keys, all valid")


@task(help={**ENV_HELP, "force": "Also replace keys that already have a value (rotates them all)."})
@exits_cleanly
def generate(c, env="sandbox", force=False):
    """Give every generatable key a strong random value (only missing ones unless --force).

    Example: invoke secrets.generate --env=staging
    """
    paths, schema = _context(env)
    with S.locked(env, paths):
        values = S.load(env, paths, schema)
        changed = S.generate_missing(schema, values, env, regenerate=force)
        if not changed:
            _say("every generatable key already has a value; nothing changed")
            return
        S.save(env, values, schema, paths)
    _say(f"generated: {', '.join(changed)}")
    _audit("secrets.generate", env)


def _push(env: str, limit, check: bool, diff: bool, verbose: bool, json: bool, forks, serial, task_name: str,
          only_services: list[str] | None = None, values: dict[str, str] | None = None) -> ExitCode:
    """Push `values` (default: the env's saved secrets) to the hosts of every service, or only `only_services`."""
    paths, schema = _context(env)
    values = values if values is not None else S.load(env, paths, schema)
    problems = schema.problems(env, values)
    if problems:
        raise S.SecretsError(f"{env}: refusing to push invalid secrets: " + "; ".join(problems))
    inventory = load_inventory(env)
    plans = S.push_plans(inventory, schema, values, env, limit, only_services,
                         database_certificate=lambda: S.fetch_database_certificate(inventory))
    reporter = Reporter(json_output=json, verbose=verbose, check=check)
    code, _ = run_plans(task_name, inventory, plans, RunOptions(check=check, diff=diff, forks=int(forks), serial=int(serial)), reporter)
    return code


@task(help=PUSH_HELP)
@exits_cleanly
def push(c, env="sandbox", limit=None, check=False, diff=False, verbose=False, json=False, forks=10, serial=0):
    """Write each service's env file on its hosts (0600, owned by the app user, atomic); reload what reads it.

    Reports changed/unchanged per file by checksum; values travel on stdin, never in a command line.
    Example: invoke secrets.push --env=staging --check --diff
    """
    code = _push(env, limit, check, diff, verbose, json, forks, serial, "secrets.push")
    if code != ExitCode.OK:
        raise Exit(code=int(code))


@task(help={**PUSH_HELP, "key": "The key to rotate.",
            "check": "Plan only: show which hosts would change; the new value is neither saved nor pushed."})
@exits_cleanly
def rotate(c, key, env="sandbox", limit=None, check=False, diff=False, verbose=False, json=False, forks=10, serial=0):
    """Give a key a new value, push it, and reload or restart the services that use it.

    Generatable keys get a random value; others are read like secrets.set (prompt or stdin).
    Example: invoke secrets.rotate JWT_REFRESH_SECRET --env=production
    """
    paths, schema = _context(env)
    if key not in schema.keys:
        raise S.SecretsError(f"{key}: not in {rel(schema.path)}")
    rule = schema.keys[key]
    value = S.generate_value(rule) if rule.generate else _read_value(key)
    with S.locked(env, paths):
        values = S.load(env, paths, schema)
        rotated = {**values, key: value}
        refreshed = S.refresh_sandbox_defaults(schema, rotated, [key]) if env == S.SANDBOX else []
        if not check:
            S.save(env, rotated, schema, paths)
            _audit("secrets.rotate", env)
    if rule.applied_by:
        _apply_role_first(env, key, rule.applied_by, check, diff, verbose, json, forks)
    services = sorted({service for name in [key, *refreshed] for service in schema.services_using(name, rotated)})
    if not services:
        _say(f"{'would rotate' if check else 'rotated'} {key}; no service reads it directly (see its description in the schema)")
        return
    _say(f"{'would rotate' if check else 'rotated'} {key}; pushing to {', '.join(services)}")
    code = _push(env, limit, check, diff, verbose, json, forks, serial, "secrets.rotate", services, rotated)
    if code != ExitCode.OK:
        if not check:
            _say(f"{key} is saved but not everywhere yet: run `invoke secrets.push --env={env}` once the hosts are back")
        raise Exit(code=int(code))


def _apply_role_first(env: str, key: str, role: str, check: bool, diff: bool, verbose: bool, json: bool, forks) -> None:
    """Put a rotated value in place where `role` uses it (the database role's password) before services get it.

    Pushed first, the backend would restart with a password the database does not have yet.
    """
    hosts = [host.name for host in S.hosts_running_role(load_inventory(env), role)]
    if not hosts:
        return
    _say(f"{'would apply' if check else 'applying'} {key} with roles/{role} on {', '.join(hosts)} first")
    forget_secrets()  # the role must read the value just saved
    code, _ = run_playbook("secrets.rotate", "onboard", Target(env, ",".join(hosts)),
                           RunOptions(check=check, diff=diff, forks=int(forks)), Reporter(json_output=json, verbose=verbose, check=check),
                           only_roles=[role])
    if code != ExitCode.OK:
        if not check:
            _say(f"{key} is saved, but roles/{role} did not apply it on every host, so no service got it: fix that, then run "
                 f"`invoke provision.server --env={env} --limit={','.join(hosts)}` and `invoke secrets.push --env={env}`")
        raise Exit(code=int(code))


@task(help={**ENV_HELP, "add": "A public key to add: 'age1... # who'.", "remove": "A public key to remove."})
@exits_cleanly
def recipients(c, env="sandbox", add=None, remove=None):
    """List, add or remove who can decrypt an env's secrets; the file is re-encrypted to the new list.

    Example: invoke secrets.recipients --env=production --add="age1q... # bob"
    """
    paths, schema = _context(env)
    current = S.load_recipients(env, paths)
    if not add and not remove:
        for key, label in current:
            _say(f"{key}  {label}")
        return
    updated = list(current)
    if add:
        parsed = S.parse_recipients(add, "--add")
        if len(parsed) != 1:
            raise S.SecretsError("--add: exactly one public key, 'age1... # who'")
        (new,) = parsed
        if new[0] not in [key for key, _ in updated]:
            updated.append(new)
    if remove:
        if remove not in [key for key, _ in updated]:
            raise S.SecretsError(f"--remove: {remove[:12]}... is not a recipient of {env}")
        updated = [(key, label) for key, label in updated if key != remove]
    if not updated:
        raise S.SecretsError(f"--remove: refusing to remove the last recipient of {env}; nobody could decrypt it")
    with S.locked(env, paths):
        # The list first: were it written after, a failure between the two would
        # let the next save encrypt to a recipient just removed.
        before = paths.recipients(env).read_bytes()
        S.write_private(paths.recipients(env), "".join(f"{key}  # {label}\n" for key, label in updated).encode(), 0o644)
        try:
            S.reencrypt(env, paths, [key for key, _ in updated])
        except BaseException:
            S.write_private(paths.recipients(env), before, 0o644)
            raise
    _say(f"{env}: {len(updated)} recipients; {rel(paths.encrypted(env))} re-encrypted")
    _audit("secrets.recipients", env)


@task(help={"history": "Also scan every commit's additions (default: yes).",
            "env": "Only this env's values (default: every env this machine can decrypt)."})
@exits_cleanly
def scan(c, history=True, env=None):
    """Look for plaintext secrets in the working tree and git history: known values and token patterns.

    Example: invoke secrets.scan
    """
    paths = S.SecretsPaths.default()
    schema = S.load_schema(paths)
    envs = [env] if env else sorted(p.name[: -len(".env.age")] for p in paths.root.glob("*.env.age"))
    values_by_env, skipped = {}, []
    for name in envs:
        try:
            values_by_env[name] = S.load(name, paths, schema)
        except S.SecretsError:
            skipped.append(name)
    findings = S.scan_repository(paths.root.parent, S.scan_forms(values_by_env, schema), history)
    for finding in findings:
        _say(f"{finding.where}: {finding.what}")
    if skipped:
        _say(f"not checked for known values (no identity here): {', '.join(skipped)}")
    if findings:
        raise Exit(f"{len(findings)} possible secret(s) in plain text", code=int(ExitCode.HOST_FAILED))
    _say(f"no plaintext secrets found (values of {', '.join(values_by_env) or 'no env'}, token patterns"
         f"{', history' if history else ''})")


ns = Collection("secrets")
for _task in (init, edit, unset, diff, check, generate, push, rotate, recipients, scan):
    ns.add_task(_task)
ns.add_task(set_, name="set")
ns.add_task(list_, name="list")
