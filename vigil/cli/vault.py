"""secrets.*: encrypted per-environment secrets (the vault); values are never taken from argv nor printed."""

from __future__ import annotations

import getpass
import os
import re
import shlex
import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from vigil.cli.common import HOST_FLAGS_HELP, exit_unless_ok, exits_cleanly
from vigil.core.errors import ConfigError, ExitCode
from vigil.core.output import Reporter
from vigil.core.paths import rel
from vigil.core.runner import RunOptions
from vigil.vault import editing, importing, rotation
from vigil.vault.env_files import check_value
from vigil.vault.generate import generate_missing, generate_value, refresh_sandbox_defaults
from vigil.vault.keys import load_recipients
from vigil.vault.paths import SANDBOX, SecretsError, SecretsPaths, check_env
from vigil.vault.scan import scan_forms, scan_repository
from vigil.vault.schema import load_schema
from vigil.vault.store import audit_secrets_task, change_recipients, diff_values, init_env, load, locked, open_env, save

ENV_HELP = {"env": HOST_FLAGS_HELP["env"]}
PUSH_HELP = {name: text for name, text in HOST_FLAGS_HELP.items() if name != "var"}


def _read_value(key: str) -> str:
    """A value from a hidden prompt (twice) on a terminal, else from stdin: never from argv."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"{key}: ")
        if getpass.getpass(f"{key} again: ") != first:
            raise SecretsError(f"{key}: the two entries differ; nothing changed")
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
    reporter = Reporter()
    paths, schema = open_env(env)
    done = init_env(env, paths, schema, label or f"{getpass.getuser()}@{os.uname().nodename}")
    reporter.line(f"identity: {done['identity']} (keep it private; back it up in your password manager)")
    reporter.line(f"public key: {done['public']} ({'added to' if done['recipient_added'] else 'already in'} "
                  f"{rel(paths.recipients(env))})")
    if done["secrets_created"]:
        reporter.line(
            f"created {rel(paths.encrypted(env))} with generated values; fill in the others with secrets.edit"
        )
    audit_secrets_task("secrets.init", env)


@task(help=ENV_HELP)
@exits_cleanly
def edit(c, env="sandbox"):
    """Edit an env's secrets in $EDITOR: decrypted to a private 0600 temp file, validated, re-encrypted.

    An invalid edit is offered back to the editor (on a terminal) or discarded; it is never saved.
    Example: EDITOR=nano invoke secrets.edit --env=staging
    """
    reporter = Reporter()
    paths, schema = open_env(env)
    editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")

    def again(problem: str) -> bool:
        reporter.line(f"invalid: {problem}")
        return sys.stdin.isatty() and input("edit again? [Y/n] ").strip().lower() not in ("n", "no")

    changes = editing.edit(env, paths, schema, editor, again)
    if not any(changes.values()):
        reporter.line("no change")
        return
    reporter.line(editing.describe_changes(changes))
    audit_secrets_task("secrets.edit", env)


@task(help={**ENV_HELP, "key": "The key to set.", "generate": "A strong random value (generatable keys only)."})
@exits_cleanly
def set_(c, key, env="sandbox", generate=False):
    """Set one key: the value comes from a hidden prompt, stdin or --generate, never the command line.

    Example: printf '%s' "$DSN" | invoke secrets.set SENTRY_DSN --env=production
    """
    paths, schema = open_env(env)
    if key not in schema.keys:
        raise SecretsError(f"{key}: not in {rel(schema.path)}; add it to the schema first")
    value = generate_value(schema.keys[key]) if generate else _read_value(key)
    check_value(key, value, "the new value")
    with locked(env, paths):
        values = load(env, paths, schema)
        updated = {**values, key: value}
        if env == SANDBOX:
            refresh_sandbox_defaults(schema, updated, [key])
        save(env, updated, schema, paths)
    Reporter().line(f"{key} {'changed' if values.get(key) != value else 'unchanged'} in {rel(paths.encrypted(env))}")
    audit_secrets_task("secrets.set", env)


@task(help={**ENV_HELP, "key": "The key to remove."})
@exits_cleanly
def unset(c, key, env="sandbox"):
    """Remove one key (refused when the schema requires it in this env).

    Example: invoke secrets.unset SENTRY_DSN --env=staging
    """
    reporter = Reporter()
    paths, schema = open_env(env)
    with locked(env, paths):
        values = load(env, paths, schema)
        if key not in values:
            reporter.line(f"{key} is not set in {env}; nothing changed")
            return
        save(env, {k: v for k, v in values.items() if k != key}, schema, paths)
    reporter.line(f"removed {key} from {rel(paths.encrypted(env))}")
    audit_secrets_task("secrets.unset", env)


@task(help=ENV_HELP)
@exits_cleanly
def list_(c, env="sandbox"):
    """List an env's keys (names only): which services get each, and whether it is set.

    Example: invoke secrets.list --env=production
    """
    reporter = Reporter()
    paths, schema = open_env(env)
    values = load(env, paths, schema)
    for key, rule in schema.keys.items():
        state = (
            "set" if key in values else ("MISSING" if rule.required_in(env) else "derived" if rule.derive else "unset")
        )
        reporter.line(f"{key:<22} {state:<8} {', '.join(rule.services) or '(vigil only)'}")
    for key in sorted(set(values) - set(schema.keys)):
        reporter.line(f"{key:<22} set      (not in the schema)")


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
        raise SecretsError("secrets.diff: give --against=ENV or --hosts")
    paths, schema = open_env(env)
    values = load(env, paths, schema)
    other = load(check_env(against), paths, schema)
    Reporter().line(f"{against} -> {env}: {editing.describe_changes(diff_values(other, values))}")


@task(iterable=["file"], help={
    **ENV_HELP,
    "file": "An export of the PaaS's variables (repeatable): `vercel env pull`'s .env.local, `railway variables "
            "--kv` or `--json`, a file holding a Neon connection string.",
    "strict": "Refuse keys the schema does not know instead of asking.",
    "keep_unknown": "Keep every key the schema does not know without asking (added to secrets/schema.yml).",
    "domain": "The new domain, for FRONTEND_URL and NEXT_PUBLIC_API_URL (default: the env's, from env.new).",
    "check": "Plan only: show what would be imported and dropped; write nothing.",
})
@exits_cleanly
def import_(c, env="sandbox", file=None, strict=False, keep_unknown=False, domain=None, check=False):
    """Import the variables exported from a PaaS into an env's secrets, mapped onto the schema.

    The PaaS's own variables and database URL are dropped, the site's URLs become the new domain's,
    keys of the schema are imported; others are kept only when you say so. No value is printed.
    Example: invoke secrets.import --env=staging --file=.env.local --file=railway.env
    """
    reporter = Reporter()
    if strict and keep_unknown:
        raise SecretsError("secrets.import: --strict and --keep-unknown contradict each other; choose one")

    def keep(entry) -> bool:
        if strict:
            return False
        if keep_unknown:
            return True
        if not sys.stdin.isatty():
            raise SecretsError(f"{entry.key} (from {entry.where}) is not in the schema and there is no terminal to "
                               "ask on: pass --keep-unknown to keep such keys or --strict to refuse them; "
                               "nothing was imported")
        return input(f"{entry.key} (from {entry.where}) is not in the schema; keep it for "
                     f"{', '.join(importing.services_of(entry))}? [y/N] ").strip().lower() in ("y", "yes")

    paths, schema = open_env(env)
    result = importing.import_files(env, paths, schema, [Path(name) for name in file or []], keep, strict=strict,
                                    domain=domain, check=check)
    for line in importing.describe(result.plan):
        reporter.line(line)
    if check:
        reporter.line("check: nothing written")
        return
    reporter.line(f"{env}: {editing.describe_changes(result.changes)}")
    if result.missing:
        reporter.line("still to set: " + "; ".join(result.missing))
    audit_secrets_task("secrets.import", env)


@task(help=ENV_HELP)
@exits_cleanly
def check(c, env="sandbox"):
    """Validate an env's secrets against secrets/schema.yml; exit 3 naming every key at fault.

    Example: invoke secrets.check --env=production
    """
    paths, schema = open_env(env)
    values = load(env, paths, schema)
    problems = schema.problems(env, values)
    if problems:
        raise SecretsError(f"{env}: " + "; ".join(problems))
    Reporter().line(f"{env}: {len(values)} keys, all valid")


@task(help={**ENV_HELP, "force": "Also replace keys that already have a value (rotates them all)."})
@exits_cleanly
def generate(c, env="sandbox", force=False):
    """Give every generatable key a strong random value (only missing ones unless --force).

    Example: invoke secrets.generate --env=staging
    """
    reporter = Reporter()
    paths, schema = open_env(env)
    with locked(env, paths):
        values = load(env, paths, schema)
        changed = generate_missing(schema, values, env, regenerate=force)
        if not changed:
            reporter.line("every generatable key already has a value; nothing changed")
            return
        save(env, values, schema, paths)
    reporter.line(f"generated: {', '.join(changed)}")
    audit_secrets_task("secrets.generate", env)


@task(help=PUSH_HELP)
@exits_cleanly
def push(c, env="sandbox", limit=None, check=False, diff=False, verbose=False, json=False, forks=10, serial=0):
    """Write each service's env file on its hosts (0600, owned by the app user, atomic); reload what reads it.

    Reports changed/unchanged per file by checksum; values travel on stdin, never in a command line.
    Example: invoke secrets.push --env=staging --check --diff
    """
    options = RunOptions(check=check, diff=diff, forks=int(forks), serial=int(serial))
    exit_unless_ok(rotation.push(env, limit, options, Reporter(json_output=json, verbose=verbose, check=check)))


@task(help={**PUSH_HELP, "key": "The key to rotate.",
            "check": "Plan only: show which hosts would change; the new value is neither saved nor pushed.",
            "grace": "Seconds the app still accepts what the old value signed (keys with previous: in the schema; "
                     "default: its grace_seconds). 0 after a leak."})
@exits_cleanly
def rotate(c, key, env="sandbox", limit=None, check=False, diff=False, verbose=False, json=False, forks=10, serial=0,
           grace=None):
    """Give a key a new value, push it, and reload or restart the services that use it.

    Generatable keys get a random value; others are read like secrets.set (prompt or stdin). A key with
    previous: in the schema (JWT_SECRET) keeps its old value for a grace period: nobody is logged out.
    Example: invoke secrets.rotate JWT_SECRET --env=production   (after a leak: --grace=0)
    """
    reporter = Reporter(json_output=json, verbose=verbose, check=check)
    options = RunOptions(check=check, diff=diff, forks=int(forks), serial=int(serial))
    if grace is not None and not re.fullmatch(r"[0-9]{1,9}", str(grace)):
        raise ConfigError("--grace: expected seconds, 0 or more")
    exit_unless_ok(rotation.rotate(env, key, _read_value, limit, options, reporter, Reporter().line,
                                   None if grace is None else int(grace)))


@task(help={**ENV_HELP, "add": "A public key to add: 'age1... # who'.", "remove": "A public key to remove."})
@exits_cleanly
def recipients(c, env="sandbox", add=None, remove=None):
    """List, add or remove who can decrypt an env's secrets; the file is re-encrypted to the new list.

    Example: invoke secrets.recipients --env=production --add="age1q... # bob"
    """
    reporter = Reporter()
    paths, _ = open_env(env)
    if not add and not remove:
        for key, label in load_recipients(env, paths):
            reporter.line(f"{key}  {label}")
        return
    updated = change_recipients(env, paths, add, remove)
    reporter.line(f"{env}: {len(updated)} recipients; {rel(paths.encrypted(env))} re-encrypted")
    audit_secrets_task("secrets.recipients", env)


@task(help={"history": "Also scan every commit's additions (default: yes).",
            "env": "Only this env's values (default: every env this machine can decrypt)."})
@exits_cleanly
def scan(c, history=True, env=None):
    """Look for plaintext secrets in the working tree and git history: known values and token patterns.

    Example: invoke secrets.scan
    """
    reporter = Reporter()
    paths = SecretsPaths.default()
    schema = load_schema(paths)
    envs = [env] if env else sorted(p.name[: -len(".env.age")] for p in paths.root.glob("*.env.age"))
    values_by_env, skipped = {}, []
    for name in envs:
        try:
            values_by_env[name] = load(name, paths, schema)
        except SecretsError:
            skipped.append(name)
    findings = scan_repository(paths.root.parent, scan_forms(values_by_env, schema), history)
    for finding in findings:
        reporter.line(f"{finding.where}: {finding.what}")
    if skipped:
        reporter.line(f"not checked for known values (no identity here): {', '.join(skipped)}")
    if findings:
        raise Exit(f"{len(findings)} possible secret(s) in plain text", code=int(ExitCode.HOST_FAILED))
    reporter.line(f"no plaintext secrets found (values of {', '.join(values_by_env) or 'no env'}, token patterns"
                  f"{', history' if history else ''})")


ns = Collection("secrets")
for _task in (init, edit, unset, diff, check, generate, push, rotate, recipients, scan):
    ns.add_task(_task)
ns.add_task(set_, name="set")
ns.add_task(import_, name="import")
ns.add_task(list_, name="list")
