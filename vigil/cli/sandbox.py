"""sandbox.*: throwaway real Debian 13 (or 12) VPSes on this machine, the default environment.

Thin on purpose: each task parses its flags, calls vigil.sandbox.lifecycle and prints.
"""

from __future__ import annotations

import os
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit
from rich.table import Table

from vigil.core.output import Reporter
from vigil.core.paths import REPO_ROOT
from vigil.sandbox import layouts, lifecycle, power
from vigil.sandbox.apply import Timings
from vigil.sandbox.paths import SandboxError


def _echo(line: str) -> None:
    Reporter().line(line)


def _fail(error: SandboxError) -> Exit:
    return Exit(f"error: {error.message}", code=int(error.exit_code))


def _print_plan(planned: list[str]) -> None:
    if not planned:
        _echo("check: nothing to do")
        return
    _echo("check: would run")
    for line in planned:
        _echo(f"  {line}")


def _count(hosts: str, flag: str) -> int:
    """--hosts as a count, for flags that add to vps1..vpsN."""
    if not str(hosts).isdigit():
        raise SandboxError(f"--hosts={hosts}: {flag} takes --hosts as a count (vps1..vpsN), not names")
    return int(hosts)


def _shown(path: Path) -> str:
    """An inventory file as a person names it: inventory/sandbox.yml inside the repository."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _print_timings(timings: Timings) -> None:
    _echo("time: " + ", ".join(f"{phase} {seconds:g} s" for phase, seconds in timings.phases.items()))


@task(auto_shortflags=False, iterable=["debian", "replace", "group"], help={
    "hosts": "How many VPSes (vps1..vpsN) to have running; default 2. Healthy extra ones keep running. "
             "Or which: a range (vps7-vps13) or names (vps5,vps6).",
    "check": "Only print what would change; change nothing.",
    "debian": "Debian release: 13 (trixie, the default) or 12 (bookworm) for every host, or NAME:RELEASE "
              "for one host (--debian=vps3:12). Repeatable. A running host on another release is replaced.",
    "replace": "A VPS to replace with a fresh one (new host key, nothing onboarded), running or stopped: "
               "--replace=vps2. Repeatable. Without it a stopped VPS (after a reboot or poweroff) is refused.",
    "group": "Put a VPS in an inventory group (web, db, backup, monitor, lb) instead of the default layout "
             "(web: all, db: the first): --group=vps3:backup. Repeatable; kept with the VPS.",
    "layout": "Boot a whole layout: `ha` (vps1 balancer, vps2-3 web, vps4-6 database cluster, vps7 backup, "
              "vps8 monitor; docs/ha.md). --hosts (a count) and --group add to it.",
    "inventory": "List these VPSes in DIR/sandbox.yml instead of inventory/sandbox.yml, apart from the others: "
                 "VIGIL_INVENTORY=DIR reaches them, the default inventory never does, and an up or down of "
                 "one inventory leaves the other's VPSes as they are.",
})
def up(c, hosts="2", check=False, debian=None, replace=None, group=None, layout=None, inventory=None):
    """Boot sandbox VPSes (real systemd Debian 13 or 12 with sshd) and write inventory/sandbox.yml.

    Each VPS gets its own network namespace and address (vpsN at 10.213.N.2),
    NAT to the Debian mirror, a writable overlay on the cached image (built with
    debootstrap on first use, about 75 s) and a fresh sshd host key pinned in
    inventory/sandbox.known_hosts. Leftovers of a killed run are removed first.
    Keys pinned for running VPSes are kept (a `provision.trust` stays); a
    stopped VPS is replaced only when --replace names it. Running it again
    changes nothing. Needs root.

    Examples: sudo invoke sandbox.up --hosts=3 --debian=vps3:12
              sudo invoke sandbox.up --hosts=3 --group=vps3:backup
              sudo invoke sandbox.up --layout=ha
              sudo invoke sandbox.up --hosts=vps7-vps9 --inventory=/tmp/trial   (beside vps1..)
    """
    try:
        if layout:
            count, flags = layouts.layout_flags(layout)
            hosts, group = max(_count(hosts, "--layout"), count), [*flags, *(group or ())]
        result = lifecycle.up(hosts=hosts, check=check, echo=_echo, debian=debian or (), replace=replace or (),
                              groups=group or (), inventory=Path(inventory) if inventory else None)
    except SandboxError as error:
        raise _fail(error) from None
    if check:
        _print_plan(result.planned)
        return
    if result.created:
        _echo(f"up: started {', '.join(result.created)}; {_shown(result.inventory_file)} lists "
              f"{', '.join(host['name'] for host in result.hosts)}")
    elif result.changed:
        _echo(f"up: {', '.join(result.kept)} already running; repaired the rest (see above)")
    else:
        _echo(f"up: {', '.join(result.kept)} already running; nothing changed")
    if result.extra:
        verb = "keeps" if len(result.extra) == 1 else "keep"
        _echo(
            f"note: {', '.join(result.extra)} {verb} running beyond --hosts={hosts}; `invoke sandbox.down` removes all"
        )
    _print_timings(result.timings)


@task(help={"check": "Only print what would be removed; change nothing.",
            "inventory": "Only the VPSes listed in DIR/sandbox.yml (booted with `up --inventory=DIR`); "
                         "the others keep running."})
def down(c, check=False, inventory=None):
    """Stop every sandbox VPS and remove its namespace, links, NAT rules, overlay and inventory.

    Each VPS is powered off cleanly (SIGTERM to its systemd-nspawn, SIGKILL
    after 30 s). The sandbox key pair and the image cache stay, so the next
    `sandbox.up` takes seconds. Nothing up is fine: it does nothing. Needs root.

    Examples: sudo invoke sandbox.down
              sudo invoke sandbox.down --inventory=/tmp/trial
    """
    try:
        result = lifecycle.down(check=check, echo=_echo, inventory=Path(inventory) if inventory else None)
    except SandboxError as error:
        raise _fail(error) from None
    if check:
        _print_plan(result.planned)
        return
    if not result.changed:
        _echo("down: nothing was up; nothing changed")
        return
    hosts = ", ".join(result.hosts) or "no VPS"
    stopped = ", ".join(result.stopped) or "none was running"
    _echo(f"down: removed {hosts} (powered off: {stopped}); {len(result.removed)} step(s), "
          f"{len(result.files)} generated file(s) deleted")
    _print_timings(result.timings)


@task
def status(c):
    """Show each sandbox VPS: Debian release, address, nspawn pid, whether it runs and whether its sshd answers.

    Exits 0 whether or not the sandbox is up. Needs no root.

    Example: invoke sandbox.status
    """
    try:
        rows = lifecycle.status()
    except SandboxError as error:
        raise _fail(error) from None
    if not rows:
        _echo("sandbox is down (no VPS recorded); `sudo invoke sandbox.up` starts it")
        return
    table = Table(title="sandbox")
    for column in ("host", "debian", "address", "pid", "running", "sshd"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.release, row.address, str(row.pid or "-"),
                      "yes" if row.running else "no", "answers" if row.sshd else "no answer")
    Reporter().table(table)


@task(help={"host": "The sandbox host, e.g. vps1.",
            "command": "Run this command on the host instead of opening a shell.",
            "user": "Log in as this user (default: deploy once onboarded, which turns root logins off; else root)."})
def ssh(c, host, command=None, user=None):
    """Open an ssh session to a sandbox VPS, with the sandbox key and pinned host key.

    As the deploy user once the VPS is onboarded, else as root; --user picks another (admin, say).
    Example: invoke sandbox.ssh vps1 --user=admin --command='sudo systemctl is-system-running'
    """
    try:
        argv = lifecycle.ssh_argv(host, command, user=user)
    except SandboxError as error:
        raise _fail(error) from None
    # Replace this process so the session is as interactive as plain ssh.
    os.execvp(argv[0], argv)


@task(help={"host": "The sandbox host, e.g. vps2.",
            "hard": "Cut the power instead: every process of the VPS killed at once, none shutting down."})
def poweroff(c, host, hard=False):
    """Power a sandbox VPS off, as a provider's console does: systemd inside shuts down, then it is gone.
    With --hard, as a power cut: nothing inside gets to shut down (a database leader keeps its lock).

    Its disk stays; `sandbox.poweron` boots it again. A fault to practise on (monitoring's HostDown).
    Example: sudo invoke sandbox.poweroff vps2 --hard
    """
    try:
        stopped = power.poweroff(host, hard=hard)
    except SandboxError as error:
        raise _fail(error) from None
    _echo(f"poweroff: {host} {'is off' if stopped else 'was already off'}")


@task(help={"host": "The sandbox host, e.g. vps2."})
def poweron(c, host):
    """Boot a powered-off sandbox VPS again, on its own disk, address and host key.

    Example: sudo invoke sandbox.poweron vps2
    """
    try:
        booted = power.poweron(host)
    except SandboxError as error:
        raise _fail(error) from None
    _echo(f"poweron: {host} {booted}")


ns = Collection("sandbox")
for _task in (up, down, status, ssh, poweroff, poweron):
    ns.add_task(_task)
