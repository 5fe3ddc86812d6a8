"""What a host holds for one service (lock, links, colors, releases, history), parsed from the scripts'
answer, and the pure decisions made from it: the live color, the rollback target, what to prune."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from vigil.core.facts import sections
from vigil.core.redaction import mask_url_passwords
from vigil.deploy.settings import COLORS, Settings


@dataclass
class HostState:
    """What a host holds for one service before a deploy."""

    lock: dict | None = None
    current: str | None = None
    colors: dict[str, str | None] = field(default_factory=dict)
    # color -> systemd's is-active answer for its unit (active, inactive, failed...)
    units: dict[str, str] = field(default_factory=dict)
    live_port: int | None = None
    releases: dict[str, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    # The owner of a lock this deploy took over (its holder stopped its heartbeat), and for how long
    # it had been silent.
    stale_lock: dict | None = None
    stale_lock_silent: int = 0


def parse_states(stdout: str) -> dict[str, HostState]:
    """STATES's answer: service -> its state."""
    chunks = re.split(r"^@service (\S+)\n", stdout, flags=re.MULTILINE)
    return {service: parse_state(body) for service, body in zip(chunks[1::2], chunks[2::2])}


def parse_trail(stdout: str) -> tuple[str, list[dict]]:
    """STATES_AND_TRAIL's answer: the states' part, and root's trail lines that parse, oldest first. The
    last marker counts: the states' part holds deploy-owned text, the trail only root's."""
    states, marker, trail = stdout.rpartition("\n@trail\n")
    if not marker:
        return stdout, []
    return states + "\n", [entry for entry in map(parse_json_object, trail.splitlines()) if entry]


def parse_state(stdout: str) -> HostState:
    """Parse STATE's sections; a release's metadata that does not parse counts as none."""
    state = HostState()
    for section, text in sections(stdout):
        if section and section.startswith("stale-lock"):
            state.stale_lock = parse_json_object(text) or {"owner": "unknown"}
            silent = section.split()[-1]
            state.stale_lock_silent = int(silent) if silent.isdigit() else 0
        elif section == "lock":
            state.lock = parse_json_object(text) or {"owner": "unknown"}
        elif section == "current":
            state.current = Path(text).name
        elif section and section.startswith("color "):
            state.colors[section.split()[1]] = Path(text).name
        elif section == "units" and len(state.units) < len(COLORS):
            state.units[COLORS[len(state.units)]] = text
        elif section == "upstream" and text.isdigit():
            state.live_port = int(text)
        elif section == "releases":
            release_id, _, rest = text.partition(" ")
            status, _, meta = rest.partition(" ")
            state.releases[release_id] = {**(parse_json_object(meta) or {}), "status": status}
        elif section == "history":
            entry = parse_json_object(text)
            if entry:
                state.history.append(entry)
    return state


def interrupted_deploy(state: HostState, settings: Settings) -> str:
    """Why the host looks like a deploy was cut off between its switch and `current` ("" when it does
    not): nginx sends the traffic to a color that runs another release than `current` names."""
    live = live_color(state, settings)
    serving = state.colors.get(live) if live else None
    if not serving or serving == state.current:
        return ""
    return (f"an earlier deploy was cut off after its switch: nginx sends traffic to {live}, which runs "
            f"{serving}, while current names {state.current or 'nothing'}")


def parse_gate(stdout: str) -> tuple[str, str]:
    """HEALTH_GATE's answer: (what it says, the unit's "NRestarts MainPID" the watch holds it to)."""
    lines = stdout.splitlines()
    return (lines[0].strip() if lines else ""), (lines[1].strip() if len(lines) > 1 else "")


def parse_holder(stdout: str) -> tuple[dict, int]:
    """TAKE_LOCK's answer when another deploy holds the lock: (its owner, seconds since its heartbeat)."""
    owner, _, silent = stdout.partition("@silent")
    seconds = silent.strip()
    return parse_json_object(owner.strip()) or {}, int(seconds) if seconds.isdigit() else 0


def holder_line(owner: dict) -> str:
    """'alice@laptop (pid 4242 on laptop) since 2026-11-26T01:00:00Z': who holds a lock, as an operator
    needs to find them."""
    where = f" (pid {owner['pid']} on {owner.get('control_host', '?')})" if owner.get("pid") else ""
    return f"{owner.get('who', 'unknown')}{where} since {owner.get('since', '?')}"


