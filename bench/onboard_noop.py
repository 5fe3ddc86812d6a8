"""Benchmark: a no-op re-run of the full onboarding, vigil against the floor, Ansible and pyinfra; SSH round trips.

Run as root from the repository: `.venv/bin/python bench/onboard_noop.py [--rounds 5]` (or `invoke bench`,
which runs every benchmark). Uses sandbox VPSes vps1..vps10 (booting them when needed) and onboards them
with vigil first: vps1 gets every role (web and database), vps2..vps10 the web roles. Then:

  1. bench/peers/export.py writes vps1's desired state from vigil's own plan; the Ansible playbook and
     the pyinfra deploy in bench/peers/ check exactly that. Each peer must report 0 changed in check
     mode and in a real run before anything is measured: a peer that would change something is not
     doing the same job, and the benchmark stops.
  2. Each round runs, in an order rotated every round: vigil on vps1, the floor on vps1 (bench/peers/
     floor.py: one connection, the facts vigil's run reads in one command, nothing else), Ansible on
     vps1, pyinfra on vps1, vigil on vps1..vps10. Each is a fresh process, timed from start to exit, and
     must succeed with 0 changed (the floor: every fact answered). Each starts once this machine is
     quiet (the VPSes' own timers, apt's daily run or the probe, would otherwise land in one tool's
     figure and not another's).
  3. SSH round trips are counted on the VPSes themselves, from sshd's journal (LogLevel VERBOSE logs
     every session: a command or a file transfer) read from this machine, so counting adds none.

The tools run as their users run them, tuned the way their documentation advises (bench/peers/).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    INVENTORY,
    KEY,
    KNOWN_HOSTS,
    REPO,
    VPS_ROOTS,
    BenchError,
    Spread,
    alternating,
    invoke,
    markdown_table,
    run,
    sandbox_hosts,
    wait_until_quiet,
)
from bench.peers import ansible_peer, pyinfra_peer  # noqa: E402
from bench.peers.common import PEERS_BIN, PEERS_VENV, PeerHost  # noqa: E402
from bench.peers.export import export, floor_batch  # noqa: E402
from vigil.core.facts import Batch  # noqa: E402
from vigil.core.yaml_loader import load_yaml  # noqa: E402

WORK = REPO / "bench" / ".work"
# Issue 24: teams with a balancer, a database cluster and previews run 6 to 10 hosts.
HOSTS = 10
# vigil on every host at once, against vigil on vps1 alone.
MANY = f"vigil-{HOSTS}"
PEERS = {"ansible": ansible_peer, "pyinfra": pyinfra_peer}
# What each measured run is, in the order of the table.
RUNS = ["vigil", "floor", "ansible", "pyinfra", MANY]
# The issues' targets, as ratios of medians (issue 24: vigil within 1.3 times the floor).
TARGETS = {"vigil/floor": 1.3, "vigil/ansible": 0.1, "vigil/pyinfra": 0.5, f"{MANY}/vigil": 1.5}
FLOOR = REPO / "bench" / "peers" / "floor.py"


class SshdLog:
    """sshd's journal on one VPS, read from this machine: sessions (round trips) and logins since the last mark."""

    def __init__(self, host: str):
        journals = sorted((VPS_ROOTS / host / "root" / "var" / "log" / "journal").glob("*/"))
        if not journals:
            raise BenchError(f"{host}: no persistent journal under {VPS_ROOTS / host / 'root/var/log/journal'}")
        self.directory = journals[0]
        last = self._entries(["-n", "1"])
        self.cursor = last[-1]["__CURSOR"] if last else None

    def _entries(self, selection: list[str]) -> list[dict]:
        done = subprocess.run(["journalctl", "-D", str(self.directory), "-o", "json", "--no-pager", *selection],
                              capture_output=True, text=True, check=True)
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def since_mark(self) -> tuple[int, int]:
        """(sessions, logins) logged since the last call (or since this object was made); moves the mark."""
        time.sleep(0.3)  # journald has the lines already; this only rules out a line still on its way
        entries = self._entries(["--after-cursor", self.cursor] if self.cursor else [])
        if entries:
            self.cursor = entries[-1]["__CURSOR"]
        messages = [str(entry.get("MESSAGE", "")) for entry in entries]
        return (sum(message.startswith("Starting session:") for message in messages),
                sum(message.startswith("Accepted publickey") for message in messages))


@dataclass
class Measured:
    seconds: list[float] = field(default_factory=list)
    # vigil's runs: the longest of its hosts' own times (connection, facts, comparison, audit line), per run
    with_hosts: list[float] = field(default_factory=list)
    # host -> SSH sessions (round trips) of each run; host -> logins of each run
    sessions: dict[str, list[int]] = field(default_factory=dict)
    logins: dict[str, list[int]] = field(default_factory=dict)
    operations: int = 0


