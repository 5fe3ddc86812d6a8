"""ufw: the firewall converged to exactly the wanted rules and default policies.

Rules are added before anything is removed or the firewall is enabled, and
enabling keeps established connections, so the SSH session vigil runs over
survives; the role refuses a rule set without the SSH port.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Sequence

from vigil.core.commands import cmd
from vigil.core.errors import ConfigError
from vigil.core.operations import Operation, change, noop
from vigil.facts.ufw import UfwState, ufw_fact

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
