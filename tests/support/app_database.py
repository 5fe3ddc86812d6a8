"""The app's database as the app on a web host reaches it, for the e2e tests and benchmarks that write and
read there while a database host fails: a login taken from the app's own DATABASE_URL, a writer that
logs whether each insert was acknowledged, and a reader that logs each answer. Each runs as a transient
systemd unit on the web host, so it goes on while the test cuts hosts off.

Example (tests/e2e/test_database_cluster.py, bench/ha.py):
    sandbox.ssh_at(web, APP_LOGIN)
    sandbox.ssh_at(web, writer(seconds=120))
    ...
    writes = logged_writes(sandbox.ssh_at(web, STOP_WRITER))
"""

from __future__ import annotations

from dataclasses import dataclass

# The app's login from DATABASE_URL in its env file, for root on the web host: a .pgpass and a libpq
# conninfo file so that no password is on a command line; psql for the queries, the writer and the reader.
APP_LOGIN = r"""
command -v psql >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-client >/dev/null 2>&1
python3 - <<'PY'
import os, urllib.parse
line = next(l for l in open("/etc/together-pray/backend.env") if l.startswith("DATABASE_URL="))
url = urllib.parse.urlsplit(line.split("=", 1)[1].strip().strip("'"))
query = dict(urllib.parse.parse_qsl(url.query))
user, database = urllib.parse.unquote(url.username), url.path.lstrip("/")
opener = lambda path, flags: os.open(path, flags, 0o600)
with open("/root/.pgpass", "w", opener=opener) as pgpass:
    # Any port: the leader's (5000) and the replicas' (5001) on this host's HAProxy.
    pgpass.write(f"{url.hostname}:*:{database}:{user}:{urllib.parse.unquote(url.password)}\n")
with open("/root/app.conninfo", "w", opener=opener) as conninfo:
    conninfo.write(f"host={url.hostname} port={url.port} dbname={database} user={user} sslmode={query['sslmode']} "
                   f"sslrootcert={query['sslrootcert']} connect_timeout=3")
PY
"""
# The table the writer fills: a row per acknowledged insert, numbered.
TABLE = "probe_writes"
WRITER_UNIT, READER_UNIT = "vigil-probe-writer.service", "vigil-probe-reader.service"
# Inserts numbered rows, one psql and one transaction each, through the leader's port for $1 seconds or
# until /root/writer.stop exists, numbering on from the table's highest; logs each number, when its
# commit came back, and whether it was acknowledged.
WRITER = r"""
cat > /root/writer.py <<'PY'
import os, subprocess, sys, time
conninfo = open("/root/app.conninfo").read()
def psql(sql):
    return subprocess.run(["psql", "-w", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                          capture_output=True, text=True, timeout=10)
psql("create table if not exists __TABLE__ (id integer primary key, at timestamptz not null default now())")
number = int(psql("select coalesce(max(id), 0) from __TABLE__").stdout.strip())
deadline = time.monotonic() + float(sys.argv[1])
with open("/root/writer.log", "w") as log:
    while time.monotonic() < deadline and not os.path.exists("/root/writer.stop"):
        number += 1
        try:
            acknowledged = psql(f"insert into __TABLE__ (id) values ({number})").returncode == 0
        except subprocess.TimeoutExpired:
            acknowledged = False
        log.write(f"{number} {time.time():.3f} {'ok' if acknowledged else 'failed'}\n")
        log.flush()
        time.sleep(0.05)
PY
rm -f /root/writer.stop /root/writer.log
systemctl reset-failed __UNIT__ 2>/dev/null || true
systemd-run --quiet --unit=__UNIT__ --collect python3 /root/writer.py "$1"
""".replace("__TABLE__", TABLE).replace("__UNIT__", WRITER_UNIT)
# Stops the writer, waits for its last insert, and prints its log.
STOP_WRITER = (f"touch /root/writer.stop; timeout 15 sh -c 'while systemctl -q is-active {WRITER_UNIT}; do sleep 0.2;"
               " done'; cat /root/writer.log")
# Reads a count through port $2 (5000: the leader; 5001: the replicas), one connection each, for $1 seconds.
READER = r"""
cat > /root/reader.py <<'PY'
import subprocess, sys, time
conninfo = open("/root/app.conninfo").read().replace("port=5000", "port=" + sys.argv[2])
deadline = time.monotonic() + float(sys.argv[1])
with open("/root/reader.log", "w") as log:
    while time.monotonic() < deadline:
        try:
            done = subprocess.run(["psql", "-w", "-X", "-q", "-t", "-A", conninfo, "-c",
                                   "select count(*) from __TABLE__"], capture_output=True, timeout=10)
            answered = done.returncode == 0
        except subprocess.TimeoutExpired:
            answered = False
        log.write(f"{time.time():.3f} {'ok' if answered else 'failed'}\n")
        log.flush()
        time.sleep(0.05)
PY
systemctl reset-failed __UNIT__ 2>/dev/null || true
systemd-run --quiet --unit=__UNIT__ --collect python3 /root/reader.py "$1" "$2"
""".replace("__TABLE__", TABLE).replace("__UNIT__", READER_UNIT)


def writer(seconds: int) -> str:
    """The script that starts the writer on a web host, for at most `seconds`."""
    return f"set -- {int(seconds)}\n{WRITER}"


def reader(seconds: int, port: int) -> str:
    """The script that starts the reader on a web host, for `seconds`, through HAProxy's `port`."""
    return f"set -- {int(seconds)} {int(port)}\n{READER}"


@dataclass(frozen=True)
class Write:
    number: int
    at: float
    acknowledged: bool


def logged_writes(log: str) -> list[Write]:
    """The writer's log, a Write per insert it tried."""
    return [Write(int(number), float(at), result == "ok") for number, at, result in
            (line.split() for line in log.splitlines())]


def longest_pause(writes: list[Write]) -> float:
    """The longest time between two acknowledged inserts."""
    times = [write.at for write in writes if write.acknowledged]
    return max(later - earlier for earlier, later in zip(times, times[1:]))
