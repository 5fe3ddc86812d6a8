"""What the web hosts run: `deploy.releases` and `deploy.status`, read in one round trip per host.

Both read the same state a deploy reads first (scripts.STATES), as the deploy
user, and change nothing. Rows are plain dicts, so --json and the tables show
the same facts.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Iterable

from vigil.core.connectors import Transport
from vigil.core.errors import ConfigError, HostError
from vigil.core.fanout import answered, on_hosts, unreachable
from vigil.core.inventory import Host, Inventory, load_inventory
from vigil.deploy.scripts import states_command
from vigil.deploy.settings import COLORS, Settings, host_settings
from vigil.deploy.state import HostState, live_color, parse_states, parse_trail, rollback_target
from vigil.vault.schema import load_schema


def web_hosts(
    env: str, services: list[str], limit: str | None
) -> tuple[Inventory, list[Host], dict[str, list[Settings]]]:
    """The inventory, the selected hosts that run any of `services`, and each host's settings per service."""
    inventory, schema = load_inventory(env), load_schema()
    topology = schema.topology(inventory)
    hosts, settings = [], {}
    for host in inventory.select(limit):
        runs = [service for service in services if service in schema.services and
                host.name in topology.service_hosts[service]]
        if runs:
            hosts.append(host)
            settings[host.name] = host_settings(inventory, host, runs)
    if not hosts:
        raise ConfigError(
            f"--limit {limit or 'all'} selects no host running {' or '.join(services)} in inventory/{env}.yml"
        )
    return inventory, hosts, settings


def read_states(env: str, services: list[str], limit: str | None, trail: bool = False):
    """Each host's state per service, read as the deploy user: ({host: why it gave no answer},
    {host: {service: HostState}}, {host: {service: Settings}}, {host: root's trail lines, oldest first}),
    the trails only with `trail` (in the same round trip)."""
    inventory, hosts, settings = web_hosts(env, services, limit)

    def ask(transport, host: Host) -> tuple[dict[str, HostState], list[dict]]:
        answer = transport.run(states_command(settings[host.name], trail=trail))
        if not answer.ok:
            raise HostError(host.name, f"reading the releases failed: {answer.stderr.strip()[-300:]}")
        states, trail_lines = parse_trail(answer.stdout)
        return parse_states(states), trail_lines

    answers = on_hosts(inventory, hosts, ask, admin=False)
    return (
        unreachable(answers),
        {host: states for host, (states, _) in answered(answers).items()},
        {name: {one.layout.service: one for one in per_host} for name, per_host in settings.items()},
        {host: trail_lines for host, (_, trail_lines) in answered(answers).items()},
    )


# Seconds a status screen waits for a host's deploy state before it counts as no answer.
STATE_TIMEOUT = 30


def states_as_admin(transport: Transport, settings: list[Settings]) -> dict[str, HostState]:
    """Each service's state on one host, for the admin user (status screens, runbooks), who is not in
    the app's group: read as the deploy user, who owns it (never as root, through files that user
    controls), within STATE_TIMEOUT seconds. A host that cannot answer holds none."""
    if not settings:
        return {}
    command = dataclasses.replace(states_command(settings), sudo=False, as_user=settings[0].owner)
    answer = transport.run(command, timeout=STATE_TIMEOUT)
    return parse_states(answer.stdout) if answer.ok else {}


def deployed_at(state: HostState) -> dict[str, dict]:
    """release -> its latest history entry that made it live."""
    latest: dict[str, dict] = {}
    for entry in state.history:
        if entry.get("result") == "live" and entry.get("release"):
            latest[entry["release"]] = entry
    return latest


def release_rows(state: HostState, settings: Settings) -> list[dict]:
    """One row per release on the host, newest first: id, ref, uploaded, by, deployed, status and role."""
    live = live_color(state, settings)
    try:
        target = rollback_target(state, None)
    except ValueError:
        target = None
    live_entries = deployed_at(state)
    rows = []
    for release_id, meta in sorted(
        state.releases.items(), key=lambda item: (item[1].get("uploaded_at", ""), item[0]), reverse=True
    ):
        marks = []
        if release_id == state.current:
            marks.append("current")
        marks += [
            f"{color}{' (live)' if color == live else ''}" for color in COLORS if state.colors.get(color) == release_id
        ]
        if release_id == target:
            marks.append("rollback target")
        entry = live_entries.get(release_id, {})
        rows.append({"release": release_id, "ref": meta.get("ref", ""), "uploaded": meta.get("uploaded_at", ""),
                     "by": meta.get("by", ""), "deployed": entry.get("time", ""), "deployed_by": entry.get("who", ""),
                     "status": meta.get("status", "good"), "current": release_id == state.current, "marks": marks})
    return rows


def age(since: str, now: float) -> str:
    """'3d 4h', '25m' from an ISO time; '' when unknown."""
    try:
        seconds = int(now - datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
    except (TypeError, ValueError):
        return ""
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    return f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours else f"{minutes}m"


def status_row(state: HostState, settings: Settings, now: float) -> dict:
    """One host's one service: what serves, since when, its units, the lock, the last deploy, and what is wrong."""
    live = live_color(state, settings)
    entry = deployed_at(state).get(state.current or "", {})
    last = state.history[-1] if state.history else {}
    problems = []
    if not state.current:
        problems.append("nothing deployed")
    elif live is None:
        problems.append(f"nginx's upstream names no color's port ({state.live_port or 'none'})")
    else:
        if state.units.get(live) != "active":
            problems.append(f"the live color {live} is {state.units.get(live, 'unknown')}")
        if state.colors.get(live) != state.current:
            problems.append(
                f"the live color {live} runs {state.colors.get(live) or 'nothing'}, not current {state.current}"
            )
    if last.get("result") == "started" and not state.lock:
        problems.append(f"the deploy of {last.get('release') or 'a release'} that {last.get('who', '?')} started at "
                        f"{last.get('time', '?')} never finished (its connection was cut?): the next deploy "
                        "repairs the host")
    return {
        "service": settings.layout.service,
        "release": state.current or "",
        "ref": state.releases.get(state.current or "", {}).get("ref", ""),
        "deployed": entry.get("time", ""),
        "age": age(entry.get("time", ""), now),
        "live": f"{live}:{settings.ports[live]}" if live else "",
        "units": {color: state.units.get(color, "unknown") for color in COLORS},
        "lock": state.lock,
        "last_deploy": {
            key: last[key] for key in ("time", "who", "release", "result", "step", "rollback") if key in last
        },
        "problems": problems,
    }


def where_served(serving: dict[str, list[str]], unreached: Iterable[str] = ()) -> str:
    """'r1 on vps1, vps2; r2 on vps3', and the hosts that could not be asked: never an empty answer.

    Example: where_served({"r1": ["vps1"]}, ["vps2"]) -> "r1 on vps1; unknown on vps2 (unreachable)"
    """
    parts = [f"{release} on {', '.join(hosts)}" for release, hosts in serving.items()]
    unreached = list(unreached)
    if unreached:
        parts.append(f"unknown on {', '.join(unreached)} (unreachable)")
    return "; ".join(parts) or "no host runs it"


def releases_by_host(rows: dict[str, list[dict]]) -> dict[str, list[str]]:
    """For a service: release -> the hosts it is current on (several web hosts should agree)."""
    serving: dict[str, list[str]] = {}
    for host, row in rows.items():
        serving.setdefault(row["release"] or "nothing", []).append(host)
    return serving

