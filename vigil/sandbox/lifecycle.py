"""`up`, `down`, `status` and `ssh`: what the sandbox tasks call. Each reads facts, plans the difference,
then applies it."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

from vigil.core.validation import USER_PATTERN
from vigil.sandbox.apply import (
    Echo,
    Timings,
    apply_cleanup,
    create_vps,
    describe_creation,
    ensure_client_key,
    ensure_image,
    ensure_ip_forward,
    hand_to_repo_owner,
    restore_ip_forward,
    save_state,
    wait_until_booted,
    write_inventory,
)
from vigil.sandbox.facts import (
    check_preconditions,
    gather_facts,
    healthy_hosts,
    list_processes,
    load_state,
    nspawn_machine_of,
    sandbox_hosts,
    stopped_hosts,
    tcp_port_open,
    uplink_device,
)
from vigil.sandbox.lock import SandboxLock
from vigil.sandbox.paths import (
    BOOT_TIMEOUT,
    DEFAULT_RELEASE,
    IMAGE_BUILD_TOOLS,
    REQUIRED_TOOLS,
    TEARDOWN_TOOLS,
    SandboxError,
    SandboxPaths,
    Vps,
    host_name_index,
)
from vigil.sandbox.plan import (
    CleanupPlan,
    UpPlan,
    client_key_command,
    desired_iptables_rules,
    image_build_command,
    plan_cleanup,
    plan_hosts,
    ssh_command,
)
from vigil.sandbox.scope import (
    hosts_in_scope,
    inventory_file_of,
    inventory_home,
    parse_group_flags,
    parse_hosts,
    parse_release_flags,
)


@dataclass
class UpResult:
    """What `up` did (or, with check, would do)."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    system_states: dict[str, str] = field(default_factory=dict)
    inventory_changed: list[str] = field(default_factory=list)
    image: str = ""
    planned: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    hosts: list[dict] = field(default_factory=list)
    inventory_file: Optional[Path] = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.cleaned or self.inventory_changed or self.image not in ("", "cached"))


def up(hosts: Union[int, str] = 2, check: bool = False, paths: SandboxPaths = SandboxPaths(),
       echo: Echo = lambda line: None, debian: Iterable[str] = (), replace: Iterable[str] = (),
       groups: Iterable[str] = (), inventory: Optional[Path] = None) -> UpResult:
    """Make sure the selected VPSes run on the asked Debian releases, removing stale leftovers first.

    Changes nothing when they already do.

    hosts: a count N (vps1..vpsN at least; healthy extra ones keep running), a range (vps7-vps9) or names
    (vps5,vps6): see scope.parse_hosts.
    check: only plan: read facts and return the commands in `planned`, change nothing.
    echo: receives one line per step, for progress.
    debian: `--debian` flags (see parse_release_flags); a running host on another release is replaced.
    replace: hosts to replace with fresh ones, running or stopped. A stopped host (its disk still here)
    not named here makes `up` refuse, rather than lose what was onboarded on it.
    groups: `--group=NAME:GROUP` flags (see parse_group_flags): the inventory groups of the hosts they
    name, kept with each host; the others keep theirs.
    inventory: list the hosts in this directory's sandbox.yml instead of inventory/sandbox.yml. Hosts
    listed in another inventory are out of this call's scope: left exactly as they are (scope.py).
    Example: up(hosts=2, debian=["vps2:12"], echo=print).created == ["vps1", "vps2"]
    """
    started = time.monotonic()
    selection = parse_hosts(hosts)
    releases = parse_release_flags(debian, selection)
    given_groups = parse_group_flags(groups, selection)
    tools = dict(REQUIRED_TOOLS)
    if not all(paths.image(release).is_dir() for release in set(releases.values())):
        tools.update(IMAGE_BUILD_TOOLS)
    check_preconditions("sandbox.up", tools)
    result = UpResult()
    home = inventory_home(paths, inventory)
    result.inventory_file = inventory_file_of(paths, home)
    with (contextlib.nullcontext() if check else SandboxLock(paths, echo)):
        # The key comes first: a VPS that authorizes a key we no longer have is not usable, so not healthy.
        if check:
            authorized_key = paths.public_key.read_text().strip() if paths.public_key.exists() else None
        else:
            authorized_key = ensure_client_key(paths, echo)
        facts = gather_facts(paths)
        scope = hosts_in_scope(facts.state, selection, home)
        # Another inventory's hosts are kept whatever their condition: powered off, or cut off by a test.
        others = set(facts.state) - scope
        every_healthy = healthy_hosts(facts, authorized_key)
        healthy = every_healthy & scope
        running = {name: host.get("release", DEFAULT_RELEASE) for name, host in facts.state.items() if name in scope}
        # A host keeps its groups when replaced; a --group flag gives new ones.
        wanted_groups = {name: host["groups"] for name, host in facts.state.items() if host.get("groups")}
        wanted_groups.update(given_groups)
        stopped = stopped_hosts(facts, every_healthy) & scope
        host_plan = plan_hosts(selection, healthy, releases, running, stopped, replace)
        result.kept, result.extra, result.replaced = host_plan.keep, host_plan.extra, host_plan.replace
        healthy -= set(host_plan.replace)
        cleanup = plan_cleanup(facts, paths, keep=healthy | others,
                               desired_rules=desired_iptables_rules(uplink_device()))
        result.cleaned = cleanup.describe(paths)
        result.timings.record("inspect", started)
        if check:
            result.planned = describe_up(paths, cleanup, host_plan)
            result.created = [vps.name for vps in host_plan.create]
            return result

        phase = time.monotonic()
        outcomes = [ensure_image(paths, release, echo) for release in sorted(set(host_plan.releases.values()))]
        result.image = next((outcome for outcome in outcomes if outcome != "cached"), "cached" if outcomes else "")
        result.timings.record("image", phase)

        phase = time.monotonic()
        for name in host_plan.replace:
            echo(f"replacing {name}: {host_plan.reasons[name]}")
        if cleanup.hosts and not host_plan.replace:
            echo(f"removing leftovers of an earlier run: {', '.join(cleanup.hosts)}")
        apply_cleanup(cleanup, paths, echo)
        result.timings.record("cleanup", phase)

        state = {name: host for name, host in load_state(paths).items() if name in healthy or name in others}
        regrouped = [name for name in state if name in given_groups and state[name].get("groups") != given_groups[name]]
        for name in regrouped:
            state[name]["groups"] = given_groups[name]
        if regrouped:
            save_state(paths, state)
        if host_plan.create:
            start_hosts(host_plan, state, authorized_key, paths, echo, result, wanted_groups, home)
        else:
            result.inventory_changed = [str(path) for path in write_inventory(paths, state)]
        for name in host_plan.keep:
            if not tcp_port_open(state[name]["address"], timeout=3):
                echo(f"warning: {name} runs but its sshd does not answer; `invoke sandbox.down` then `up` recreates it")
        result.hosts = [{"name": host["name"], "address": host["address"]}
                        for host in sorted(state.values(), key=lambda host: host["index"])
                        if host.get("inventory") == home]
    result.timings.record("total", started)
    return result


