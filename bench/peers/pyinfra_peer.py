"""pyinfra as a benchmark peer: bench/peers/pyinfra/deploy.py run on the hosts' manifests.

Runs `pyinfra -y --no-wait --json WORK/pyinfra_inventory.py bench/peers/pyinfra/deploy.py` (the check
run: `--dry --json`, no -y, so pyinfra works out what would change). Speed settings, as pyinfra
documents them: -y skips the separate change-detection pass (facts are read once, as each operation
runs), --no-wait lets each host go on without waiting for the others, all hosts in parallel over one
paramiko connection each (its defaults); the deploy's docstring says the rest.

Login: exactly the host's key and known_hosts (strict host key checking), no agent, no ~/.ssh/config
(ssh_config_file=/dev/null), as the admin user with `sudo -n` to root (_sudo in host data).
--json prints one JSON document on stdout: the plan (dry run: which hosts each operation would
change) and, after a real run, the results (which hosts each operation changed, left alone, failed).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.peers.common import PEERS_BIN, PeerHost

TOOL = "pyinfra"
DEPLOY = Path(__file__).resolve().parent / "pyinfra" / "deploy.py"
INVENTORY = "pyinfra_inventory.py"
# Handlers are operations named "handler: ..." that run only when what they watch changed
# (`_if`); pyinfra reports one that did not run as "no change", so operations() leaves it out.
HANDLER_PREFIX = "handler: "


def version() -> str:
    done = subprocess.run([str(PEERS_BIN / "pyinfra"), "--version"], capture_output=True, text=True, check=True)
    return f"pyinfra {done.stdout.split()[-1].lstrip('v')}"


def host_data(host: PeerHost) -> dict:
    return {
        "ssh_hostname": host.address,
        "ssh_port": host.port,
        "ssh_user": host.user,
        "ssh_key": str(host.key),
        "ssh_known_hosts_file": str(host.known_hosts),
        "ssh_strict_host_key_checking": "yes",
        "ssh_config_file": "/dev/null",
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "ssh_forward_agent": False,
        "ssh_paramiko_connect_kwargs": {"allow_agent": False, "look_for_keys": False},
        "_sudo": True,
        "manifest": str(host.manifest),
    }


def prepare(work: Path, hosts: list[PeerHost]) -> None:
    """WORK/pyinfra_inventory.py: the hosts, how to log in to each, and where its manifest is."""
    entries = "".join(f"    ({host.name!r}, {host_data(host)!r}),\n" for host in hosts)
    text = f'"""pyinfra inventory written by bench/peers/pyinfra_peer.py."""\n\nhosts = [\n{entries}]\n'
    (work / INVENTORY).write_text(text)


def _argv(work: Path, *flags: str) -> list[str]:
    return [str(PEERS_BIN / "pyinfra"), *flags, "--json", str(work / INVENTORY), str(DEPLOY)]


def command(work: Path, hosts: list[PeerHost]) -> tuple[list[str], dict[str, str]]:
    return _argv(work, "-y", "--no-wait"), {"PYINFRA_PROGRESS": "off"}


def check_command(work: Path, hosts: list[PeerHost]) -> tuple[list[str], dict[str, str]]:
    return _argv(work, "--dry"), {"PYINFRA_PROGRESS": "off"}


def _document(stdout: str) -> dict:
    """The JSON document --json prints (the last line starting with '{')."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                document = json.loads(line)
            except ValueError:
                break
            if isinstance(document, dict) and "plan" in document:
                return document
    raise ValueError("no pyinfra --json document on stdout")


def changed(stdout: str, stderr: str) -> int:
    """Hosts x operations changed (a real run) or that would change (a dry run; handlers, which pyinfra
    can only call conditional there, are left out)."""
    document = _document(stdout)
    if document["results"] is None:
        return sum(len(op["hosts_with_change"]) for op in document["plan"])
    return sum(len(op["success"]) for op in document["results"]["operations"])


def operations(stdout: str, stderr: str) -> int:
    """Hosts x operations run (changed, unchanged or failed), handlers that did not run left out. A dry
    run's plan names only the hosts an operation would change, so there each operation it planned counts
    once (exact for one host), handlers left out."""
    document = _document(stdout)
    if document["results"] is None:
        return sum(1 for op in document["plan"] if not _handler(op))
    return sum(len(op["success"]) + len(op["error"]) + (0 if _handler(op) else len(op["no_change"]))
               for op in document["results"]["operations"])


def _handler(op: dict) -> bool:
    return any(name.startswith(HANDLER_PREFIX) for name in op["names"])
