"""Where a preview goes and when it ends: the host with room, its ports, the limit, the TTL."""

import pytest

from vigil.core.errors import ConfigError
from vigil.previews.model import DAY, Limits, PreviewRecord, database_of, expired, place, ports_of

LIMITS = Limits(max_per_host=2, ttl_seconds=7 * DAY, port_base=4100)


def record(slug, host, slot, branch=None, expires=10 * DAY):
    return PreviewRecord(slug, branch or slug.rsplit("-", 1)[0], host, slot, database_of(slug), 0.0, expires)


A, B, C = "alpha-0123abcd", "beta-0123abcd", "gamma-0123abcd"


@pytest.mark.parametrize("hosts, slug, branch, expected", [
    ({"web1": [], "web2": []}, A, "alpha", ("web1", 0)),
    ({"web1": [record(A, "web1", 0)], "web2": []}, B, "beta", ("web2", 0)),
    ({"web1": [record(A, "web1", 1)], "web2": [record(B, "web2", 0)]}, C, "gamma", ("web1", 0)),
    # A preview already up is updated where it runs, in its slot.
    ({"web1": [], "web2": [record(A, "web2", 1)]}, A, "alpha", ("web2", 1)),
])
def test_a_preview_goes_where_it_runs_else_to_the_host_with_the_most_room(hosts, slug, branch, expected):
    assert place(slug, branch, hosts, LIMITS) == expected


def test_a_full_set_of_hosts_is_refused_naming_the_previews_to_remove():
    hosts = {"web1": [record(A, "web1", 0), record(B, "web1", 1, expires=5 * DAY)]}
    with pytest.raises(ConfigError) as error:
        place(C, "gamma", hosts, LIMITS)
    message = error.value.message
    assert "runs its most previews (2 each" in message and "preview.down" in message
    assert message.index(B) < message.index(A)  # the soonest to expire first


def test_a_slug_taken_by_another_branch_is_refused_not_taken_over():
    with pytest.raises(ConfigError, match=f"the preview {A} on web1 is the branch 'alpha', not 'other'"):
        place(A, "other", {"web1": [record(A, "web1", 0, branch="alpha")]}, LIMITS)


def test_no_host_at_all_says_which_group_to_add():
    with pytest.raises(ConfigError, match="add a `preview` group"):
        place(A, "alpha", {}, LIMITS)


def test_each_slot_has_its_own_two_ports_and_each_slug_its_own_database():
    assert [ports_of(slot, 4100) for slot in (0, 1)] == [{"backend": 4100, "frontend": 4101},
                                                         {"backend": 4102, "frontend": 4103}]
    assert database_of("feature-login-0123abcd") == "preview_feature_login_0123abcd"


def test_previews_past_their_expiry_are_the_ones_pruned():
    hosts = {"web1": [record(A, "web1", 0, expires=100.0), record(B, "web1", 1, expires=300.0)]}
    assert [r.slug for r in expired(hosts, now=200.0)] == [A]


@pytest.mark.parametrize("data", [{"slug": "../etc"}, {"slug": "x; rm -rf /"}, {}, "not a record"])
def test_a_record_whose_name_is_not_a_slug_is_refused(data):
    with pytest.raises(ConfigError, match="web1: a preview record without a valid name"):
        PreviewRecord.from_json(data, "web1")


def test_a_record_goes_to_json_and_back():
    original = PreviewRecord(A, "alpha", "web1", 1, database_of(A), 1.0, 2.0, 7, "abc", {"backend": "r1"})
    assert PreviewRecord.from_json(original.to_json(), "web1") == original
