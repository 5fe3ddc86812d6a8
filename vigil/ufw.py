"""ufw: the firewall's state as a fact, and the operation that converges it.

Rules are added before anything is removed or the firewall is enabled, and
enabling keeps established connections, so the SSH session vigil runs over
survives; the role refuses a rule set without the SSH port.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Sequence

from vigil.commands import cmd, script
from vigil.errors import ConfigError
from vigil.facts import Fact
from vigil.operations import Operation, change, noop

RULE_PATTERN = re.compile(
    r"^(allow|limit|deny|reject) (?:([0-9]{1,5})/(tcp|udp)"
    r"|from [0-9a-fA-F.:/]+ to any port [0-9]{1,5} proto (?:tcp|udp))$"
)
POLICIES = ("allow", "deny", "reject")


def ufw_source(value: str, where: str) -> str:
    """An address or network as ufw stores it (host bits masked, /32 and /128 dropped, IPv6 compressed),
    so the rule vigil wants compares equal to the rule ufw lists."""
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an IP address or network") from None
    return str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)


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
        rules = tuple(dict.fromkeys(rule_of_tuple(line) for line in rules_part.splitlines() if line.startswith("### tuple")))
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
    return Fact("ufw", script(
        'command -v ufw >/dev/null || exit 127; '
        'for chain in input output forward; do iptables -w 5 -n -L "ufw-user-$chain" >/dev/null 2>&1 || inactive=1; done; '
        'if [ -n "$inactive" ]; then echo "Status: inactive"; else echo "Status: active"; fi; '
        '. /etc/default/ufw 2>/dev/null; '
        'echo "Default: $(echo ${DEFAULT_INPUT_POLICY:-DROP} | tr A-Z a-z) (incoming), '
        '$(echo ${DEFAULT_OUTPUT_POLICY:-ACCEPT} | tr A-Z a-z) (outgoing)"; '
        # With IPV6=no ufw leaves user6.rules alone, and so does this.
        'rules=/etc/ufw/user.rules; [ "$IPV6" = yes ] && rules="$rules /etc/ufw/user6.rules"; '
        'tuples=$(grep -h "^### tuple ###" $rules 2>/dev/null); '
        'if [ -z "$tuples" ] || printf "%s\\n" "$tuples" | grep -qvE "$1"; then echo @@added; ufw show added; '
        'else echo @@tuples; printf "%s\\n" "$tuples"; fi', SIMPLE_TUPLE), parse_ufw)


# /etc/default/ufw spells policies as iptables targets.
_TARGET_TO_POLICY = {"drop": "deny", "accept": "allow", "reject": "reject"}


@dataclass
class Firewall(Operation):
    """ufw with exactly these rules and default policies, enabled.

    rules: "limit 22/tcp", "allow 443/tcp", "allow from 10.0.0.5 to any port 22 proto tcp" (ufw's
    own words, in order: rules for one source first).
    Example: Firewall(["limit 22/tcp", "allow 80/tcp", "allow 443/tcp"])
    """

    rules: Sequence[str]
    incoming: str = "deny"
    outgoing: str = "allow"
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        for rule in self.rules:
            if not RULE_PATTERN.match(rule):
                raise ValueError(f"not a firewall rule like 'allow 443/tcp': {rule!r}")
        for policy in (self.incoming, self.outgoing):
            if policy not in POLICIES:
                raise ValueError(f"a default policy is one of {', '.join(POLICIES)}, got {policy!r}")
        self.name = self.name or f"Ensure the firewall allows only: {', '.join(self.rules)}."

    def facts(self):
        return [ufw_fact()]

    def plan(self, known):
        state: UfwState = known["ufw"]
        if not state.installed:
            return change("configure ufw once it is installed", *self._commands(UfwState(True)))
        commands = self._commands(state)
        if not commands:
            return noop(f"ufw active with exactly {', '.join(self.rules)}")
        return change(", ".join(_describe(command.argv[1:]) for command in commands), *commands)

    def _commands(self, state: UfwState):
        commands = []
        for rule in self.rules:
            if rule in state.rules:
                continue
            # First match wins in ufw: a rule for one source must come before the port's general rule.
            # `prepend`, not `insert 1`: ufw refuses position 1 for an IPv6 rule while IPv4 rules come first.
            at_top = " from " in f" {rule} " and state.rules
            commands.append(cmd("ufw", "prepend", *rule.split()) if at_top else cmd("ufw", *rule.split()))
        commands += [cmd("ufw", "delete", *rule.split()) for rule in state.rules if rule not in self.rules]
        defaults = {direction: _TARGET_TO_POLICY.get(policy, policy) for direction, policy in state.defaults.items()}
        for direction, policy in (("incoming", self.incoming), ("outgoing", self.outgoing)):
            if defaults.get(direction) != policy:
                commands.append(cmd("ufw", "default", policy, direction))
        if not state.active:
            commands.append(cmd("ufw", "--force", "enable"))
        return commands


def _describe(argv) -> str:
    return " ".join(str(token) for token in argv)
