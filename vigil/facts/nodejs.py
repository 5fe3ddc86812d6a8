"""Node.js: the version of the `node` on PATH."""

from __future__ import annotations

import re

from vigil.core.commands import script
from vigil.core.facts import Fact

VERSION = re.compile(r"^v?(\d+)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?$")


def parse_node_version(stdout: str, status: int) -> tuple[int, int, int] | None:
    match = VERSION.match(stdout.strip())
    if status != 0 or not match:
        return None
    return tuple(int(part) for part in (match.group(1), match.group(2) or 0, match.group(3) or 0))


# The version of the `node` on PATH. Debian's own /usr/bin/node (the nodejs package, Debian's or
# NodeSource's) is answered by dpkg, as "v" and the package version's upstream part: starting node
# to ask it costs a host more than most of its other facts. Any other node is asked itself.
NODE_VERSION = (
    'p=$(command -v node) || exit 127\n'
    'if [ "$p" = /usr/bin/node ] && v=$(dpkg-query -W -f "\\${db:Status-Status} \\${Version}" nodejs 2>/dev/null) '
    '&& [ "${v%% *}" = installed ]; then\n'
    '  v=${v#* }; v=${v#*:}; echo "v${v%%[!0-9.]*}"\n'
    'else "$p" --version; fi'
)


def node_version_fact() -> Fact:
    return Fact("node:version", script(NODE_VERSION, sudo=False), parse_node_version)
