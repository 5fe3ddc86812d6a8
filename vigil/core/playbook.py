"""Run a playbook, or any prepared host plans, against an environment: the one entry point for runs of
operations.

Everything that can be wrong with the input (inventory, --limit, --var, role
defaults, a role's operations) is found while building the host plans, before
any host is contacted, so bad input changes nothing anywhere.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from vigil.core.audit_log import append_local_audit, audit_command, audit_record
from vigil.core.commands import Command
from vigil.core.errors import ConfigError, ExitCode, HostError, MissingSecretError, VigilError
from vigil.core.inventory import Inventory, SecretLookup, load_inventory, parse_cli_vars
from vigil.core.output import Environment, Reporter, exit_code, plain
from vigil.core.paths import rel
from vigil.core.roles import load_playbook
from vigil.core.runner import HostPlan, HostRefusal, HostResult, RunOptions, run

LOGIN_CHECK_ATTEMPTS = 6


@dataclass
class Target:
    """Which hosts a task touches: the --env, --limit and --var flags every host task takes."""

    env: str = "sandbox"
    limit: str | None = None
    variables: list[str] | None = None


def build_host_plans(inventory: Inventory, playbook: str, limit: str | None, cli_vars: dict, secrets: SecretLookup,
                     only_roles: list[str] | None = None) -> list[HostPlan]:
    """Each selected host's operations and handlers, from every play that targets it.

    secrets: where roles read the env's secrets (vigil.vault.store.lookup). only_roles: plan just
    these roles of the playbook (secrets.rotate applies one role's secret).
    """
    plays = load_playbook(playbook)
    inventory.check_cli_vars(cli_vars, [role for play in plays for role in play.roles])
    if only_roles is not None:
        plays = [
            dataclasses.replace(play, roles=[role for role in play.roles if role.name in only_roles]) for play in plays
        ]
        plays = [play for play in plays if play.roles]
    # Playbooks administer hosts: they log in as the admin user, with root through sudo.
    selected = [host.as_admin() for host in inventory.select(limit)]
    if not selected:
        raise ConfigError(f"--limit {limit!r} selects no host in {rel(inventory.path)}")
    host_plans = []
    for host in selected:
        if host.ssh_key is not None and not host.ssh_key.is_file():
            raise ConfigError(f"{rel(inventory.path)}: hosts.{host.name}: SSH key file {host.ssh_key} does not exist")
        host_plans.append(_host_plan(inventory, host, plays, cli_vars, secrets))
    return host_plans


def _host_plan(inventory: Inventory, host, plays, cli_vars: dict, secrets: SecretLookup) -> HostPlan:
    host_plan = HostPlan(host, [])
    for play in plays:
        if host.name not in inventory.hosts_in(play.hosts, where=play.where()):
            continue
        host_vars = inventory.vars_for(host, play.roles, cli_vars, secrets)
        for role in play.roles:
            try:
                host_plan.operations += list(role.tasks(role, host_vars))
                if role.handlers:
                    host_plan.handlers.update(role.handlers(role, host_vars))
            except MissingSecretError as error:
                # A secret is per env but needed per host (DB_PASSWORD on the db host only): the
                # hosts that need it fail untouched, the others go ahead, and a re-run once the
                # secret is added picks them up.
                return HostPlan(host, [], refused=HostRefusal(f"roles/{role.name}", error.message))
            except (ValueError, TypeError) as error:
                raise ConfigError(f"roles/{role.name} on {host.name}: {error}") from None
    return host_plan


def run_playbook(
    task: str,
    playbook: str,
    target: Target,
    options: RunOptions,
    reporter: Reporter,
    secrets: SecretLookup,
    env: Environment | None = None,
    only_roles: list[str] | None = None,
) -> tuple[ExitCode, list[HostResult]]:
    """Plan and apply `playbooks/<playbook>.yml` on the target hosts; print progress and the recap.

    Example: run_playbook("provision.server", "onboard", Target("staging", "web"), RunOptions(check=True), reporter,
                          lookup("staging"))
    """
    inventory = load_inventory(target.env)
    host_plans = build_host_plans(
        inventory, playbook, target.limit, parse_cli_vars(target.variables), secrets, only_roles
    )
    return run_plans(task, inventory, host_plans, options, reporter, env)


def run_plans(task: str, inventory: Inventory, host_plans: list[HostPlan], options: RunOptions, reporter: Reporter,
              env: Environment | None = None) -> tuple[ExitCode, list[HostResult]]:
    """Run prepared host plans over SSH: progress, recap, and an audit line per host and locally.

    Concerns (the vault's push, maintenance mode...) build their own host plans and hand them here.
    """
    # fabric and paramiko when a run connects: a task module that imports this one starts without them.
    from vigil.core.connectors.ssh import SSHTransport  # noqa: PLC0415

    env = env or Environment()

    def finish(transport, result: HostResult) -> None:
        if options.check:
            return
        record = audit_record(task, inventory.env, [result.host], result.status, env.clock(), result.count("changed"))
        if result.error:
            # Whole, where the recap shows its first line (masked like every audit line).
            record["error"] = plain(result.error)
        outcome = transport.run(audit_command(record))
        if not outcome.ok:
            reporter.error(f"{result.host}: could not append to the host's audit log: {outcome.stderr.strip()}")

    def login_check(host, also_users=()) -> str | None:
        # Exactly how the next runs will log in, with no bootstrap fallback: as the user this run
        # logs in as (the admin user, with sudo), and as each of `also_users` (the deploy user).
        # sshd re-executes on reload and refuses connections for a moment: a lock-out lasts, a blip
        # does not, so a few tries a second apart tell them apart.
        for user, sudo in dict.fromkeys(
            [(host.user, True), *((user, False) for user in also_users if user != host.user)]
        ):
            problem = _login_problem(dataclasses.replace(host, user=user, bootstrap_user=None), sudo)
            if problem:
                return f"as {user}: {problem}"
        return None

    def _login_problem(host, sudo: bool) -> str | None:
        problem = None
        for attempt in range(LOGIN_CHECK_ATTEMPTS):
            if attempt:
                time.sleep(1)
            try:
                with SSHTransport(host, inventory.known_hosts, inventory.env) as fresh:
                    result = fresh.run(Command(("true",), sudo=sudo))
                    if result.ok:
                        return None
                    problem = f"sudo failed: {result.stderr.strip()[:200]}"
            except HostError as error:
                problem = error.reason
            except VigilError as error:
                problem = error.message
        return problem

    options.login_check = options.login_check or login_check
    results = run(
        host_plans,
        lambda host: SSHTransport(host, inventory.known_hosts, inventory.env),
        options,
        reporter.progress,
        finish,
    )
    code = exit_code(results)
    if not options.check:
        record = audit_record(task, inventory.env, [r.host for r in results], code.name.lower(), env.clock(),
                              sum(r.count("changed") for r in results))
        errors = {r.host: plain(r.error or r.unreachable) for r in results if r.error or r.unreachable}
        append_local_audit({**record, "errors": errors} if errors else record, env)
    reporter.recap(task, inventory.env, results)
    return code, results
