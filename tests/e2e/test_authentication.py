"""The sample app's authentication on the session's deployed hosts (vps1 and vps2 behind their nginx): posting
a prayer needs an access token, reading stays public; forged, expired and foreign tokens are refused; and
`secrets.rotate JWT_SECRET` logs nobody out until its grace ends (then the old secret's tokens are refused).

Rotation works on a scratch copy of the sandbox secrets; the repository's own are pushed back after it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime

import pytest
import requests

from tests.support.accounts import PASSWORD, bearer, register
from tests.support.alerts import scratch_secrets
from tests.support.sandbox_hosts import REPO, invoke
from vigil.vault.paths import SecretsPaths
from vigil.vault.store import load

CA = str(REPO / ".vigil" / "sandbox" / "ca" / "ca.crt")
ISSUER = "together-pray"  # examples/together-pray/backend/src/auth/tokens.ts


@pytest.fixture(scope="module")
def site(deployed, sandbox) -> str:
    return f"https://{sandbox.addresses['vps1']}"


def post(site: str, body: str, headers: dict | None = None) -> requests.Response:
    return requests.post(f"{site}/api/prayers", json={"body": body}, headers=headers or {}, verify=CA, timeout=15)


def signed(claims: dict, key: str, algorithm: str = "HS256") -> str:
    """A JWT made here, as a forger would make one (HS256 over the two encoded parts, or none)."""
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    head = f"{part({'alg': algorithm, 'typ': 'JWT'})}.{part(claims)}"
    if algorithm == "none":
        return head + "."
    mac = hmac.new(key.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_posting_needs_a_token_and_reading_stays_public(site):
    anonymous = post(site, "anonymous")
    assert anonymous.status_code == 401, anonymous.text
    account = register(site, CA, name="Miriam")
    marker = f"posted with a token {uuid.uuid4()}"
    posted = post(site, marker, bearer(account["accessToken"]))
    assert posted.status_code == 201, posted.text
    assert posted.json()["author"] == "Miriam"  # the token's user, not a name the request claims
    listed = requests.get(f"{site}/api/prayers", verify=CA, timeout=15)
    assert listed.status_code == 200 and marker in listed.text
    # Logged in again, and refreshed: each access token posts.
    wrong = requests.post(f"{site}/api/auth/login", json={"email": account["email"], "password": PASSWORD + "!"},
                          verify=CA, timeout=15)
    assert wrong.status_code == 401
    login = requests.post(f"{site}/api/auth/login", json={"email": account["email"], "password": PASSWORD},
                          verify=CA, timeout=15)
    assert login.status_code == 200, login.text
    refreshed = requests.post(f"{site}/api/auth/refresh", json={"refreshToken": login.json()["refreshToken"]},
                              verify=CA, timeout=15)
    assert refreshed.status_code == 200, refreshed.text
    assert post(site, "after a refresh", bearer(refreshed.json()["accessToken"])).status_code == 201
    taken = requests.post(f"{site}/api/auth/register", json={"email": account["email"], "name": "again",
                                                            "password": PASSWORD}, verify=CA, timeout=15)
    assert taken.status_code == 409


def claims(**changed) -> dict:
    now = int(time.time())
    return {"sub": "1", "name": "Forger", "typ": "access", "iat": now, "exp": now + 600, "iss": ISSUER, **changed}


FORGERIES = {
    "signed with another key": lambda secret: signed(claims(), "x" * 48),
    "expired": lambda secret: signed(claims(exp=int(time.time()) - 5), secret),
    "alg none": lambda secret: signed(claims(), "", "none"),
    "a refresh token's type": lambda secret: signed(claims(typ="refresh"), secret),
    "another issuer": lambda secret: signed(claims(iss="someone-else"), secret),
    "garbage": lambda secret: "not.a.token",
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_expired_or_foreign_token_is_refused(site, forgery):
    secret = load("sandbox", SecretsPaths(REPO / "secrets"))["JWT_SECRET"]
    answer = post(site, f"forged: {forgery}", bearer(FORGERIES[forgery](secret)))
    assert answer.status_code == 401, answer.text


def test_the_control_token_made_here_is_accepted(site):
    """The forgeries above fail for what they change, not for how this module signs: the same claims signed
    with the real secret post."""
    secret = load("sandbox", SecretsPaths(REPO / "secrets"))["JWT_SECRET"]
    assert post(site, "signed here with the real secret", bearer(signed(claims(), secret))).status_code == 201


def serving_again(site: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"{site}/api/health", verify=CA, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{site} did not serve its API again within {timeout:.0f} s")


def test_rotating_the_signing_secret_keeps_users_logged_in_until_its_grace_ends(site, tmp_path):
    scratch = scratch_secrets(tmp_path)
    before = register(site, CA, name="Before rotation")
    rotated = invoke("secrets.rotate", "JWT_SECRET", "--grace=25", "--limit=vps1,vps2", extra_env=scratch,
                     timeout=600)
    try:
        assert rotated.code == 0, rotated.stdout + rotated.stderr
        assert "kept the old value as JWT_SECRET_PREVIOUS" in rotated.stdout
        values = load("sandbox", SecretsPaths(tmp_path / "secrets"))
        assert values["JWT_SECRET_PREVIOUS"] == load("sandbox", SecretsPaths(REPO / "secrets"))["JWT_SECRET"]
        until = datetime.fromisoformat(values["JWT_SECRET_PREVIOUS_UNTIL"].replace("Z", "+00:00")).timestamp()
        # The push restarts each backend in place (its env file is read at start): serving again first.
        serving_again(site)
        # Within the grace: the token from before the rotation still posts; a new login's does too.
        assert time.time() < until - 5, "the rotation took up the whole grace"
        assert post(site, "old token, in the grace", bearer(before["accessToken"])).status_code == 201
        after = register(site, CA, name="After rotation")
        assert post(site, "new token", bearer(after["accessToken"])).status_code == 201
        # Past it: the old secret's token is refused, the new one still posts, and a refresh still works.
        time.sleep(max(until - time.time(), 0) + 2)
        assert post(site, "old token, past the grace", bearer(before["accessToken"])).status_code == 401
        assert post(site, "new token, later", bearer(after["accessToken"])).status_code == 201
        refreshed = requests.post(f"{site}/api/auth/refresh", json={"refreshToken": before["refreshToken"]},
                                  verify=CA, timeout=15)
        assert refreshed.status_code == 200, refreshed.text
        assert post(site, "refreshed after the rotation", bearer(refreshed.json()["accessToken"])).status_code == 201
        # No value of the rotation was printed.
        for key in ("JWT_SECRET", "JWT_SECRET_PREVIOUS"):
            assert values[key] not in rotated.stdout + rotated.stderr
    finally:
        restored = invoke("secrets.push", "--limit=vps1,vps2", timeout=600)
        assert restored.code == 0, restored.stdout + restored.stderr
        serving_again(site)
