"""Node.js: the installed version checked against the apps' `engines` range (npm's range syntax)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vigil.core.operations import Operation, OperationError, noop
from vigil.facts.nodejs import node_version_fact


def _bounds(operator: str, text: str) -> list[tuple[str, tuple[int, int, int]]]:
    """One comparator as (op, version) constraints, npm-style: ^20 -> >=20.0.0 <21.0.0, 20.x -> >=20 <21."""
    parts = text.lstrip("v").split(".")
    wild = next((i for i, part in enumerate(parts) if part in ("x", "*")), len(parts))
    numbers = [int(part) for part in parts[:wild]] + [0] * (3 - wild)
    version = tuple(numbers[:3])
    given = min(wild, len(parts))
    if operator in ("", "=") and given < 3:
        operator = "~" if given else ">="  # 20 or 20.x means 20.*, a bare * means anything
        if given == 0:
            return []
    if operator == "^":
        major, minor, patch = version
        upper = (major + 1, 0, 0) if major else ((0, minor + 1, 0) if minor else (0, 0, patch + 1))
        return [(">=", version), ("<", upper)]
    if operator == "~":
        upper = (version[0] + 1, 0, 0) if given <= 1 else (version[0], version[1] + 1, 0)
        return [(">=", version), ("<", upper)]
    return [(operator or "=", version)]


def satisfies(version: tuple[int, int, int], engines: str) -> bool:
    """Whether `version` meets an npm `engines.node` range: `>=20`, `^20.11`, `18.x || >=20 <23` ..."""
    for alternative in engines.split("||"):
        tokens = re.findall(r"(>=|<=|>|<|=|\^|~)?\s*(v?[\dx*]+(?:\.[\dx*]+){0,2})", alternative)
        if not tokens:
            raise ValueError(f"not an engines range: {engines!r}")
        checks = [bound for operator, text in tokens for bound in _bounds(operator, text)]
        if all(_compare(version, operator, bound) for operator, bound in checks):
            return True
    return False


def _compare(version, operator, bound) -> bool:
    return {">=": version >= bound, ">": version > bound, "<=": version <= bound, "<": version < bound,
            "=": version == bound}[operator]


@dataclass
class NodeVersion(Operation):
    """Refuse a host whose Node.js misses any of the apps' `engines.node` ranges (checks, never changes).

    requirements: where each range comes from (a package.json, a var) -> the range.
    Example: NodeVersion({"examples/together-pray/backend/package.json": ">=18.18"})
    """

    requirements: dict[str, str]
    name: str = ""
    notify: tuple[str, ...] = ()

    def __post_init__(self):
        for engines in self.requirements.values():
            satisfies((0, 0, 0), engines)  # refuses a malformed range now, not on the host
        ranges = " and ".join(dict.fromkeys(self.requirements.values())) or "any version"
        self.name = self.name or f"Ensure Node.js satisfies the apps' engines ({ranges})."

    def facts(self):
        return [node_version_fact()]

    def plan(self, known):
        version = known["node:version"]
        if version is None:
            return noop("Node.js is not installed yet (check mode): checked on the real run")
        shown = "v" + ".".join(map(str, version))
        for source, engines in self.requirements.items():
            if not satisfies(version, engines):
                raise OperationError(
                    f"Node.js {shown} does not satisfy engines.node {engines!r} of {source}; "
                    "install a build that does (nodejs_packages) or run a release whose Node.js does"
                )
        return noop(
            f"Node.js {shown} satisfies {' and '.join(dict.fromkeys(self.requirements.values())) or 'any version'}"
        )