def describe_up(paths: SandboxPaths, cleanup: CleanupPlan, host_plan: UpPlan) -> list[str]:
    """What `up` would do, one line per step, for `--check`."""
    planned = []
    if not paths.private_key.exists():
        planned.append(shlex.join(client_key_command(paths.private_key)))
    for release in sorted(set(host_plan.releases.values())):
        if not paths.image(release).is_dir():
            planned.append(shlex.join(image_build_command(paths.image_partial(release), release)))
    planned += cleanup.describe(paths)
    if host_plan.create and paths.ip_forward.read_text().strip() != "1":
        planned.append("echo 1 > /proc/sys/net/ipv4/ip_forward")
    for vps in host_plan.create:
        planned += describe_creation(vps, paths, host_plan.releases[vps.name])
    return planned


def start_hosts(host_plan: UpPlan, state: dict[str, dict], authorized_key: str, paths: SandboxPaths,
                echo: Echo, result: UpResult, groups: dict[str, list[str]], home: Optional[str] = None) -> None:
    """Create and boot the plan's new hosts, recording each in `state` (and state.json) as soon as it starts,
    with the inventory that lists it (`home`, see scope.inventory_home)."""
    phase = time.monotonic()
    create = host_plan.create
    ensure_ip_forward(paths)
    for vps in create:
        release = host_plan.releases[vps.name]
        paths.release_apt_archives(release).mkdir(parents=True, exist_ok=True)
        echo(f"{vps.name}: starting Debian {release} at {vps.address}")
        state[vps.name] = create_vps(vps, paths, authorized_key, release)
        if vps.name in groups:
            state[vps.name]["groups"] = groups[vps.name]
        if home is not None:
            state[vps.name]["inventory"] = home
        # Saved at once, so a run killed from here on leaves state that `down` can follow.
        save_state(paths, state)
    hand_to_repo_owner(paths, paths.state_file)
    # The boot wait logs in over ssh, which needs the new host keys pinned first.
    fresh = [vps.name for vps in create]
    result.inventory_changed = [str(path) for path in write_inventory(paths, state, fresh)]
    result.timings.record("start", phase)

    phase = time.monotonic()
    deadline = time.monotonic() + BOOT_TIMEOUT
    for vps in create:
        result.system_states[vps.name] = wait_until_booted(vps, state[vps.name]["pid"], paths, deadline)
        echo(f"{vps.name}: {result.system_states[vps.name]}")
    result.timings.record("boot", phase)
    result.created = [vps.name for vps in create]


