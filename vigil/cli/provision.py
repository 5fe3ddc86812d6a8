"""provision: onboard servers (`provision.server`) and trust their host keys (`provision.trust`)."""

from __future__ import annotations

from invoke import Collection, task
from invoke.exceptions import Exit

from vigil.cli.common import HOST_FLAGS_HELP, confirm_key, exit_unless_ok, exits_cleanly
from vigil.core.errors import ConfigError, ExitCode
from vigil.core.inventory import load_inventory
from vigil.core.output import Reporter
from vigil.core.playbook import Target, run_playbook
from vigil.core.runner import RunOptions
from vigil.vault.store import lookup


@task(help=HOST_FLAGS_HELP, iterable=["var"])
@exits_cleanly
def server(
    c, env="sandbox", limit=None, check=False, diff=False, verbose=False, json=False, forks=10, serial=0, var=None
):
    """Onboard servers: apply playbooks/onboard.yml (idempotent; safe to re-run).

    Example: invoke provision.server --env=staging --limit=web1 --check --diff
    """
    reporter = Reporter(json_output=json, verbose=verbose, check=check)
    code, _ = run_playbook(
        "provision.server",
        "onboard",
        Target(env, limit, var),
        RunOptions(check=check, diff=diff, forks=int(forks), serial=int(serial)),
        reporter,
        lookup(env),
    )
    exit_unless_ok(code)


@task(help={"host": "Inventory host whose key to trust.", "env": HOST_FLAGS_HELP["env"],
            "yes": "Pin without asking (needed when there is no terminal)."})
@exits_cleanly
def trust(c, host, env="sandbox", yes=False):
    """Show a host's SSH key fingerprint and pin it in the env's known_hosts.

    Compare the fingerprint with the one your provider shows (or `ssh-keygen -lf
    /etc/ssh/ssh_host_ed25519_key.pub` on the server's console) before you accept.
    Example: invoke provision.trust --env=staging --host=web1
    """
    # paramiko (scanning the host's key) only when this task runs: `--help provision.server` starts without it.
    from vigil.core.connectors.trust import apply_trust, plan_trust  # noqa: PLC0415

    reporter = Reporter()
    inventory = load_inventory(env)
    if host not in inventory.hosts:
        raise ConfigError(f"--host: unknown host {host!r} in inventory/{env}.yml")
    plan = plan_trust(inventory.hosts[host], inventory.known_hosts)
    if plan.action == "none":
        reporter.line(plan.describe(inventory.known_hosts))
        return
    if not confirm_key("provision.trust", plan.describe(inventory.known_hosts), f"{plan.action} this key for {host}?",
                       yes):
        raise Exit("not trusted; nothing changed", code=int(ExitCode.HOST_FAILED))
    apply_trust(plan, inventory.known_hosts)
    reporter.line(f"pinned {host} in {inventory.known_hosts.name}")


ns = Collection("provision")
ns.add_task(server)
ns.add_task(trust)