@dataclass
class NoopResult:
    rounds: int
    measured: dict[str, Measured]
    versions: dict[str, str]
    operations: dict[str, int]  # vigil's operations per host
    first_onboarding: float

    def ratio(self, a: str, b: str) -> float:
        return Spread.of(self.measured[a].seconds).median / Spread.of(self.measured[b].seconds).median

    def table(self) -> str:
        label = {"vigil": "vigil, 1 host", "floor": "the floor: one connection, the same facts in one command",
                 "ansible": "Ansible, 1 host", "pyinfra": "pyinfra, 1 host", MANY: f"vigil, {HOSTS} hosts"}
        rows = []
        for name in RUNS:
            measured = self.measured[name]
            trips = measured.sessions["vps1"]
            rows.append([label[name], Spread.of(measured.seconds).show(), str(measured.operations), counts(trips),
                         counts([n for runs in measured.logins.values() for n in runs])])
        return markdown_table(["no-op onboarding re-run", "wall time: median (min to max)",
                               "operations on vps1 (the floor: facts)",
                               "SSH round trips on vps1", "SSH logins per host"], rows)

    def round_trip_table(self) -> str:
        measured = self.measured[MANY]
        rows = [[host, str(self.operations[host]), counts(measured.sessions[host])]
                for host in sorted(measured.sessions)]
        return markdown_table([f"host (vigil, {HOSTS} hosts)", "operations", "SSH round trips per run"], rows)

    def constant_round_trips(self) -> bool:
        """Whether vigil asked every host, however many operations it has, the same number of round trips every run."""
        counts = {n for name in ("vigil", MANY) for runs in self.measured[name].sessions.values() for n in runs}
        return len(counts) == 1

    def verdicts(self) -> list[str]:
        lines = []
        for key, target in TARGETS.items():
            a, b = key.split("/")
            value = self.ratio(a, b)
            lines.append(f"{key.replace(MANY, f'vigil {HOSTS} hosts')}: {value:.3f} "
                         f"(target at most {target}): " + ("met" if value <= target else f"MISSED; {self.why(key)}"))
        return lines

    def why(self, key: str) -> str:
        """Where the time a missed target measures goes, from the runs' own figures."""
        median = {name: Spread.of(measured.seconds).median for name, measured in self.measured.items()}
        hosts = {name: Spread.of(self.measured[name].with_hosts).median for name in ("vigil", MANY)
                 if self.measured[name].with_hosts}
        if key == "vigil/floor" and "vigil" in hosts:
            return (f"of vigil's {median['vigil']:.2f} s, {hosts['vigil']:.2f} s are with the host (the connection, "
                    f"the facts, the comparison, the audit line) and {median['vigil'] - hosts['vigil']:.2f} s its own "
                    f"process (start-up, planning, the recap); the floor's whole run takes {median['floor']:.2f} s")
        if key == f"{MANY}/vigil" and hosts.keys() == {"vigil", MANY}:
            return (f"the slowest of {HOSTS} hosts takes {hosts[MANY]:.2f} s against {hosts['vigil']:.2f} s for one "
                    f"host alone: the {HOSTS} VPSes run on this machine's cores with vigil, so each host's own work "
                    "(sshd, sudo, the facts' commands) waits for the others'")
        return "see the table above"


def counts(values: list[int]) -> str:
    """A count that should not vary: '2', or '2 to 3' when it did."""
    return str(values[0]) if min(values) == max(values) else f"{min(values)} to {max(values)}"


