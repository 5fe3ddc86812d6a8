"""The Ansible peer: `ansible-playbook bench/peers/ansible/onboard.yml` over an inventory prepare() writes.

What it runs: ansible-core's ansible-playbook from bench/.venv-peers on the hosts given, each host's
desired state read from its manifest (bench/peers/export.py; the inventory's `vigil_manifest`).
ANSIBLE_CONFIG points at bench/peers/ansible/ansible.cfg, whose speed settings are an expert's usual
ones: no fact gathering, the interpreter named (no discovery), pipelining, ControlMaster with
ControlPersist=60s (Ansible's default, without -C), strategy free, forks 20.

Logins: as the host's admin user with exactly its key (IdentitiesOnly, no agent, no ~/.ssh/config),
its known_hosts file and strict host key checking; root through `sudo -n` (become).

prepare() writes one file, WORK/ansible-inventory.json; the run's other input is each host's manifest.

Counts come from the PLAY RECAP, summed over hosts: `changed` is tasks that changed (a loop counts
once however many of its items changed); operations are tasks run or checked (ok, which includes
changed, plus failed), skipped tasks left out as Ansible leaves them out of ok.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from bench.peers.common import PEERS_BIN, PeerHost

TOOL = "ansible"
HERE = Path(__file__).resolve().parent / "ansible"
PLAYBOOK = HERE / "onboard.yml"
CONFIG = HERE / "ansible.cfg"
INVENTORY = "ansible-inventory.json"  # in `work`, beside the hosts' manifest directories
# One line per host: "vps1   : ok=22   changed=0    unreachable=0    failed=0    skipped=19 ..."
RECAP_LINE = re.compile(r"^(\S+)[ \t]*:[ \t]*((?:\w+=\d+[ \t]*)+)$", re.MULTILINE)
COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def version() -> str:
    """The tool and its version as ansible-playbook --version gives it, e.g. "ansible-core 2.19.14"."""
    out = subprocess.run([str(PEERS_BIN / "ansible-playbook"), "--version"], capture_output=True, text=True,
                         check=True, stdin=subprocess.DEVNULL).stdout
    match = re.search(r"\[core ([^\]]+)\]", out)
    if not match:
        raise ValueError(f"ansible-playbook --version: no core version in {out[:200]!r}")
    return f"ansible-core {match.group(1)}"


def inventory(hosts: list[PeerHost]) -> dict:
    """The YAML inventory (as JSON) for these hosts: where and how to log in, and each one's manifest."""
    return {"all": {"hosts": {host.name: {
        "ansible_host": host.address,
        "ansible_port": host.port,
        "ansible_user": host.user,
        "ansible_ssh_private_key_file": str(host.key),
        # Added to ansible.cfg's ssh_args, which already turn strict checking on and the global file off.
        "ansible_ssh_common_args": shlex.join(["-o", f"UserKnownHostsFile={host.known_hosts}",
                                               "-o", "StrictHostKeyChecking=yes"]),
        "vigil_manifest": str(host.manifest),
    } for host in hosts}}}


def prepare(work: Path, hosts: list[PeerHost]) -> None:
    """Write WORK/ansible-inventory.json (0600) for exactly these hosts."""
    path = work / INVENTORY
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(inventory(hosts), indent=2) + "\n")


def _argv(work: Path, hosts: list[PeerHost], *extra: str) -> tuple[list[str], dict[str, str]]:
    argv = [str(PEERS_BIN / "ansible-playbook"), "-i", str(work / INVENTORY),
            "--limit", ",".join(host.name for host in hosts), *extra, str(PLAYBOOK)]
    return argv, {"ANSIBLE_CONFIG": str(CONFIG)}


def command(work: Path, hosts: list[PeerHost]) -> tuple[list[str], dict[str, str]]:
    """One real run of the playbook on these hosts."""
    return _argv(work, hosts)


def check_command(work: Path, hosts: list[PeerHost]) -> tuple[list[str], dict[str, str]]:
    """The same in check mode, with diffs (secret files' diffs are hidden by no_log)."""
    return _argv(work, hosts, "--check", "--diff")


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """host -> {ok, changed, unreachable, failed, skipped, rescued, ignored} from the PLAY RECAP."""
    stdout = COLOUR.sub("", stdout)
    if "PLAY RECAP" not in stdout:
        raise ValueError("no PLAY RECAP in ansible-playbook's output")
    tail = stdout.rsplit("PLAY RECAP", 1)[1]
    hosts = {}
    for name, counts in RECAP_LINE.findall(tail):
        hosts[name] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counts)}
    if not hosts or not all({"ok", "changed", "failed"} <= set(counts) for counts in hosts.values()):
        raise ValueError("the PLAY RECAP holds no host's counts")
    return hosts


def changed(stdout: str, stderr: str) -> int:
    """Tasks the run reported changed, summed over hosts; ValueError when a host failed or was unreachable
    (its run stopped early: what the rest would have changed is unknown)."""
    hosts = recap(stdout)
    stopped = sorted(name for name, counts in hosts.items() if counts["failed"] or counts.get("unreachable"))
    if stopped:
        raise ValueError(f"ansible-playbook stopped early on {', '.join(stopped)}: failed or unreachable")
    return sum(counts["changed"] for counts in hosts.values())


# One line per module run: a task's result, or each item's in a loop ("ok: [vps1] => (item=/etc/motd)").
RESULT_LINE = re.compile(r"^(ok|changed|failed|fatal): \[", re.MULTILINE)


def operations(stdout: str, stderr: str) -> int:
    """Module runs (a looped task's items each count, as each is a module run on the host), summed over
    hosts; skipped ones left out. The recap's ok= counts a looped task once, whatever its items."""
    recap(stdout)  # no recap: the run's output cannot be trusted to be whole
    return len(RESULT_LINE.findall(COLOUR.sub("", stdout)))
