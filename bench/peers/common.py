"""What the benchmark tells each peer tool about a host, and where the peer tools live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
# bench/run.py installs bench/peers/requirements.txt here: the peers are not vigil's dependencies.
PEERS_VENV = BENCH / ".venv-peers"
PEERS_BIN = PEERS_VENV / "bin"


@dataclass(frozen=True)
class PeerHost:
    """One sandbox VPS as a peer logs in to it: the admin user, root through `sudo -n`, the pinned host key.

    manifest: WORK/<name>/manifest.json written by bench/peers/export.py (what the host must be).
    known_hosts: OpenSSH known_hosts format (inventory/sandbox.known_hosts).
    """

    name: str
    address: str
    port: int
    user: str
    key: Path
    known_hosts: Path
    manifest: Path
