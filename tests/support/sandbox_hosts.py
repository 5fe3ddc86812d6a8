"""The sandbox driven as a person drives it: `invoke ...` in a subprocess, and the hosts read back over
plain OpenSSH with the pinned keys. The e2e tests and the benchmarks' own checks share these."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from vigil.core.yaml_loader import load_yaml

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventory"
SANDBOX_KEY = REPO / ".vigil" / "sandbox" / "id_ed25519"
# The session's layout: vps1 the database and an app host, vps2 an app host, vps3 the backup host
# (the pgBackRest repository every env needs for its backups), vps4 the monitor host (Prometheus and
# Alertmanager, watching the others from outside).
HOSTS = 4
BACKUP_HOST = "vps3"
MONITOR_HOST = "vps4"
SESSION_HOSTS = tuple(f"vps{index}" for index in range(1, HOSTS + 1))


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)

    def host(self, name: str) -> dict:
        return next(host for host in self.json["hosts"] if host["host"] == name)


def invoke(*args: str, inventory: Path | None = None, timeout: float = 900, extra_env: dict | None = None,
           input: str | None = None) -> Run:
    """Run `invoke ARGS` from the repository, as a user would; returns exit code and output.

    extra_env: more environment (VIGIL_SECRETS...); input: what to type on stdin (else none).
    """
    env = {**os.environ, **(extra_env or {})}
    if inventory is not None:
        env["VIGIL_INVENTORY"] = str(inventory)
    completed = subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


SSH_OPTIONS = ["-i", str(SANDBOX_KEY), "-o", f"UserKnownHostsFile={INVENTORY / 'sandbox.known_hosts'}",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]


def ssh_as_root(address: str, remote: list[str], stdin: str) -> subprocess.CompletedProcess:
    """Run `remote` as root over OpenSSH with the pinned known_hosts: as the admin user (ops) through
    sudo once onboarding made root logins impossible, as root itself on a VPS not yet onboarded."""
    # ssh hands the remote shell one string: quote the argv into it.
    completed = subprocess.run(["ssh", *SSH_OPTIONS, f"ops@{address}", shlex.join(["sudo", "-n", *remote])],
                               capture_output=True, text=True, timeout=120, input=stdin)
    if completed.returncode == 255 and "Permission denied" in completed.stderr:
        completed = subprocess.run(["ssh", *SSH_OPTIONS, f"root@{address}", shlex.join(remote)],
                                   capture_output=True, text=True, timeout=120, input=stdin)
    return completed


def ssh(address: str, command: str, check: bool = True) -> str:
    """Run the shell `command` on a sandbox VPS as root (it travels on stdin, unquoted by ssh)."""
    completed = ssh_as_root(address, ["sh", "-s"], command)
    if check and completed.returncode != 0:
        raise AssertionError(f"ssh {address} {command!r} exited {completed.returncode}: {completed.stderr}")
    return completed.stdout


# The color whose port nginx's upstream for a service names (ports from the colors' env files).
LIVE_COLOR = r"""
port=$(sed -n 's/^upstream together_pray_{service} {{ server 127\.0\.0\.1:\([0-9]*\);.*/\1/p' \
  /etc/nginx/conf.d/together-pray-upstreams.conf)
for color in blue green; do
  grep -qx "PORT=$port" /etc/together-pray/{service}-$color.env && echo "$color"
