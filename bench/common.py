"""What every benchmark shares: running vigil's tasks, the sandbox's hosts, and how figures are summarised."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vigil.core.yaml_loader import load_yaml

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "sandbox.yml"
KNOWN_HOSTS = REPO / "inventory" / "sandbox.known_hosts"
KEY = REPO / ".vigil" / "sandbox" / "id_ed25519"
CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
# Each VPS's root filesystem as this machine sees it: its journal is read from here, without SSH.
VPS_ROOTS = Path("/var/lib/vigil/sandbox")
# Every Python program timed here (vigil's tasks and the Python peers alike) keeps its compiled bytecode, as
# an installed one does: a shell that says PYTHONDONTWRITEBYTECODE would have each run compile every module.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


class BenchError(Exception):
    """A benchmark cannot go on (a task failed, a peer changed something); the message says which and why."""


@dataclass
class Ran:
    seconds: float
    stdout: str
    stderr: str


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> Ran:
    """One local command, stdin closed, output captured; its wall time. BenchError if it fails."""
    began = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          stdin=subprocess.DEVNULL, timeout=timeout)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise BenchError(f"`{shlex.join(argv)}` exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return Ran(seconds, done.stdout, done.stderr)


def invoke(*args: str, env: dict[str, str] | None = None) -> Ran:
    """An invoke task of this repository, as a user runs it (a fresh process)."""
    return run([sys.executable, "-m", "invoke", *args], env=env)


def sandbox_hosts() -> dict[str, dict]:
    """The sandbox inventory's hosts: name -> {address, ...}."""
    return load_yaml(INVENTORY)["hosts"]


def admin_user() -> str:
    return load_yaml(INVENTORY)["defaults"]["admin_user"]


def ssh_argv(address: str) -> list[str]:
    """ssh to a VPS as the admin user, with the sandbox's key and pinned host keys; the command follows."""
    return ["ssh", "-i", str(KEY), "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-F", "/dev/null", f"{admin_user()}@{address}"]


def on_host(address: str, script: str, timeout: float = 3600) -> str:
    """A shell script as root on a VPS (the admin user, through sudo); its stdout."""
    done = subprocess.run([*ssh_argv(address), "sudo -n sh -s"], input=script, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"on {address}: exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


@dataclass(frozen=True)
class Spread:
    """Median, min and max of repeated measurements."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        if not values:
            raise ValueError("no measurements")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def show(self, unit: str = "s", digits: int = 2) -> str:
        """'1.23 s (1.20 to 1.31)': the median, then min to max."""
        median = f"{self.median:.{digits}f} {unit}".rstrip()
        return f"{median} ({self.low:.{digits}f} to {self.high:.{digits}f})"


def busy_cores(seconds: float) -> float:
    """How many of this machine's cores were busy (not idle, not waiting on I/O) over the next `seconds`."""
    def busy_and_total() -> tuple[int, int]:
        ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)
    busy, total = busy_and_total()
    time.sleep(seconds)
    busy_after, total_after = busy_and_total()
    return (busy_after - busy) / max(1, total_after - total) * (os.cpu_count() or 1)


def wait_until_quiet(at_most: float = 0.25, give_up_after: float = 30.0) -> float:
    """Wait until the machine (which runs the sandbox VPSes too) is nearly idle: a timer on a VPS
    (apt's daily run, the probe) must not land inside one tool's measurement and not another's.
    Returns the busy cores last seen; after `give_up_after` seconds it goes on anyway.

    First what earlier runs left in the page cache is written out: the VPSes share this machine's disk, and
    the kernel flushing one backup's 80 MB during the next tool's run was timed as that tool's (a tool run
    right after another took up to 1 s longer than when it ran first, bench/results/2026-12-07.md). Busy
    cores do not show writeback: it waits on I/O, which they leave out."""
    os.sync()
    deadline = time.monotonic() + give_up_after
    busy = busy_cores(0.5)
    while busy > at_most and time.monotonic() < deadline:
        busy = busy_cores(0.5)
    return busy


# The summary table's columns: a full run's (bench/run.py), and a run of one benchmark on its own that has a
# summary the README shows until the next full run.
SUMMARY_COLUMNS = ["what", "vigil (median)", "compared with (median)", "ratio or result"]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a cell's own "|" (a shell pipe) is escaped, or it would split the cell."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def alternating(names: list, round_: int) -> list:
    """The order of round `round_` (0-based): rotated by one each round, so none always goes first."""
    shift = round_ % len(names)
    return names[shift:] + names[:shift]


def machine() -> list[str]:
    """What the figures were measured on: this machine and the sandbox VPSes."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    release = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        release[key] = value.strip('"')
    return [
        f"{os.cpu_count()} cores ({model}), {memory_kb / 1024 / 1024:.0f} GiB memory",
        f"{release.get('PRETTY_NAME', 'unknown OS')}, Linux {platform.release()}, Python {platform.python_version()}",
        "sandbox VPSes: systemd-nspawn Debian 13 containers on this machine, each in its own network namespace",
    ]


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    )
    return (done.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def run_alone(name: str, measure, report, rounds: int) -> None:
    """A benchmark run on its own (not a full `invoke bench`): measure(rounds), the sandbox removed
    whatever happens, then report(result, rounds, minutes) printed and written to
    bench/results/<date>-<name>.md."""
    began = time.monotonic()
    try:
        result = measure(rounds)
    except BenchError as error:
        sys.exit(f"bench: {error}")
    finally:
        invoke("sandbox.down")
    text = report(result, rounds, (time.monotonic() - began) / 60)
    path = REPO / "bench" / "results" / f"{time.strftime('%Y-%m-%d', time.gmtime())}-{name}.md"
    path.write_text(text)
    print(text)
    print(f"written: {path.relative_to(REPO)}")
