"""What the web hosts run: `deploy.releases` and `deploy.status`, read in one round trip per host.

Both read the same state a deploy reads first (deploy.STATES), as the deploy
user, and change nothing. Rows are plain dicts, so --json and the tables show
the same facts.
"""

from __future__ import annotations

import dataclasses as dc
import time
from datetime import datetime, timezone

from vigil.config import load_inventory, load_role
from vigil.deploy import (COLORS, HostState, Settings, live_color, parse_states, rollback_target, settings_from_vars,
                          states_command)
from vigil.errors import ConfigError
from vigil.runner import FAILED, OK, HostPlan, HostResult, OperationResult, RunOptions, run


def web_hosts(env: str, services: list[str], limit: str | None):
    """The inventory, the hosts that run any of `services`, and each host's settings per service."""
    from vigil import secrets

    inventory, schema = load_inventory(env), secrets.load_schema()
    roles = [load_role("app"), load_role("nginx")]
    hosts, settings = [], {}
    for host in inventory.select(limit):
        runs = [service for service in services if service in schema.services and host.name in
                inventory.hosts_in(schema.services[service].hosts, where=f"secrets/schema.yml: services.{service}.hosts")]
        if runs:
            hosts.append(host)
            settings[host.name] = [settings_from_vars(inventory.vars_for(host, roles), service) for service in runs]
    if not hosts:
        raise ConfigError(f"--limit {limit or 'all'} selects no host running {' or '.join(services)} in inventory/{env}.yml")
    return inventory, hosts, settings


def read_states(env: str, services: list[str], limit: str | None, progress=None):
    """Each host's state per service: (host results, {host: {service: HostState}})."""
    from vigil.transport import SSHTransport

    inventory, hosts, settings = web_hosts(env, services, limit)
    states: dict[str, dict[str, HostState]] = {}

    def work(transport, host_plan: HostPlan, options: RunOptions, progress) -> HostResult:
        name = host_plan.host.name
        result = HostResult(name, started=time.time())
        answer = transport.run(states_command(settings[name]))
        if answer.ok:
            states[name] = parse_states(answer.stdout)
            result.operations.append(OperationResult("Read the releases.", OK))
        else:
            result.operations.append(OperationResult("Read the releases.", FAILED, error=answer.stderr.strip()[-300:]))
            result.error = f"reading the releases failed: {answer.stderr.strip()[-300:]}"
        result.finished = time.time()
        return result

    results = run([HostPlan(host, []) for host in hosts],
                  lambda host: SSHTransport(dc.replace(host, bootstrap_user=None), inventory.known_hosts, inventory.env),
                  RunOptions(), progress, work=work)
    in_order = {host.name: states[host.name] for host in hosts if host.name in states}
    return results, in_order, {name: {one.layout.service: one for one in per_host} for name, per_host in settings.items()}


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
    for release_id, meta in sorted(state.releases.items(), key=lambda item: (item[1].get("uploaded_at", ""), item[0]), reverse=True):
        marks = []
        if release_id == state.current:
            marks.append("current")
        marks += [f"{color}{' (live)' if color == live else ''}" for color in COLORS if state.colors.get(color) == release_id]
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
            problems.append(f"the live color {live} runs {state.colors.get(live) or 'nothing'}, not current {state.current}")
    return {
        "service": settings.layout.service,
        "release": state.current or "",
        "ref": state.releases.get(state.current or "", {}).get("ref", ""),
        "deployed": entry.get("time", ""),
        "age": age(entry.get("time", ""), now),
        "live": f"{live}:{settings.ports[live]}" if live else "",
        "units": {color: state.units.get(color, "unknown") for color in COLORS},
        "lock": state.lock,
        "last_deploy": {key: last[key] for key in ("time", "who", "release", "result", "step", "rollback") if key in last},
        "problems": problems,
    }


def releases_by_host(rows: dict[str, list[dict]]) -> dict[str, list[str]]:
    """For a service: release -> the hosts it is current on (several web hosts should agree)."""
    serving: dict[str, list[str]] = {}
    for host, row in rows.items():
        serving.setdefault(row["release"] or "nothing", []).append(host)
    return serving

