"""ufw: the firewall's plan from its state, the rules vigil accepts, and how sources are worded."""

import re

import pytest

from vigil.core.errors import ConfigError
from vigil.facts.ufw import SIMPLE_TUPLE, UfwState, parse_ufw
from vigil.operations.ufw import Firewall, ufw_source

ACTIVE = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     LIMIT IN    Anywhere
Default: drop (incoming), accept (outgoing)
@@added
Added user rules (see 'ufw status' for running firewall):
ufw allow from 10.0.0.5 to any port 22 proto tcp
ufw limit 22/tcp
ufw allow 8080/tcp
"""
INACTIVE = """Status: inactive
Default: drop (incoming), accept (outgoing)
@@added
Added user rules (see 'ufw status' for running firewall):
(None)
"""


WANTED = ["allow from 10.0.0.5 to any port 22 proto tcp", "limit 22/tcp", "allow 80/tcp", "allow 443/tcp"]


@pytest.mark.parametrize(
    "state, commands",
    [
        (
            parse_ufw(INACTIVE, 0),
            [
                "ufw allow from 10.0.0.5 to any port 22 proto tcp",
                "ufw limit 22/tcp",
                "ufw allow 80/tcp",
                "ufw allow 443/tcp",
                "ufw --force enable",
            ],
        ),
        # Rules are added (a source rule on top) before any is removed; SSH is never without a rule.
        (parse_ufw(ACTIVE, 0), ["ufw allow 80/tcp", "ufw allow 443/tcp", "ufw delete allow 8080/tcp"]),
        (
            UfwState(True, True, {"incoming": "deny", "outgoing": "allow"}, ("limit 22/tcp",)),
            ["ufw prepend allow from 10.0.0.5 to any port 22 proto tcp", "ufw allow 80/tcp", "ufw allow 443/tcp"],
        ),
        (
            UfwState(True, True, {"incoming": "allow", "outgoing": "allow"}, tuple(WANTED)),
            ["ufw default deny incoming"],
        ),
        (UfwState(True, True, {"incoming": "deny", "outgoing": "allow"}, tuple(WANTED)), []),
    ],
)
def test_firewall_plan(state, commands):
    plan = Firewall(WANTED).plan({"ufw": state})
    assert [c.display("root") for c in plan.commands] == commands


@pytest.mark.parametrize(
    "rule", ["allow 22", "allow 22/tcp; reboot", "allow from $(id) to any port 22 proto tcp", "open 80/tcp"]
)
def test_firewall_refuses_odd_rules(rule):
    with pytest.raises(ValueError, match="not a firewall rule"):
        Firewall([rule])


@pytest.mark.parametrize("given, stored", [
    ("203.0.113.7/32", "203.0.113.7"), ("203.0.113.7", "203.0.113.7"), ("10.0.0.1/8", "10.0.0.0/8"),
    ("2001:DB8::1", "2001:db8::1"), ("2001:db8::1/128", "2001:db8::1"),
])
def test_trusted_sources_are_written_the_way_ufw_lists_them(given, stored):

    assert ufw_source(given, "firewall_ssh_trusted_sources") == stored


@pytest.mark.parametrize("bad", ["dead", "::::", "1.2.3.4/99", "10.0.0.1; reboot"])
def test_bad_trusted_sources_name_the_key(bad):
    with pytest.raises(ConfigError, match="firewall_ssh_trusted_sources: .* is not an IP address"):
        ufw_source(bad, "firewall_ssh_trusted_sources")


# What the ufw fact prints when every rule in ufw's files is of a form vigil writes (no `ufw show added`).
FROM_TUPLES = """Status: active
Default: drop (incoming), accept (outgoing)
@@tuples
### tuple ### allow tcp 22 0.0.0.0/0 any 10.213.1.1 in
### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in
### tuple ### allow tcp 5432 0.0.0.0/0 any 10.213.2.2 in
### tuple ### limit tcp 22 ::/0 any ::/0 in
### tuple ### allow udp 51820 ::/0 any 2001:db8::/64 in
"""


def test_rules_read_from_ufw_files_are_worded_as_ufw_show_added_words_them():
    state = parse_ufw(FROM_TUPLES, 0)
    assert state.rules == (
        "allow from 10.213.1.1 to any port 22 proto tcp",
        "limit 22/tcp",
        "allow from 10.213.2.2 to any port 5432 proto tcp",
        "allow from 2001:db8::/64 to any port 51820 proto udp",
    )
    assert (state.active, state.defaults) == (True, {"incoming": "drop", "outgoing": "accept"})
    # Nothing to do against the rules vigil wants: the same words as `ufw show added` would give.
    wanted = Firewall(
        [
            "allow from 10.213.1.1 to any port 22 proto tcp",
            "limit 22/tcp",
            "allow from 10.213.2.2 to any port 5432 proto tcp",
            "allow from 2001:db8::/64 to any port 51820 proto udp",
        ]
    )
    assert not wanted.plan({"ufw": state}).changes


@pytest.mark.parametrize("line, simple", [
    ("### tuple ### allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in", True),
    ("### tuple ### limit tcp 22 ::/0 any ::/0 in", True),
    ("### tuple ### allow tcp 5432 0.0.0.0/0 any 10.0.0.0/8 in", True),
    # Anything else makes the fact ask `ufw show added`, which words every kind of rule.
    ("### tuple ### allow any 22 0.0.0.0/0 any 0.0.0.0/0 in", False),
    ("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in_eth0", False),
    ("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 out", False),
    ("### tuple ### allow tcp 80 10.0.0.1 any 0.0.0.0/0 in", False),
    ("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in comment=7765620a", False),
    ("### tuple ### allow tcp 8000:8010 0.0.0.0/0 any 0.0.0.0/0 in", False),
])
def test_only_rules_in_the_forms_vigil_writes_are_read_from_ufw_files(line, simple):

    assert bool(re.match(SIMPLE_TUPLE, line)) is simple


