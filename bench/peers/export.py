"""What vigil's onboarding makes of one host, as data the Ansible playbook and the pyinfra deploy apply.

The peers (bench/peers/onboard.yml, bench/peers/deploy.py) are written by hand, task by task,
the way a user of each tool would write them; what they ensure (every package, file, directory,
link, user, unit, firewall rule, PostgreSQL setting) comes from the very plan `provision.server`
runs, so the three tools are held to the same state. An operation kind this module does not know
is an error: a new kind of operation in a role must reach the peers before the benchmark runs.

Written to WORK/<host>/: manifest.json (0600) and files/<n> (each managed file's content, 0600,
secret ones included, as an Ansible or pyinfra user keeps them beside the playbook); WORK is 0700.

Usage: .venv/bin/python bench/peers/export.py --env=sandbox --limit=vps1 --work=bench/.work/peers
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from vigil.core.commands import Command, Secret  # noqa: E402
from vigil.core.connectors.ssh import SSHTransport  # noqa: E402
from vigil.core.facts import Batch  # noqa: E402
from vigil.core.inventory import load_inventory  # noqa: E402
from vigil.core.playbook import build_host_plans  # noqa: E402
from vigil.core.roles import load_playbook  # noqa: E402
from vigil.core.runner import PENDING_HANDLERS, HostPlan, first_facts  # noqa: E402
from vigil.facts.host import memory_fact  # noqa: E402
from vigil.operations.apt import AptPackages  # noqa: E402
from vigil.operations.files import Absent, Directory, File, Symlink  # noqa: E402
from vigil.operations.guarded import Guarded  # noqa: E402
from vigil.operations.nodejs import NodeVersion  # noqa: E402
from vigil.operations.postgresql import (  # noqa: E402
    HBA_BEGIN,
    HBA_END,
    PostgresClients,
    PostgresDatabase,
    PostgresRole,
    PostgresSettings,
)
from vigil.operations.system import Swapfile, TimeSync  # noqa: E402
from vigil.operations.systemd import SystemdUnit  # noqa: E402
from vigil.operations.ufw import Firewall  # noqa: E402
from vigil.operations.users import User  # noqa: E402
from vigil.vault.store import lookup  # noqa: E402

# The roles the peers have no counterpart for: monitoring from a monitor host (the benchmark's layout has
# none, so they only retire the old probe there; an e2e session's hosts are watched by one).
VIGIL_ONLY = ("exporters", "journal", "monitoring")
# The handlers the peers define (by these names): an operation notifying any other is an error.
HANDLERS = ("reload ssh", "confirm ssh login", "restart fail2ban", "reload nginx", "reload systemd",
            "restart postgresql", "reload postgresql")


class UnknownOperation(Exception):
    """An operation kind the peers have no counterpart for."""


def command_data(command: Command) -> dict:
    """A command as the peers run it: its words, and the user it runs as (root unless said)."""
    if command.stdin is not None:
        raise UnknownOperation(f"a command fed on stdin ({command.display()}) has no counterpart in the peers")
    words = []
    for token in command.argv:
        if isinstance(token, Secret):
            raise UnknownOperation(f"a command with a secret in its words ({command.display()}) has no counterpart")
        words.append(token)
    return {"argv": words, "user": command.as_user or ("root" if command.sudo else None)}


class Manifest:
    """One host's desired state, grouped by kind in the order the peers apply them."""

    def __init__(self, host_plan: HostPlan, files_dir: Path, memory_mb: int):
        self.host = host_plan.host
        self.files_dir = files_dir
        self.memory_mb = memory_mb
        self.data: dict = {
            "host": self.host.name,
            "vigil_operations": len(host_plan.operations),
            "packages": [], "users": [], "directories": [], "files": [], "links": [], "absent": [],
            "firewall": None, "postgres": None, "guarded": [], "services": [],
            "timesync": False, "swap": None, "node_ranges": [],
        }
        for operation in host_plan.operations:
            self.add(operation)
        for name, handler in host_plan.handlers.items():
            if name not in HANDLERS:
                raise UnknownOperation(f"handler {name!r} ({type(handler).__name__}) has no counterpart in the peers")

    def content(self, data: bytes) -> str:
        path = self.files_dir / str(len(list(self.files_dir.iterdir())))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return str(path)

    def notify(self, operation) -> list[str]:
        unknown = [name for name in operation.notify if name not in HANDLERS]
        if unknown:
            raise UnknownOperation(f"{operation.name}: notifies {unknown}, which the peers do not define")
        return list(operation.notify)

    def add(self, op) -> None:
        data = self.data
        if isinstance(op, AptPackages):
            data["packages"] += [name for name in op.packages if name not in data["packages"]]
        elif isinstance(op, User):
            keys = None
            if op.authorized_keys is not None:
                keys = self.content(("\n".join(op.authorized_keys) + "\n").encode())
            data["users"].append({"user": op.user, "shell": op.shell, "home": op.home, "system": op.system,
                                  "groups": list(op.groups), "authorized_keys": keys})
        elif isinstance(op, Directory):
            data["directories"].append({"path": op.path, "owner": op.owner, "group": op.group, "mode": op.mode,
                                        "notify": self.notify(op)})
        elif isinstance(op, File):
            data["files"].append({"path": op.path, "src": self.content(op.content), "owner": op.owner,
                                  "group": op.group, "mode": op.mode, "replace": op.replace, "secret": op.secret,
                                  "validate": list(op.validate) or None, "backup": op.backup,
                                  "notify": self.notify(op)})
        elif isinstance(op, Symlink):
            data["links"].append({"path": op.path, "target": op.target, "notify": self.notify(op)})
        elif isinstance(op, Absent):
            data["absent"].append({"path": op.path, "notify": self.notify(op)})
        elif isinstance(op, Firewall):
            data["firewall"] = {"rules": list(op.rules), "incoming": op.incoming, "outgoing": op.outgoing}
        elif isinstance(op, (PostgresSettings, PostgresRole, PostgresDatabase, PostgresClients)):
            self.add_postgres(op)
        elif isinstance(op, Guarded):
            data["guarded"].append({"name": op.name, "creates": op.creates,
                                    "unless": command_data(op.unless) if op.unless else None,
                                    "commands": [command_data(command) for command in op.commands],
                                    "notify": self.notify(op)})
        elif isinstance(op, SystemdUnit):
            data["services"].append({"unit": op.unit, "enabled": op.enabled, "running": op.running})
        elif isinstance(op, TimeSync):
            data["timesync"] = True
        elif isinstance(op, Swapfile):
            data["swap"] = {"path": op.path, "size_mb": op.size_mb}
        elif isinstance(op, NodeVersion):
            data["node_ranges"] += list(dict.fromkeys(op.requirements.values()))
        else:
            raise UnknownOperation(f"{self.host.name}: {op.name} is a {type(op).__name__}, which the peers "
                                   "have no counterpart for; add it to bench/peers/ (export.py and both peers)")

    def add_postgres(self, op) -> None:
        postgres = self.data["postgres"] = self.data["postgres"] or {}
        if isinstance(op, PostgresSettings):
            postgres["settings"] = op.wanted(self.memory_mb)
            postgres["settings_notify"] = self.notify(op)
        elif isinstance(op, PostgresRole):
            # The peers check the role exists and may log in; vigil also checks its password (SCRAM).
            postgres["role"] = op.role
        elif isinstance(op, PostgresDatabase):
            postgres["database"], postgres["owner"] = op.database, op.owner
        elif isinstance(op, PostgresClients):
            postgres["hba"] = {"begin": HBA_BEGIN, "end": HBA_END, "lines": op.lines(), "notify": self.notify(op)}


