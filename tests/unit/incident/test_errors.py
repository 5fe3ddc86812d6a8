"""What the error tracker saw, as incident.status and incident.report show it: Bugsink's issues read page by
page, those first seen since a moment, one status line and the post-mortem's list."""

from __future__ import annotations

import pytest
import requests

from vigil.core.errors import VigilError
from vigil.incident.errors import ErrorGroup, error_check, groups_since, parse_issue, report_lines
from vigil.incident.status_rules import OK, WARN
from vigil.vault.error_tracking import ErrorsSite

SITE = ErrorsSite("mon1", "errors.example.org", "/tmp/ca.crt")
TOKEN = "0" * 40


def issue(number: int, first_seen: str, **fields) -> dict:
    return {"id": f"uuid-{number}", "friendly_id": f"TOGETHER-PRAY-{number}", "first_seen": first_seen,
            "last_seen": first_seen, "digested_event_count": 2, "calculated_type": "Error",
            "calculated_value": f"vigil test error: {number}", "transaction": "", "events_at": ["r1"],
            "is_resolved": False, **fields}


class Answer:
    def __init__(self, status: int, body: dict | None = None):
        self.status_code, self.body = status, body or {}

    def json(self):
        return self.body


class Bugsink:
    """A fake Bugsink API: pages of issues, newest first, and every request it was asked."""

    def __init__(self, pages: list[list[dict]], status: int = 200):
        self.pages, self.status, self.asked = pages, status, []

    def __call__(self, url, headers, verify, timeout):
        self.asked.append((url, headers, verify))
        index = int(url.rsplit("page=", 1)[1]) if "page=" in url else 0
        more = index + 1 < len(self.pages)
        return Answer(self.status, {"results": self.pages[index],
                                    "next": f"https://errors.example.org/api/x?page={index + 1}" if more else None})


def test_an_issue_reads_as_a_group_with_its_releases():
    group = parse_issue(issue(7, "2026-12-06T10:00:00.5Z", transaction="GET /api/test/error", events_at=["r1", "r2"]))
    assert group == ErrorGroup("TOGETHER-PRAY-7", "Error: vigil test error: 7 (GET /api/test/error)",
                               "2026-12-06T10:00:00.5Z", "2026-12-06T10:00:00.5Z", 2, ("r1", "r2"), False)


def test_only_groups_first_seen_since_the_moment_are_kept_and_older_pages_are_not_read():
    bugsink = Bugsink([[issue(4, "2026-12-06T10:05:00.000001Z"), issue(3, "2026-12-06T10:00:00.2Z")],
                       [issue(2, "2026-12-06T09:59:59.9Z"), issue(1, "2026-12-06T09:00:00Z")],
                       [issue(0, "2026-12-05T09:00:00Z")]])
    groups = groups_since(SITE, TOKEN, "2026-12-06T10:00:00Z", get=bugsink)
    assert [group.id for group in groups] == ["TOGETHER-PRAY-4", "TOGETHER-PRAY-3"]
    assert len(bugsink.asked) == 2  # the second page held older groups: the third is never asked
    url, headers, verify = bugsink.asked[0]
    assert url == "https://errors.example.org/api/canonical/0/issues/?project=1&sort=digest_order&order=desc"
    assert headers == {"Authorization": f"Bearer {TOKEN}"} and verify == "/tmp/ca.crt"


@pytest.mark.parametrize("status, message", [(401, "answered HTTP 401"), (502, "answered HTTP 502")])
def test_a_tracker_that_refuses_says_so(status, message):
    with pytest.raises(VigilError, match=message) as raised:
        groups_since(SITE, TOKEN, "2026-12-06T10:00:00Z", get=Bugsink([[]], status=status))
    assert TOKEN not in raised.value.message


def test_a_tracker_that_cannot_be_reached_says_so():
    def unreachable(*args, **kwargs):
        raise requests.ConnectionError("refused")

    with pytest.raises(VigilError, match="did not answer \\(ConnectionError\\)"):
        groups_since(SITE, TOKEN, "2026-12-06T10:00:00Z", get=unreachable)


@pytest.mark.parametrize("count, state, parts", [
    (0, OK, ["no new error group since the last deploy (2026-12-06T10:00:00Z)"]),
    (1, WARN, ["1 new error group(s) since the last deploy", "Error: vigil test error: 0 x2 in r1"]),
    (5, WARN, ["5 new error group(s)", "vigil test error: 2 x2", "; and 2 more"]),
])
def test_the_status_line_names_the_first_groups_and_counts_the_rest(count, state, parts):
    groups = [parse_issue(issue(number, "2026-12-06T10:01:00Z")) for number in range(count)]
    check = error_check(groups, "2026-12-06T10:00:00Z")
    assert check.state == state and all(part in check.detail for part in parts), check.detail
    assert count < 5 or "vigil test error: 3" not in check.detail


def test_the_post_mortem_lists_groups_oldest_first():
    groups = [parse_issue(issue(2, "2026-12-06T10:02:00Z", is_resolved=True)),
              parse_issue(issue(1, "2026-12-06T10:01:00.7Z", events_at=[]))]
    assert report_lines(groups) == [
        "- 2026-12-06T10:01:00Z `TOGETHER-PRAY-1` Error: vigil test error: 1: 2 event(s), in no release",
        "- 2026-12-06T10:02:00Z `TOGETHER-PRAY-2` Error: vigil test error: 2: 2 event(s), in r1 (resolved since)",
    ]
    assert report_lines([]) == ["- none"]
