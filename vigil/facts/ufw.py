"""ufw: whether the firewall is installed and active, its default policies and the rules added.

ufw itself is a Python program whose start costs more than every other fact of a host together, so what
it would say is read from where it keeps it (iptables' chains, its rules files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vigil.core.commands import script
from vigil.core.facts import Fact


@dataclass(frozen=True)
class UfwState:
    """Whether ufw is installed and active, its default policies, and the rules added (`ufw show added`)."""

    installed: bool
    active: bool = False
    defaults: dict = field(default_factory=dict)
    rules: tuple[str, ...] = ()


# The rules ufw keeps in /etc/ufw/user.rules and user6.rules, as "### tuple ###" lines, in the forms vigil
# writes: ACTION PROTO DPORT DST SPORT SRC DIRECTION, to any address, from anywhere or one source.
SIMPLE_TUPLE = r"^### tuple ### (allow|deny|reject|limit) (tcp|udp) [0-9]+ (0\.0\.0\.0/0|::/0) any [0-9a-fA-F.:/]+ in$"
ANYWHERE = ("0.0.0.0/0", "::/0")


def rule_of_tuple(line: str) -> str:
    """A simple tuple line in ufw's own words, as `ufw show added` prints them (without the "ufw ")."""
    action, proto, port, _, _, source, _ = line.removeprefix("### tuple ###").split()
    if source in ANYWHERE:
        return f"{action} {port}/{proto}"
    return f"{action} from {source} to any port {port} proto {proto}"


def parse_ufw(stdout: str, status: int) -> UfwState:
    """Parse the status and default lines, then either the rules' tuples or `ufw show added`."""
    if status == 127 or ("@@added" not in stdout and "@@tuples" not in stdout):
        return UfwState(installed=False)
    marker = "@@added" if "@@added" in stdout else "@@tuples"
    status_part, rules_part = stdout.split(marker, 1)
    active = "Status: active" in status_part
    defaults = {}
    match = re.search(r"^Default: (.*)$", status_part, re.MULTILINE)
    if match:
        for item in match.group(1).split(","):
            policy = re.match(r"\s*(\w+) \((\w+)\)", item)
            if policy:
                defaults[policy.group(2)] = policy.group(1)
    if marker == "@@tuples":
        # A rule for any address is kept once per IP version; ufw lists it once.
        rules = tuple(
            dict.fromkeys(rule_of_tuple(line) for line in rules_part.splitlines() if line.startswith("### tuple"))
        )
    else:
        rules = tuple(line[4:].strip() for line in rules_part.splitlines() if line.startswith("ufw "))
    return UfwState(True, active, defaults, rules)


def ufw_fact() -> Fact:
    """ufw's state; the default policies are only shown while active, so they are read from its config too.

    ufw itself is a Python program whose start costs more than every other fact of a host together, so
    what it would say is read from where it keeps it: active is what `ufw status` calls active (its chains
    are loaded, asked of iptables), and rules in the forms vigil writes come from ufw's rules files; any
    other rule there makes the fact ask `ufw show added`, which words every kind of rule.
    """
    return Fact(
        "ufw",
        script(
            "command -v ufw >/dev/null || exit 127; "
            "for chain in input output forward; do "
            'iptables -w 5 -n -L "ufw-user-$chain" >/dev/null 2>&1 || inactive=1; done; '
            'if [ -n "$inactive" ]; then echo "Status: inactive"; else echo "Status: active"; fi; '
            ". /etc/default/ufw 2>/dev/null; "
            'echo "Default: $(echo ${DEFAULT_INPUT_POLICY:-DROP} | tr A-Z a-z) (incoming), '
            '$(echo ${DEFAULT_OUTPUT_POLICY:-ACCEPT} | tr A-Z a-z) (outgoing)"; '
            # With IPV6=no ufw leaves user6.rules alone, and so does this.
            'rules=/etc/ufw/user.rules; [ "$IPV6" = yes ] && rules="$rules /etc/ufw/user6.rules"; '
            'tuples=$(grep -h "^### tuple ###" $rules 2>/dev/null); '
            'if [ -z "$tuples" ] || printf "%s\\n" "$tuples" | grep -qvE "$1"; then echo @@added; ufw show added; '
            'else echo @@tuples; printf "%s\\n" "$tuples"; fi',
            SIMPLE_TUPLE,
        ),
        parse_ufw,
    )
