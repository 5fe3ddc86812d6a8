"""audit.security: a host's answer parsed and each checklist rule, table by table (no hosts)."""

from types import SimpleNamespace

import pytest

from vigil.audit.checklist import Item
from vigil.audit.security import (
    authentication_item,
    host_items,
    origin_of,
    parse_security_facts,
    port_closed_item,
    site_items,
)

ANSWER = """@sshd
permitrootlogin no
passwordauthentication no
kbdinteractiveauthentication no
permitemptypasswords no
@ufw
Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    Anywhere
443/tcp                    ALLOW IN    Anywhere
5432/tcp                   ALLOW IN    10.213.2.2
@envfiles
/etc/together-pray/backend.env 600 together-pray
/etc/together-pray/frontend.env 600 together-pray
@upgrades
enabled active
@nginx
limit_req zone=together_pray_api burst=20 nodelay;
@tls
tls1 refused
tls1_1 refused
tls1_2 accepted
tls1_3 accepted
@exposure
together-pray-backend@audit.service 1.3
vigil-pgbackrest-backup@incr.service 1.4
vigil-pgbackrest-check.service 1.6
@groups
deploy together-pray
@lockdir
700 root directory
@end
"""


def items_of(facts, **kwargs) -> dict[str, Item]:
    return {
        item.name: item
        for item in host_items("vps1", facts, web=True, database=True, app_user="together-pray", **kwargs)
    }


def test_a_hardened_host_passes_every_item_it_answers_for():
    items = items_of(parse_security_facts(ANSWER))
    assert set(items) == {"SSH hardened", "firewall active", "PostgreSQL not open to the world (firewall)",
                          "secrets files 0600, owned by the app user", "only TLS 1.2 and 1.3", "rate limiting active",
                          "unattended upgrades on", "systemd units rated OK", "deploy user reads only its app's logs",
                          "lock directory root-only"}
    assert all(item.ok for item in items.values()), [item for item in items.values() if not item.ok]


# (what is changed in the host's answer, the item that must fail, words of its evidence)
BROKEN = [
    (
        ("5432/tcp                   ALLOW IN    10.213.2.2", "5432/tcp                   ALLOW IN    Anywhere"),
        "PostgreSQL not open to the world (firewall)",
        "5432/tcp",
    ),
    (
        ("/etc/together-pray/backend.env 600", "/etc/together-pray/backend.env 644"),
        "secrets files 0600, owned by the app user",
        "backend.env 644 together-pray",
    ),
    (
        ("frontend.env 600 together-pray", "frontend.env 600 root"),
        "secrets files 0600, owned by the app user",
        "frontend.env 600 root",
    ),
    (("passwordauthentication no", "passwordauthentication yes"), "SSH hardened", "passwordauthentication yes"),
    (("Status: active", "Status: inactive"), "firewall active", "Status: inactive"),
    (("tls1_1 refused", "tls1_1 accepted"), "only TLS 1.2 and 1.3", "accepts TLSv1.1, TLSv1.2, TLSv1.3; refuses TLSv1"),
    (("tls1_2 accepted\ntls1_3 accepted", "tls1_2 refused\ntls1_3 refused"), "only TLS 1.2 and 1.3", "accepts nothing"),
    (("limit_req zone=together_pray_api burst=20 nodelay;\n", ""), "rate limiting active", "no limit_req"),
    (("enabled active", "disabled inactive"), "unattended upgrades on", "disabled, inactive"),
    (("vigil-pgbackrest-check.service 1.6", "vigil-pgbackrest-check.service 8.6"), "systemd units rated OK",
     "vigil-pgbackrest-check.service 8.6 (at most 2.0 wanted)"),
    (("vigil-pgbackrest-check.service 1.6", "vigil-pgbackrest-check.service ?"), "systemd units rated OK",
     "vigil-pgbackrest-check.service unrated"),
    (("deploy together-pray", "deploy together-pray systemd-journal"), "deploy user reads only its app's logs",
     "in systemd-journal: the whole journal"),
    (("deploy together-pray", "deploy adm"), "deploy user reads only its app's logs", "in adm"),
    (("700 root directory", "755 root directory"), "lock directory root-only", "/run/vigil 755 root"),
    (("700 root directory", "700 deploy directory"), "lock directory root-only", "/run/vigil 700 deploy"),
]