def install_peers() -> dict[str, str]:
    """ansible-core and pyinfra from PyPI into bench/.venv-peers, pinned in bench/peers/requirements.txt."""
    if not (PEERS_BIN / "python").exists():
        run([sys.executable, "-m", "venv", str(PEERS_VENV)])
    run([str(PEERS_BIN / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(REPO / "bench" / "peers" / "requirements.txt")])
    return {name: peer.version() for name, peer in PEERS.items()}


def peer_host(work: Path, name: str, listing: Path = INVENTORY) -> PeerHost:
    """The host `name` as the peers reach it, from the sandbox inventory (or another `listing` sandbox.up
    wrote, with its sandbox.known_hosts beside it)."""
    data = load_yaml(listing)
    return PeerHost(name, data["hosts"][name]["address"], 22, data["defaults"]["admin_user"], KEY,
                    listing.parent / KNOWN_HOSTS.name, work / name / "manifest.json")


def vigil_changed(stdout: str) -> tuple[int, dict[str, int], float]:
    """(changed operations, host -> operations, the longest host's own seconds) from `provision.server --json`."""
    document = json.loads(stdout)
    hosts = document["hosts"]
    return (sum(host["changed"] for host in hosts), {host["host"]: len(host["operations"]) for host in hosts},
            max(host["seconds"] for host in hosts))


def check_peers(work: Path, target: list[PeerHost]) -> None:
    """Each peer, in check mode then for real, must find nothing to change on the host vigil settled."""
    for name, peer in PEERS.items():
        peer.prepare(work, target)
        for argv_env in (peer.check_command(work, target), peer.command(work, target)):
            done = run(*argv_env)
            changed = peer.changed(done.stdout, done.stderr)
            if changed:
                raise BenchError(
                    f"{name} would change {changed} thing(s) on vps1 that vigil left as wanted: it is not "
                    f"doing the same job; fix bench/peers/ ({shlex.join(argv_env[0])})\n{done.stdout[-4000:]}"
                )


def floor_run(target: PeerHost, script: Path, batch: Batch):
    """The floor, a fresh process start to exit; BenchError unless every fact was answered."""
    done = run([sys.executable, str(FLOOR), "--address", target.address, "--port", str(target.port),
                "--user", target.user, "--key", str(target.key), "--known-hosts", str(target.known_hosts),
                "--script", str(script)])
    try:
        batch.outputs(done.stdout)
    except ValueError as error:
        raise BenchError(f"the floor did not read every fact: {error}") from None
    return done


def rounds_of(
    rounds: int, hosts: list[str], work: Path, target: list[PeerHost], floor: tuple[Path, Batch]
) -> tuple[dict[str, Measured], dict[str, int]]:
    """The measured runs, RUNS in an order rotated every round: (name -> Measured, host -> vigil's operations)."""
    logs = {host: SshdLog(host) for host in hosts}
    measured = {name: Measured() for name in RUNS}
    operations: dict[str, int] = {}
    for round_ in range(rounds):
        for name in alternating(RUNS, round_):
            for log in logs.values():
                log.since_mark()
            wait_until_quiet()
            if name == "floor":
                done = floor_run(target[0], *floor)
                changed, count, touched = 0, len(floor[1].facts), ["vps1"]
            elif name in PEERS:
                peer = PEERS[name]
                done = run(*peer.command(work, target))
                changed, count = peer.changed(done.stdout, done.stderr), peer.operations(done.stdout, done.stderr)
                touched = ["vps1"]
            else:
                done = invoke("provision.server", "--json", *(["--limit=vps1"] if name == "vigil" else []))
                changed, per_host, with_hosts = vigil_changed(done.stdout)
                count, touched = per_host["vps1"], sorted(per_host)
                operations.update(per_host)
                measured[name].with_hosts.append(with_hosts)
            if changed:
                raise BenchError(f"{name}: a no-op re-run changed {changed} thing(s); nothing is measured on a host "
                                 f"that is not settled\n{done.stdout[-3000:]}")
            entry = measured[name]
            entry.seconds.append(done.seconds)
            entry.operations = count
            for host in touched:
                sessions, logins = logs[host].since_mark()
                entry.sessions.setdefault(host, []).append(sessions)
                entry.logins.setdefault(host, []).append(logins)
            print(f"round {round_ + 1}: {name:8} {done.seconds:6.2f} s, vps1: {entry.sessions['vps1'][-1]} round trips",
                  flush=True)
    return measured, operations


def measure(rounds: int) -> NoopResult:
    """Boot and onboard the hosts, check the peers do the same job, then the alternating rounds."""
    hosts = [f"vps{index}" for index in range(1, HOSTS + 1)]
    versions = install_peers()
    invoke("sandbox.up", f"--hosts={HOSTS}")
    if sorted(sandbox_hosts()) != sorted(hosts):
        raise BenchError(f"{INVENTORY.name}: expected exactly {', '.join(hosts)}; run `invoke sandbox.down` first")
    first = invoke("provision.server", "--json").seconds
    WORK.mkdir(mode=0o700, exist_ok=True)
    work = WORK / "peers"
    try:
        export("sandbox", "vps1", work)
        target = [peer_host(work, "vps1")]
        check_peers(work, target)
        batch = floor_batch("sandbox", "vps1")
        script = work / "vps1" / "facts.sh"
        script.write_text(batch.script)
        measured, operations = rounds_of(rounds, hosts, work, target, (script, batch))
    finally:
        # The manifest's files hold the host's secrets (its TLS key, the webhook's URL): gone with the run.
        shutil.rmtree(work, ignore_errors=True)
    return NoopResult(rounds, measured, versions, operations, first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    result = measure(parser.parse_args().rounds)
    print()
    print(result.table())
    print()
    print(result.round_trip_table())
    print()
    print("\n".join(result.verdicts()))


if __name__ == "__main__":
    main()
