"""A user of the sample app, for the e2e tests that post prayers (posting needs an access token since the
app has authentication; reading stays public)."""

from __future__ import annotations

import re
import uuid

import requests

# Not a secret: the password of throwaway accounts on sandbox sites.
PASSWORD = "correct horse battery staple"


def register(base: str, verify, session: requests.Session | None = None, name: str = "e2e") -> dict:
    """A new account on the site at `base` (https://host, no /api): its token pair, and its email."""
    email = f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}-{uuid.uuid4().hex[:12]}@together-pray.test"
    answer = (session or requests).post(f"{base}/api/auth/register", json={"email": email, "name": name,
                                                                         "password": PASSWORD},
                                        verify=verify, timeout=15)
    assert answer.status_code == 201, answer.text
    return {**answer.json(), "email": email}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed_in(base: str, verify, session: requests.Session | None = None, name: str = "e2e") -> dict[str, str]:
    """The headers of a new account's requests."""
    return bearer(register(base, verify, session, name)["accessToken"])
