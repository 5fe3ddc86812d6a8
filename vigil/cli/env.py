"""env.*: a new environment from the servers a team has (`env.new`), and its preflight (`env.check`)."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from vigil.cli.common import confirm_key, exits_cleanly
from vigil.core.errors import ExitCode
from vigil.core.inventory import default_inventory_dir, load_inventory
from vigil.core.output import Reporter
from vigil.core.paths import rel
from vigil.environments import preflight
from vigil.environments.scaffold import EnvRequest, create_env, parse_hosts
from vigil.vault.paths import SecretsPaths
from vigil.vault.schema import load_schema
from vigil.vault.store import audit_secrets_task, open_env


@task(iterable=["host", "group", "private"], help={
    "name": "The new env's name (staging, production): inventory/NAME.yml, secrets/NAME.env.age.",
    "host": "A server: NAME=ADDRESS (repeatable). Its group comes from its name (web1, db1, backup1, "
            "monitor1) or --group. Without a db host, the first web host runs the database too.",
    "group": "Put a host in a group its name does not say: NAME:GROUP (web, db, backup, monitor). Repeatable.",
    "private": "A host's address on the provider's private network: NAME=IP (repeatable; all web and db "
               "hosts or none).",
    "domain": "The site's domain (app.example.com): nginx's server name, FRONTEND_URL and NEXT_PUBLIC_API_URL.",
    "email": "Where Let's Encrypt writes about certificate expiry.",
    "ssh_key": "The private key vigil logs in with (default ~/.ssh/id_ed25519); its public half is authorized.",
    "yes": "Pin every host's key without asking (needed when there is no terminal).",
})
@exits_cleanly
def new(c, name, host=None, group=None, private=None, domain=None, email=None, ssh_key="~/.ssh/id_ed25519",
        yes=False):
    """Write a new env: its inventory, each server's host key (confirmed), its age key and secrets file.

    Refuses a name that exists; a key you do not accept writes nothing.
    Example: invoke env.new staging --host web1=203.0.113.10 --domain=staging.example.com
    """
    reporter = Reporter()
    request = EnvRequest(name, parse_hosts(host or [], group or [], private or []), Path(ssh_key).expanduser(),
                         domain, email)
    paths = SecretsPaths.default()  # nothing of any env is touched before create_env's checks
    schema = load_schema(paths)
    label = f"{getpass.getuser()}@{os.uname().nodename}"

    def confirm(plan, known_hosts) -> bool:
        return confirm_key("env.new", plan.describe(known_hosts), f"pin this key for {plan.host.name}?", yes)

    created = create_env(request, default_inventory_dir(), paths, schema, label, confirm)
    reporter.line(f"wrote {rel(created.inventory)} ({', '.join(f'{g}: {len(m)}' for g, m in request.layout.items())})")
    reporter.line(f"pinned {len(request.hosts)} host key(s) in {rel(created.known_hosts)}")
    reporter.line(f"identity: {created.identity} (keep it private; back it up in your password manager)")
    reporter.line(f"secrets: {rel(created.secrets)}, generated {', '.join(created.generated)}")
    if created.to_set:
        reporter.line("still to set (secrets.import from your PaaS, or secrets.set):")
        for problem in created.to_set:
            reporter.line(f"  {problem}")
    reporter.line(f"next: invoke env.check {name}, then invoke provision.server --env={name} (docs/moving-in.md)")
    audit_secrets_task("env.new", name)


@task(help={
    "name": "The env to check (inventory/NAME.yml).",
    "skip": "Items to leave out, comma-separated: " + ", ".join(preflight.KINDS) + " (--skip=dns before the "
            "domain is switched).",
    "resolver": "Ask this DNS server where the domain points (IP or IP:PORT; default: this machine's resolver).",
    "json": "Print the items as one JSON document.",
})
@exits_cleanly
def check(c, name, skip="", resolver=None, json=False):
    """Before the first onboarding: SSH, release, disk, memory, ports 80/443, DNS and secrets, one line each.

    Exits 3 if any item fails.
    Example: invoke env.check staging --resolver=1.1.1.1
    """
    reporter = Reporter(json_output=json)
    inventory = load_inventory(name)
    _, schema = open_env(name)
    items = preflight.check_env(inventory, schema, [kind for kind in skip.split(",") if kind], resolver)
    failed = [item for item in items if not item.ok]
    if json:
        reporter.document({"env": name, "ok": not failed, "items": [item.as_json() for item in items]})
    else:
        for item in items:
            reporter.line(item.line())
        reporter.line(f"{name}: {len(items) - len(failed)} of {len(items)} items ok")
    if failed:
        raise Exit(code=int(ExitCode.BAD_INPUT))


ns = Collection("env")
ns.add_task(new)
ns.add_task(check)
