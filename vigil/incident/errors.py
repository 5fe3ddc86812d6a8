"""What the env's error tracker (Bugsink, roles/errors) saw: the error groups that first appeared since a
moment (the last deploy, an incident's start), read over HTTPS from its API with vigil's read-only token,
as incident.status and incident.report show them. The verdicts are pure; the reading is one request a page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from vigil.core.errors import VigilError
from vigil.incident.status_rules import OK, WARN, Check
from vigil.vault.error_tracking import PROJECT_ID, SECRET_KEY, ErrorsSite, api_token
from vigil.vault.paths import SecretsError
from vigil.vault.store import load

# Pages of 250 issues read at most, newest first: enough for any window a person reads on one screen.
MAX_PAGES = 4
# Groups named on the status line; the rest are counted.
SHOWN = 3


@dataclass(frozen=True)
class ErrorGroup:
    """One of Bugsink's issues: an error type and message (and where it was thrown), its events and the
    releases it happened in."""

    id: str
    title: str
    first_seen: str
    last_seen: str
    events: int
    releases: tuple[str, ...]
    resolved: bool


def parse_issue(issue: dict) -> ErrorGroup:
    title = f"{issue.get('calculated_type') or 'Error'}: {issue.get('calculated_value') or ''}".strip().rstrip(":")
    if issue.get("transaction"):
        title += f" ({issue['transaction']})"
    return ErrorGroup(id=issue.get("friendly_id") or str(issue.get("id", "")), title=title,
                      first_seen=str(issue.get("first_seen", "")), last_seen=str(issue.get("last_seen", "")),
                      events=int(issue.get("digested_event_count") or 0),
                      releases=tuple(release for release in issue.get("events_at") or () if release),
                      resolved=bool(issue.get("is_resolved")))


def moment(text: str) -> datetime:
    """An ISO time (Bugsink's microseconds or vigil's seconds, 'Z' or an offset) as an aware datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def tracker_token(env: str) -> str:
    """vigil's read-only API token for the env's Bugsink, derived from its secret key."""
    try:
        return api_token(load(env)[SECRET_KEY])
    except (KeyError, SecretsError):
        raise VigilError(f"no {SECRET_KEY} in the {env} secrets to read the error tracker with") from None


def groups_since(site: ErrorsSite, token: str, since: str, get=None) -> list[ErrorGroup]:
    """The groups first seen at or after `since` (ISO, UTC), newest first, read with `token`. Raises
    VigilError when Bugsink cannot be read (down, or the token refused).

    Example: groups_since(errors_site(inventory), tracker_token("production"), "2026-12-06T10:00:00Z")
    """
    # requests on first use: every task imports the incident modules, few ask Bugsink anything.
    import requests  # noqa: PLC0415

    get = get or requests.get
    url = f"{site.origin}/api/canonical/0/issues/?project={PROJECT_ID}&sort=digest_order&order=desc"
    start = moment(since)
    found = []
    for _ in range(MAX_PAGES):
        try:
            response = get(url, headers={"Authorization": f"Bearer {token}"}, verify=site.verify, timeout=10)
        except requests.RequestException as error:
            raise VigilError(f"the error tracker at {site.origin} did not answer ({type(error).__name__})") from None
        if response.status_code != 200:
            raise VigilError(f"the error tracker at {site.origin} answered HTTP {response.status_code}")
        page = response.json()
        groups = [parse_issue(issue) for issue in page.get("results") or ()]
        found += [group for group in groups if moment(group.first_seen) >= start]
        # Newest first: once a page reaches older groups, the rest are older still.
        if not page.get("next") or any(moment(group.first_seen) < start for group in groups):
            break
        url = page["next"]
    return found


def error_check(groups: list[ErrorGroup], since: str) -> Check:
    """The status screen's line: the new groups since the last deploy, the first few named."""
    if not groups:
        return Check("new errors", OK, f"no new error group since the last deploy ({since})")
    named = "; ".join(f"{group.title} x{group.events} in {', '.join(group.releases) or 'no release'}"
                      for group in groups[:SHOWN])
    more = f"; and {len(groups) - SHOWN} more" if len(groups) > SHOWN else ""
    return Check("new errors", WARN, f"{len(groups)} new error group(s) since the last deploy ({since}): "
                                     f"{named}{more}")


def report_lines(groups: list[ErrorGroup]) -> list[str]:
    """The post-mortem's list of the error groups that first appeared in its window, oldest first."""
    return [f"- {group.first_seen[:19]}Z `{group.id}` {group.title}: {group.events} event(s), in "
            f"{', '.join(group.releases) or 'no release'}{' (resolved since)' if group.resolved else ''}"
            for group in sorted(groups, key=lambda group: moment(group.first_seen))] or ["- none"]
