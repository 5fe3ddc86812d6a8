"""A preview's name from any branch name: one DNS label, safe as a path, a unit or a database name."""

import hashlib
import re

import pytest

from vigil.previews.slug import SLUG_BASE, is_slug, slug_of

LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize("branch, base", [
    ("feature/login", "feature-login"),
    ("Feature/Login.v2", "feature-login-v2"),
    ("release/2026.12", "release-2026-12"),
    ("fix--double__under", "fix-double-under"),
    ("-leading-and-trailing-", "leading-and-trailing"),
    ("x" * 200, "x" * SLUG_BASE),
    ("a" * (SLUG_BASE - 1) + "/b", "a" * (SLUG_BASE - 1)),  # cut on a hyphen: none left at the end
    ("$(rm -rf /);`id`|&>x", "rm-rf-id-x"),
    ("../../etc/passwd", "etc-passwd"),
    ("ünïcødé", "n-c-d"),
    ("///", "branch"),
    ("", "branch"),
])
def test_any_branch_becomes_one_safe_dns_label(branch, base):
    slug = slug_of(branch)
    assert slug == f"{base}-{hashlib.sha256(branch.encode()).hexdigest()[:8]}"
    assert LABEL.fullmatch(slug) and len(slug) <= 63 and is_slug(slug)


def test_branches_that_clean_up_the_same_get_distinct_names_and_each_keeps_its_own():
    names = ["feature/login", "Feature/Login", "feature-login", "feature.login", "feature_login"]
    assert len({slug_of(name) for name in names}) == len(names)
    assert slug_of("feature/login") == slug_of("feature/login")


@pytest.mark.parametrize("text", ["feature-login", "Feature-login-0123abcd", "a/b-0123abcd", "-x-0123abcd",
                                  "x-0123abc", "x-0123abcg", "x" * 41 + "-0123abcd", "x-0123abcd\n"])
def test_only_a_slug_is_taken_where_a_name_comes_back_in(text):
    assert not is_slug(text)
