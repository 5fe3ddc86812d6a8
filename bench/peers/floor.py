"""The floor under a no-op onboarding run: the least that checking one host's state can cost. One SSH
connection with paramiko (vigil's own SSH library), the host key pinned as vigil pins it, then the very
facts vigil's no-op run reads, in one command (the script bench/peers/export.py writes from vigil's own
plan for the host), and nothing else: no planning, no comparison, no audit line, no report. It imports
paramiko and the standard library only, and runs as a fresh process timed from start to exit, as vigil
and the peers are.

Usage (bench/onboard_noop.py runs it):
    python bench/peers/floor.py --address 10.213.1.2 --user vigil --key KEY --known-hosts KNOWN_HOSTS \
        --script WORK/vps1/facts.sh

Prints the facts' answers (the batch's framed output, which the benchmark checks for every frame) and
exits with the remote command's status.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import paramiko

# The facts run as root through sudo, which never prompts: vigil's batch command, rendered for a login
# user that is not root (vigil.core.commands.Command.render).
REMOTE = "sudo -n -H -- sh -s"
TIMEOUT = 30


def read_facts(address: str, port: int, user: str, key: Path, known_hosts: Path, script: bytes) -> tuple[bytes, int]:
    """(stdout, exit status) of the facts script on the host: one connection, one command."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))  # the inventory's file alone: ~/.ssh/known_hosts is not trusted
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    # Nagle's algorithm off, as vigil's connector (and OpenSSH's client) set it: the floor gets every saving vigil has.
    sock = socket.create_connection((address, port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        client.connect(address, port=port, username=user, key_filename=str(key), look_for_keys=False,
                       allow_agent=False, timeout=TIMEOUT, sock=sock)
        stdin, stdout, _ = client.exec_command(REMOTE, timeout=TIMEOUT)
        stdin.write(script)
        stdin.channel.shutdown_write()
        output = stdout.read()
        return output, stdout.channel.recv_exit_status()
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=22)
    parser.add_argument("--user", required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--known-hosts", type=Path, required=True)
    parser.add_argument("--script", type=Path, required=True)
    arguments = parser.parse_args()
    output, status = read_facts(arguments.address, arguments.port, arguments.user, arguments.key,
                                arguments.known_hosts, arguments.script.read_bytes())
    sys.stdout.buffer.write(output)
    return status


if __name__ == "__main__":
    sys.exit(main())