def host_memory_mb(inventory, host) -> int:
    """The host's memory as vigil reads it (max_connections: auto is sized from it): setup, not measured."""
    fact = memory_fact()
    with SSHTransport(host, inventory.known_hosts, inventory.env) as ssh:
        result = ssh.run(fact.command)
    return fact.parse(result.stdout, result.status)


def export(env: str, limit: str, work: Path) -> list[Path]:
    """Write WORK/<host>/manifest.json for each host `limit` selects; returns their paths."""
    inventory = load_inventory(env)
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o700)
    written = []
    roles = [role.name for play in load_playbook("onboard") for role in play.roles if role.name not in VIGIL_ONLY]
    for host_plan in build_host_plans(inventory, "onboard", limit, {}, lookup(env), only_roles=roles):
        if host_plan.refused:
            raise SystemExit(f"{host_plan.host.name}: {host_plan.refused.step}: {host_plan.refused.reason}")
        directory = work / host_plan.host.name
        files = directory / "files"
        for old in (files.iterdir() if files.is_dir() else ()):
            old.unlink()
        files.mkdir(parents=True, exist_ok=True, mode=0o700)
        manifest = Manifest(host_plan, files, host_memory_mb(inventory, host_plan.host))
        path = directory / "manifest.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(manifest.data, out, indent=2)
        written.append(path)
    return written


def floor_facts(host_plan: HostPlan) -> Batch:
    """What vigil's no-op run asks the host in its first round trip (vigil.core.runner.first_facts), as the one
    script the floor runs (bench/peers/floor.py)."""
    return Batch.of(first_facts([op.facts() for op in host_plan.operations], PENDING_HANDLERS))


def floor_batch(env: str, host: str) -> Batch:
    """floor_facts of `host`'s whole onboarding plan: every role's, the ones the peers leave out included."""
    (host_plan,) = build_host_plans(load_inventory(env), "onboard", host, {}, lookup(env))
    if host_plan.refused:
        raise SystemExit(f"{host_plan.host.name}: {host_plan.refused.step}: {host_plan.refused.reason}")
    return floor_facts(host_plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="sandbox")
    parser.add_argument("--limit", required=True)
    parser.add_argument("--work", type=Path, required=True)
    arguments = parser.parse_args()
    for path in export(arguments.env, arguments.limit, arguments.work):
        print(path)


if __name__ == "__main__":
    main()
