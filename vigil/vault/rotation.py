"""Pushing and rotating: the env's values on every host that runs a service, and a key's new value put
in place in the right order (the role that applies it first, then the services that read it)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

from vigil.core.errors import ExitCode
from vigil.core.inventory import load_inventory
from vigil.core.output import Reporter
from vigil.core.paths import rel
from vigil.core.playbook import Target, run_plans, run_playbook
from vigil.core.runner import RunOptions
from vigil.vault.derive import fetch_database_certificate
from vigil.vault.generate import generate_value, refresh_sandbox_defaults
from vigil.vault.paths import SANDBOX, SecretsError
from vigil.vault.push import push_plans
from vigil.vault.schema import KeyRule
from vigil.vault.store import audit_secrets_task, load, locked, lookup, open_env, save

Say = Callable[[str], None]


def push(env: str, limit: str | None, options: RunOptions, reporter: Reporter, task_name: str = "secrets.push",
         only_services: list[str] | None = None, values: dict[str, str] | None = None) -> ExitCode:
    """Push `values` (default: the env's saved secrets) to the hosts of every service, or only `only_services`.

    Example: push("staging", None, RunOptions(check=True, diff=True), Reporter(check=True))
    """
    paths, schema = open_env(env)
    values = values if values is not None else load(env, paths, schema)
    problems = schema.problems(env, values)
    if problems:
        raise SecretsError(f"{env}: refusing to push invalid secrets: " + "; ".join(problems))
    inventory = load_inventory(env)
    plans = push_plans(
        inventory, schema, values, env, limit, only_services, database_certificate=fetch_database_certificate
    )
    code, _ = run_plans(task_name, inventory, plans, options, reporter)
    return code


def kept_previous(rule: KeyRule, values: dict[str, str], grace: int | None, now: datetime) -> dict[str, str]:
    """What a rotation of `rule`'s key keeps of the value it replaces: the value, and until when the app still
    accepts what it signed (`grace` seconds from `now`; None: the schema's grace_seconds). Nothing for a key
    without `previous:` in the schema, or one that had no value."""
    if rule.previous is None:
        if grace is not None:
            raise SecretsError(f"--grace: {rule.key} keeps no previous value (no previous: in the schema)")
        return {}
    if rule.key not in values:
        return {}
    seconds = rule.previous.grace_seconds if grace is None else grace
    if seconds < 0:
        raise SecretsError("--grace: expected seconds, 0 or more")
    until = (now + timedelta(seconds=seconds)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {rule.previous.key: values[rule.key], rule.previous.until: until}


def rotate(env: str, key: str, read_value: Callable[[str], str], limit: str | None, options: RunOptions,
           reporter: Reporter, say: Say, grace: int | None = None) -> ExitCode:
    """Give `key` a new value (random when generatable, else `read_value(key)`), save it, apply it with the
    role that puts it in place (DB_PASSWORD: the database role's password) and push it to the services
    that read it. A key with `previous:` in the schema keeps the value it replaces for `grace` seconds (the
    schema's by default), so what it signed stays valid that long. With options.check, nothing is saved or
    changed: the plan is printed.
    """
    paths, schema = open_env(env)
    if key not in schema.keys:
        raise SecretsError(f"{key}: not in {rel(schema.path)}")
    rule = schema.keys[key]
    value = generate_value(rule) if rule.generate else read_value(key)
    with locked(env, paths):
        values = load(env, paths, schema)
        kept = kept_previous(rule, values, grace, datetime.now(timezone.utc))
        rotated = {**values, key: value, **kept}
        refreshed = refresh_sandbox_defaults(schema, rotated, [key]) if env == SANDBOX else []
        if not options.check:
            save(env, rotated, schema, paths)
            audit_secrets_task("secrets.rotate", env)
    verb = "would rotate" if options.check else "rotated"
    if rule.applied_by:
        code = apply_role_first(env, key, rule.applied_by, options, reporter, say)
        if code != ExitCode.OK:
            return code
    if kept:
        until = kept[rule.previous.until]
        say(f"{'would keep' if options.check else 'kept'} the old value as {rule.previous.key}: what it signed is "
            f"accepted until {until}")
    services = sorted({service for name in [key, *refreshed, *kept]
                       for service in schema.services_using(name, rotated)})
    if not services:
        say(f"{verb} {key}; no service reads it directly (see its description in the schema)")
        return ExitCode.OK
    say(f"{verb} {key}; pushing to {', '.join(services)}")
    code = push(env, limit, options, reporter, "secrets.rotate", services, rotated)
    if code != ExitCode.OK and not options.check:
        say(f"{key} is saved but not everywhere yet: run `invoke secrets.push --env={env}` once the hosts are back")
    return code


def apply_role_first(env: str, key: str, role: str, options: RunOptions, reporter: Reporter, say: Say) -> ExitCode:
    """Put a rotated value in place where `role` uses it (the database role's password) before services get it.

    Pushed first, the backend would restart with a password the database does not have yet.
    """
    inventory = load_inventory(env)
    _, schema = open_env(env)
    hosts = [host.name for host in schema.topology(inventory).running(role)]
    if not hosts:
        return ExitCode.OK
    say(f"{'would apply' if options.check else 'applying'} {key} with roles/{role} on {', '.join(hosts)} first")
    # A fresh lookup: the role must read the value just saved.
    code, _ = run_playbook(
        "secrets.rotate",
        "onboard",
        Target(env, ",".join(hosts)),
        RunOptions(check=options.check, diff=options.diff, forks=options.forks),
        reporter,
        lookup(env),
        only_roles=[role],
    )
    if code != ExitCode.OK and not options.check:
        say(
            f"{key} is saved, but roles/{role} did not apply it on every host, so no service got it: "
            f"fix that, then run `invoke provision.server --env={env} --limit={','.join(hosts)}` "
            f"and `invoke secrets.push --env={env}`"
        )
    return code
