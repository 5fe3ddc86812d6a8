"""A stand-in for the PaaS's database (Neon's, Railway's): Debian's PostgreSQL on this machine in a
throwaway cluster of its own, reached from a sandbox VPS over TLS (its certificate from the sandbox CA, for
the address it listens on) with a password, holding the sample app's schema as the app's own migrations
made it (the backend's build artifact, run here with node), its welcome prayer and a million more rows.

Example:
    with paas_database("10.213.5.1", tmp_dir, rows=1_000_000) as paas:
        paas.url  # postgresql://paas_owner:...@10.213.5.1:5499/paasdb
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.sandbox_hosts import REPO, invoke
from vigil.sandbox import ca

PORT = 5499
OWNER, DATABASE = "paas_owner", "paasdb"
NEWEST_PRAYER = "Moved in from the PaaS: may the new home keep us all."


@dataclass
class Paas:
    listen: str
    password: str
    directory: Path
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql://{OWNER}:{self.password}@{self.listen}:{PORT}/{DATABASE}?sslmode=require"

    def client_env(self) -> dict[str, str]:
        """This machine's clients log in with a password file, as vigil's do on the hosts."""
        passfile = self.directory / "client.pgpass"
        if not passfile.exists():
            passfile.write_text(f"127.0.0.1:{PORT}:*:{OWNER}:{self.password}\n")
            passfile.chmod(0o600)
        return {**os.environ, "PGPASSFILE": str(passfile)}

    def psql(self, sql: str) -> str:
        """SQL on the source as its owner, over loopback: unaligned rows."""
        done = subprocess.run([str(self.bin / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                               "-p", str(PORT), "-U", OWNER, "-d", DATABASE, "-c", sql],
                              capture_output=True, text=True, timeout=600, env=self.client_env())
        if done.returncode != 0:
            raise AssertionError(f"psql on the PaaS stand-in: {done.stderr}")
        return done.stdout.strip()


def postgresql_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise AssertionError("no PostgreSQL server binaries here: scripts/bootstrap installs them")
    return Path(found[-1]).parent


def as_postgres(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, cwd="/",
                          timeout=300, **kwargs)


def backend_artifact() -> Path:
    """The sample backend as deploy.build packages it (built now unless the source was built already)."""
    built = invoke("deploy.build", "--app=backend", timeout=900)
    assert built.code == 0, built.stdout + built.stderr
    artifact_id = re.search(r"worktree-[0-9a-f]{12}", built.stdout).group(0)
    return REPO / ".vigil" / "artifacts" / "backend" / f"{artifact_id}.tar.gz"


@contextlib.contextmanager
def paas_database(listen: str, directory: Path, rows: int):
    """The stand-in, listening on `listen` (and loopback) port PORT; stopped and removed on exit."""
    bin_dir = postgresql_bin()
    paas = Paas(listen, secrets.token_urlsafe(18), directory, bin_dir)
    data = directory / "data"
    shutil.chown(directory, "postgres", "postgres")
    (directory / "pw").write_text(paas.password)
    shutil.chown(directory / "pw", "postgres", "postgres")
    created = as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", OWNER, "-A", "scram-sha-256",
                          f"--pwfile={directory / 'pw'}")
    (directory / "pw").unlink()
    assert created.returncode == 0, created.stderr
    issued = ca.host_certificate("paas-database", [listen])
    for name, content in (("server.crt", issued.chain), ("server.key", issued.key)):
        (data / name).write_bytes(content)
        shutil.chown(data / name, "postgres", "postgres")
        (data / name).chmod(0o600)
    # TLS from the sandbox's VPSes, as a PaaS demands; plain over loopback for this machine's setup.
    (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 scram-sha-256\n"
                                      "hostssl all all 10.213.0.0/16 scram-sha-256\n")
    options = (f"-p {PORT} -k {directory} -c listen_addresses='{listen},127.0.0.1' -c ssl=on "
               "-c max_wal_size=2GB")
    started = as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "log"),
                          "-w", "start")
    assert started.returncode == 0, started.stderr + (directory / "log").read_text()[-2000:]
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(PORT), "-U", OWNER, DATABASE],
                       check=True, env=paas.client_env(), timeout=60)
        migrate(paas, directory / "backend")
        paas.psql(f"""INSERT INTO prayers (author, body, created_at)
            SELECT 'member ' || g, 'prayer number ' || g || ' for peace and patience', now() - interval '400 days'
                   + g * interval '30 seconds' FROM generate_series(1, {rows}) g;
            INSERT INTO prayers (author, body, created_at) VALUES ('Together Pray', '{NEWEST_PRAYER}', now());
            ANALYZE;""")
        yield paas
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")


def migrate(paas: Paas, into: Path) -> None:
    """The app's migrations, run against the stand-in as the PaaS ran them: the backend's own TypeORM CLI."""
    into.mkdir()
    with tarfile.open(backend_artifact()) as archive:
        archive.extractall(into, filter="data")
    done = subprocess.run(["node", "node_modules/typeorm/cli.js", "migration:run", "-d", "dist/data-source.js"],
                          cwd=into, capture_output=True, text=True, timeout=300,
                          env={"PATH": os.environ["PATH"],
                               "DATABASE_URL": f"postgresql://{OWNER}:{paas.password}@127.0.0.1:{PORT}/{DATABASE}"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