@dataclass
class DownResult:
    """What `down` removed (or, with check, would remove)."""

    removed: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.files)


def down(check: bool = False, paths: SandboxPaths = SandboxPaths(), echo: Echo = lambda line: None,
         inventory: Optional[Path] = None) -> DownResult:
    """Stop every sandbox VPS and remove all it made on this machine; keep the key pair and image cache.

    check: only plan: return the commands in `planned`, change nothing.
    inventory: only the VPSes listed in this directory's sandbox.yml (booted with `up --inventory`); the
    others keep running, and so do the sandbox's network rules.
    Example: down(echo=print).stopped == ["vps1", "vps2"]
    """
    started = time.monotonic()
    check_preconditions("sandbox.down", TEARDOWN_TOOLS, need_overlay=False)
    result = DownResult()
    with (contextlib.nullcontext() if check else SandboxLock(paths, echo)):
        facts = gather_facts(paths)
        home = inventory_home(paths, inventory) if inventory is not None else None
        others = set() if inventory is None else {
            name for name, host in facts.state.items() if host.get("inventory") != home}
        # With others left running, their network rules stay.
        desired_rules = desired_iptables_rules(uplink_device()) if others else []
        plan = plan_cleanup(facts, paths, keep=others, desired_rules=desired_rules)
        result.removed = plan.describe(paths)
        result.hosts = plan.hosts
        result.stopped = sorted(plan.stop, key=lambda name: host_name_index(name) or 0)
        homes = {host.get("inventory") for name, host in facts.state.items() if name not in others}
        generated = [path for home in sorted(homes - {None}) for path in
                     (inventory_file_of(paths, home), inventory_file_of(paths, home).with_name(
                         paths.known_hosts_file.name))]
        generated += [] if others else [paths.inventory_file, paths.known_hosts_file, paths.state_file]
        result.files = [str(path) for path in generated if path.exists()]
        if check:
            result.planned = result.removed + [f"rm {path}" for path in result.files]
            return result
        apply_cleanup(plan, paths, echo)
        for path in generated:
            path.unlink(missing_ok=True)
        if others:
            remaining = {name: host for name, host in load_state(paths).items() if name in others}
            save_state(paths, remaining)
            write_inventory(paths, remaining)
        elif restore_ip_forward(paths):
            echo("restored net.ipv4.ip_forward=0, as it was before sandbox.up")
    result.timings.record("total", started)
    return result


@dataclass
class HostStatus:
    """One row of `status`."""

    name: str
    address: str
    pid: Optional[int]
    running: bool
    sshd: bool
    release: str = DEFAULT_RELEASE


def status(paths: SandboxPaths = SandboxPaths()) -> list[HostStatus]:
    """Each recorded host with whether its nspawn runs and its sshd answers; needs no root.

    Example: all(host.sshd for host in status())
    """
    live = {}
    for process in list_processes():
        machine = nspawn_machine_of(process.argv, paths.netns_dir)
        if machine:
            live[machine] = process.pid
    rows = []
    for host in sorted(load_state(paths).values(), key=lambda host: host["index"]):
        pid = host.get("pid")
        running = live.get(host["name"]) == pid and pid is not None
        rows.append(HostStatus(host["name"], host["address"], pid, running, tcp_port_open(host["address"]),
                               host.get("release", DEFAULT_RELEASE)))
    return rows


def ssh_argv(name: str, command: Optional[str] = None, paths: SandboxPaths = SandboxPaths(),
             user: Optional[str] = None) -> list[str]:
    """The interactive ssh command for sandbox host `name` (command: run that instead of a shell), as
    `user`, else as the deploy user once onboarding made it (it turns root logins off), else root.

    Example: ssh_argv("vps1", "uptime", user="admin")
    """
    Vps.from_name(name)
    if user is not None and not USER_PATTERN.match(user):
        raise SandboxError(f"--user: {user!r} is not a user name ([a-z_][a-z0-9_-]*, at most 32)")
    hosts = {host["name"]: host for host in sandbox_hosts(paths)}
    if name not in hosts:
        known = ", ".join(hosts) or "none; run `invoke sandbox.up`"
        raise SandboxError(f"no sandbox host {name!r} (hosts: {known})")
    if not paths.private_key.exists() or not paths.known_hosts_file.exists():
        raise SandboxError(f"the sandbox key or {paths.known_hosts_file} is missing; run `invoke sandbox.up`")
    address = hosts[name]["address"]
    if user is None:
        # Onboarded VPSes refuse root over SSH: log in as the deploy user once it exists.
        probe = subprocess.run(ssh_command(paths, address, ["true"], user="deploy"), capture_output=True,
                               stdin=subprocess.DEVNULL, timeout=30)
        user = "deploy" if probe.returncode == 0 else "root"
    return ssh_command(paths, address, [command] if command else None, batch=False, user=user)