done
true
"""


@dataclass
class Sandbox:
    addresses: dict[str, str]
    # The inventory file that lists these hosts: the session's, or a module's own (apart_layout).
    listing: Path = INVENTORY / "sandbox.yml"

    def ssh(self, host: str, command: str, check: bool = True) -> str:
        return ssh(self.addresses[host], command, check)

    def ssh_at(self, address: str, command: str, check: bool = True) -> str:
        """Like ssh, for a VPS the session did not boot itself (a module's extra hosts)."""
        return ssh(address, command, check)

    def live_color(self, host: str, service: str) -> str:
        """The color of `service` nginx sends visitors to on `host`: the one whose port its upstream names.
        Not "the one running": within the rollback window the color a deploy left runs too."""
        answer = self.ssh(host, LIVE_COLOR.format(service=service)).split()
        assert len(answer) == 1 and answer[0] in ("blue", "green"), f"{host}: no live {service} color: {answer}"
        return answer[0]

    def live_unit(self, host: str, service: str) -> str:
        return f"together-pray-{service}@{self.live_color(host, service)}.service"

    def audit_lines(self, host: str) -> int:
        return int(self.ssh(host, "cat /var/log/vigil/audit.log 2>/dev/null | wc -l").strip())

    def scratch_inventory(self, tmp_path: Path, edit=None, known_hosts: str | None = None) -> Path:
        """A copy of the sandbox inventory in tmp_path, optionally edited, for VIGIL_INVENTORY."""
        data = load_yaml(self.listing)
        data["defaults"]["ssh_key"] = str(SANDBOX_KEY)
        if edit:
            edit(data)
        (tmp_path / "sandbox.yml").write_text(yaml.safe_dump(data, sort_keys=False))
        pinned = (INVENTORY / "sandbox.known_hosts").read_text()
        (tmp_path / "sandbox.known_hosts").write_text(pinned if known_hosts is None else known_hosts)
        return tmp_path


def require_root() -> None:
    if os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        pytest.fail("e2e tests boot sandbox VPSes: run them as root after scripts/bootstrap")


# Where a module's own VPSes are listed (apart_layout): fixed per module, so a run killed midway leaves
# nothing the next run cannot find and remove.
APART_INVENTORIES = REPO / ".vigil" / "e2e-apart"


@contextlib.contextmanager
def apart_layout(module: str, hosts: str, *flags: str):
    """Fresh VPSes for one module, booted apart from the session's (`sandbox.up --inventory`,
    vigil/sandbox/scope.py): listed in their own sandbox.yml alone, so the session's inventory, deploys and
    monitor host never see them, and the modules that boot them run beside the session's (scripts/test).
    Yields their Sandbox; removes them at the end unless VIGIL_KEEP_SANDBOX.

    hosts: sandbox.up's --hosts (vps7-vps13, vps5,vps6); flags: more of its flags (--debian=vps14:12).
    """
    require_root()
    directory = APART_INVENTORIES / module
    # What a killed run of this module left: it wants fresh VPSes.
    removed = invoke("sandbox.down", f"--inventory={directory}", timeout=300)
    assert removed.code == 0, removed.stdout + removed.stderr
    started = invoke("sandbox.up", f"--hosts={hosts}", f"--inventory={directory}", *flags, timeout=1200)
    assert started.code == 0, started.stdout + started.stderr
    listing = directory / "sandbox.yml"
    try:
        yield Sandbox({name: host["address"] for name, host in load_yaml(listing)["hosts"].items()}, listing)
    finally:
        if not os.environ.get("VIGIL_KEEP_SANDBOX"):
            invoke("sandbox.down", f"--inventory={directory}", timeout=300)


# Logs in to PostgreSQL from a web host exactly as the backend will: with the DATABASE_URL
# secrets.push wrote into its env file. The password goes to a 0600 .pgpass for the one
# call, so it is on no command line; prints "user|ssl" or psql's error.
APP_DATABASE_LOGIN = r"""
command -v psql >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-client >/dev/null 2>&1
python3 - "$SSLMODE" "$ROOTCERT" <<'PY'
import os, subprocess, sys, urllib.parse
line = next(l for l in open("/etc/together-pray/backend.env") if l.startswith("DATABASE_URL="))
url = urllib.parse.urlsplit(line.split("=", 1)[1].strip().strip("'"))
user, database = urllib.parse.unquote(url.username), url.path.lstrip("/")
query = dict(urllib.parse.parse_qsl(url.query))
sslmode = sys.argv[1] or query.get("sslmode", "prefer")
rootcert = sys.argv[2] or query.get("sslrootcert", "")
with open("/root/.pgpass", "w", opener=lambda path, flags: os.open(path, flags, 0o600)) as pgpass:
    pgpass.write(f"{url.hostname}:{url.port}:{database}:{user}:{urllib.parse.unquote(url.password)}\n")
try:
    result = subprocess.run(["psql", "-w", "-X", "-t", "-A", "-c",
                             "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()",
                             f"host={url.hostname} port={url.port} dbname={database} user={user} sslmode={sslmode} "
                             + (f"sslrootcert={rootcert} " if rootcert else "") + "connect_timeout=5"],
                            capture_output=True, text=True, timeout=30)
    print((result.stdout + result.stderr).strip())
finally:
    os.remove("/root/.pgpass")
PY
"""


def app_database_login(address: str, sslmode: str = "", rootcert: str = "") -> str:
    """Log in from the web host at `address` with its backend's DATABASE_URL (sslmode, rootcert: override them)."""
    return ssh(address, f"SSLMODE={shlex.quote(sslmode)}\nROOTCERT={shlex.quote(rootcert)}\n" + APP_DATABASE_LOGIN,
               check=False).strip()


def database_url_endpoint(address: str) -> str:
    """What the backend's DATABASE_URL on `address` points at, after the credentials: host:port/db?options."""
    return ssh(address, "sed -n 's/^DATABASE_URL=.*@//p' /etc/together-pray/backend.env").strip().strip("'")


def tcp_probe(from_address: str, to_address: str, port: int) -> str:
    """From one VPS, whether `to_address:port` is 'open', 'refused' or 'filtered' (no answer)."""
    probe = ("import socket, sys\n"
             "try:\n"
             f"    socket.create_connection(({to_address!r}, {port}), timeout=3); print('open')\n"
             "except ConnectionRefusedError: print('refused')\n"
             "except OSError: print('filtered')\n")
    return ssh(from_address, f"python3 -c {shlex.quote(probe)}").strip()