@pytest.mark.parametrize("change, item, evidence", BROKEN, ids=[case[1] + ": " + case[2] for case in BROKEN])
def test_each_weakness_fails_its_own_item_and_only_it(change, item, evidence):
    items = items_of(parse_security_facts(ANSWER.replace(*change)))
    assert not items[item].ok and evidence in items[item].evidence
    others = [name for name, found in items.items() if not found.ok and name != item]
    assert others in ([], ["PostgreSQL not open to the world (firewall)"])  # a dead firewall opens the database too


def test_a_host_without_vigils_units_has_nothing_to_rate():
    answer = ANSWER.replace("together-pray-backend@audit.service 1.3\nvigil-pgbackrest-backup@incr.service 1.4\n"
                            "vigil-pgbackrest-check.service 1.6\n", "")
    item = items_of(parse_security_facts(answer))["systemd units rated OK"]
    assert item.ok and item.evidence == "none of vigil's units on this host"


def response(status=200, **headers):
    return SimpleNamespace(status_code=status, headers=headers)


GOOD_PAGE = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Content-Security-Policy": "default-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Server": "nginx",
}


def site(page_headers: dict, allowed: str = "https://pray.example", foreign: str = "") -> dict[str, Item]:
    def get(url, **kwargs):
        return (
            response(301, Location="https://pray.example/")
            if url.startswith("http://")
            else response(200, **page_headers)
        )

    def options(url, headers, **kwargs):
        echoed = allowed if headers["Origin"] == "https://pray.example" else foreign
        return response(204, **({"Access-Control-Allow-Origin": echoed} if echoed else {}))

    return {item.name: item for item in site_items("vps1", "pray.example", True, "https://pray.example", get, options)}


def test_a_visitor_is_sent_to_https_with_hsts_the_headers_and_strict_cors():
    items = site(GOOD_PAGE)
    assert all(item.ok for item in items.values()) and len(items) == 5


# (page headers, allowed origin's answer, a foreign origin's answer, the item that fails)
SITE_BROKEN = [
    (
        {key: value for key, value in GOOD_PAGE.items() if key != "Strict-Transport-Security"},
        "https://pray.example",
        "",
        "HSTS",
    ),
    ({**GOOD_PAGE, "Strict-Transport-Security": "max-age=300"}, "https://pray.example", "", "HSTS"),
    (
        {key: value for key, value in GOOD_PAGE.items() if key != "X-Frame-Options"},
        "https://pray.example",
        "",
        "security headers",
    ),
    ({**GOOD_PAGE, "Server": "nginx/1.26.3"}, "https://pray.example", "", "server hides its version"),
    (GOOD_PAGE, "https://pray.example", "*", "CORS restricted to the configured origin"),
    (GOOD_PAGE, "https://pray.example", "https://audit.invalid", "CORS restricted to the configured origin"),
]


@pytest.mark.parametrize("headers, allowed, foreign, failing", SITE_BROKEN)
def test_each_site_weakness_fails_its_item(headers, allowed, foreign, failing):
    items = site(headers, allowed, foreign)
    assert [name for name, item in items.items() if not item.ok] == [failing]


def test_the_database_port_must_refuse_this_machine():
    def refused():
        raise ConnectionRefusedError()

    assert port_closed_item("vps1", "10.0.0.5", 5432, refused).ok
    assert not port_closed_item("vps1", "10.0.0.5", 5432, lambda: None).ok


# (the answers protected routes give without credentials, passes)
ROUTES = [({}, True), ({"DELETE /api/prayers/1": 401, "GET /api/admin": 403}, True),
          ({"DELETE /api/prayers/1": 401, "GET /api/admin": 200}, False)]


@pytest.mark.parametrize("answers, ok", ROUTES)
def test_protected_routes_must_refuse_an_anonymous_request(answers, ok):
    routes = [tuple(route.split(" ", 1)) for route in answers]
    item = authentication_item(
        "vps1",
        "pray.example",
        True,
        routes,
        lambda method, url, **kwargs: response(answers[f"{method} {url.split('pray.example')[1]}"]),
    )
    assert item.ok == ok and (("no protected route" in item.evidence) == (not answers))
    if not ok:
        assert item.evidence == "GET /api/admin -> 200"


@pytest.mark.parametrize("url, origin", [("https://pray.example/app/", "https://pray.example"),
                                         ("http://localhost", "http://localhost"), ("", "")])
def test_the_allowed_origin_is_frontend_urls_origin(url, origin):
    assert origin_of(url) == origin