def parse_json_object(text: str) -> dict | None:
    """`text` as a JSON object, or None when it is not one (a half-written line)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def migrations_added(listing: str, current: str, target: str) -> list[str]:
    """LIST_MIGRATIONS's answer -> the migrations `current` has and `target` has not, newest first
    (the order a revert undoes them: file names start with their timestamp)."""
    listing = listing.split("\n@point\n", 1)[0]
    chunks = re.split(r"^@release (\S+)\n", listing, flags=re.MULTILINE)
    files = {
        release: {name for name in body.split() if name.endswith(".js")}
        for release, body in zip(chunks[1::2], chunks[2::2])
    }
    return sorted(files.get(current, set()) - files.get(target, set()), reverse=True)


def restore_point_before(listing: str) -> dict | None:
    """LIST_MIGRATIONS's answer -> the restore point recorded before the current release's migrations
    (name, at, timeline, restore: the command), or None."""
    _, found, record = listing.partition("\n@point\n")
    point = parse_json_object(record) if found else None
    return point if point and isinstance(point.get("restore"), str) else None


def live_color(state: HostState, settings: Settings) -> str | None:
    """The color whose port nginx's upstream names (None: no color's)."""
    return next((color for color, port in settings.ports.items() if port == state.live_port), None)


def rollback_target(state: HostState, wanted: str | None) -> str:
    """The release a rollback returns to: `wanted`, else the newest earlier live release that is not bad.

    Raises ValueError naming why there is none.
    """
    usable = {rid for rid, meta in state.releases.items() if meta.get("status") != "bad"}
    if wanted:
        if wanted not in state.releases:
            raise ValueError(
                f"release {wanted} is not on the host (releases: {', '.join(sorted(state.releases)) or 'none'})"
            )
        if wanted not in usable:
            raise ValueError(f"release {wanted} is marked bad; pick another (--to)")
        if wanted == state.current:
            raise ValueError(f"release {wanted} is the current one already")
        return wanted
    # What each release replaced when it was last deployed (a rollback is a return, not a deploy, and
    # a redeploy of the same release replaced nothing): the chain back from the current release.
    replaced: dict[str, str] = {}
    for entry in state.history:
        release, previous = entry.get("release"), entry.get("previous")
        if entry.get("result") == "live" and not entry.get("rollback") and release and previous and previous != release:
            replaced[release] = previous
    seen, candidate = {state.current}, replaced.get(state.current or "")
    while candidate and candidate not in seen:
        if candidate in usable:
            return candidate
        seen.add(candidate)
        candidate = replaced.get(candidate)
    raise ValueError(f"no earlier good release to return to (current: {state.current or 'none'})")


def prune_candidates(state: HostState, keep: int, protected: set[str]) -> list[str]:
    """Releases to delete: all but the newest `keep` good ones and the bad ones newer than the oldest of
    those, never one in `protected` (current, previous, colors). A release marked bad is no rollback
    target, so it does not count towards `keep`: the host keeps `keep` places to roll back to, and
    its recent failures to look at."""
    ordered = sorted(state.releases, key=lambda rid: (state.releases[rid].get("uploaded_at", ""), rid), reverse=True)
    is_good = {rid: meta.get("status") != "bad" for rid, meta in state.releases.items()}
    kept = {rid for rid in protected if rid in state.releases}
    good = sum(is_good[rid] for rid in kept)
    for rid in ordered:
        if good >= keep:
            break
        if rid not in kept:
            kept.add(rid)
            good += is_good[rid]
    return [rid for rid in ordered if rid not in kept]


ERROR_LINE = re.compile(r"\b(\w*Error\b|ERROR|FATAL|[Ee]xception|failed|error:)")


def log_excerpt(log: str, errors: int = 5, tail: int = 10) -> str:
    """What explains a failure in a long log: its first error lines, then its last lines (a stack
    trace's object dump would otherwise push the error itself out of view)."""
    log = mask_url_passwords(log)
    lines = [line for line in log.splitlines() if line.strip()]
    first_errors = [line for line in lines[:-tail] if ERROR_LINE.search(line)][:errors]
    shown = first_errors + (["..."] if first_errors else []) + lines[-tail:]
    return "\n".join(line[:300] for line in shown)
