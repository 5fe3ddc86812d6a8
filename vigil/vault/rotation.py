"""Pushing and rotating: the env's values on every host that runs a service, and a key's new value put
in place in the right order (the role that applies it first, then the services that read it)."""

from __future__ import annotations

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


def rotate(env: str, key: str, read_value: Callable[[str], str], limit: str | None, options: RunOptions,
           reporter: Reporter, say: Say) -> ExitCode:
    """Give `key` a new value (random when generatable, else `read_value(key)`), save it, apply it with the
    role that puts it in place (DB_PASSWORD: the database role's password) and push it to the services
    that read it. With options.check, nothing is saved or changed: the plan is printed.
    """
    paths, schema = open_env(env)
    if key not in schema.keys:
        raise SecretsError(f"{key}: not in {rel(schema.path)}")
    rule = schema.keys[key]
    value = generate_value(rule) if rule.generate else read_value(key)
    with locked(env, paths):
        values = load(env, paths, schema)
        rotated = {**values, key: value}
        refreshed = refresh_sandbox_defaults(schema, rotated, [key]) if env == SANDBOX else []
        if not options.check:
            save(env, rotated, schema, paths)
            audit_secrets_task("secrets.rotate", env)
    verb = "would rotate" if options.check else "rotated"
    if rule.applied_by:
        code = apply_role_first(env, key, rule.applied_by, options, reporter, say)
        if code != ExitCode.OK:
            return code
    services = sorted({service for name in [key, *refreshed] for service in schema.services_using(name, rotated)})
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
