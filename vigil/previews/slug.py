"""A preview's name: from a branch name anyone can choose (slashes, dots, capitals, 200 characters, shell
metacharacters) to one DNS label that is safe everywhere it goes (a host name, a unit, a database, a path).

The label is the branch's letters and digits, lower-cased, runs of anything else as one hyphen, cut to
SLUG_BASE characters, then a hyphen and the first SLUG_HASH hex digits of the branch's SHA-256: two
branches that read the same once cleaned ("Feature/Login" and "feature-login") get different names, and
the same branch always gets the same one. A preview also records its branch, so a name whose branch differs
(a hash collision, found on purpose or not) is refused rather than taken over.
"""

from __future__ import annotations

import hashlib
import re

SLUG_BASE = 40
SLUG_HASH = 8
# What a slug is, wherever one comes back in (a task's argument, a host's list): checked, never trusted.
SLUG = re.compile(rf"^[a-z0-9](?:[a-z0-9-]{{0,{SLUG_BASE - 1}}})-[0-9a-f]{{{SLUG_HASH}}}$")
NOT_LABEL = re.compile(r"[^a-z0-9]+")


def slug_of(branch: str) -> str:
    """The preview name of `branch`. Example: slug_of("feature/Login.v2") -> "feature-login-v2-5d41402a"."""
    base = NOT_LABEL.sub("-", branch.lower()).strip("-")[:SLUG_BASE].rstrip("-") or "branch"
    return f"{base}-{hashlib.sha256(branch.encode()).hexdigest()[:SLUG_HASH]}"


def is_slug(text: str) -> bool:
    return bool(SLUG.fullmatch(text))
