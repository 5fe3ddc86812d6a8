"""`backup.export`: the app's database as a portable logical dump (`pg_dump -Fc`), for moving the data
elsewhere (another PostgreSQL, another provider), where a pgBackRest set only restores a whole cluster
of the same major version.

The dump is made now, from one snapshot, and encrypted with age on the database host to the env's
recipients before it leaves: no plain copy is written anywhere. The host hashes both the dump and what
it sends in the same pass; the file here is named only once the bytes that arrived match, and its
record carries the dump's hash, which `backup.decrypt` checks after decrypting.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from vigil.backup.access import BackupError
from vigil.backup.transfer import receive
from vigil.core.commands import Command
from vigil.core.connectors import Transport
from vigil.core.inventory import Host

RECIPIENT = re.compile(r"age1[0-9a-z]{58}")

# Run by python3 on the database host as root: pg_dump as postgres into age, age's output on stdout;
# then one JSON line on stderr (the dump's and the sent bytes' sha256 and sizes, pg_dump's version).
# Arguments: the database, then the recipients. Either program failing fails the whole export.
EXPORT = r'''
import hashlib, json, subprocess, sys, threading
database, *recipients = sys.argv[1:]
dump = subprocess.Popen(["runuser", "-u", "postgres", "--", "pg_dump", "--format=custom", "--no-password",
                         f"--dbname={database}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
age = subprocess.Popen(["age", "--encrypt", *[arg for r in recipients for arg in ("-r", r)]],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
plain, sent = hashlib.sha256(), hashlib.sha256()
sizes = {"dump": 0, "sent": 0}
def feed():
    try:
        for block in iter(lambda: dump.stdout.read(1 << 16), b""):
            plain.update(block)
            sizes["dump"] += len(block)
            age.stdin.write(block)
        age.stdin.close()
    except BrokenPipeError:
        pass  # age ended first: its exit code says why
    finally:
        dump.stdout.close()  # pg_dump stops (SIGPIPE) rather than wait on a reader that is gone
feeder = threading.Thread(target=feed, daemon=True)
feeder.start()
try:
    for block in iter(lambda: age.stdout.read(1 << 16), b""):
        sent.update(block)
        sizes["sent"] += len(block)
        sys.stdout.buffer.write(block)
    sys.stdout.buffer.flush()
except BrokenPipeError:
    # The receiving end went away: end pg_dump now, or it keeps its snapshot (and its table locks).
    dump.kill()
    age.kill()
    sys.exit("the connection that received the export was closed")
feeder.join()
# age first: a pg_dump that failed leaves age to encrypt what it got, while an age that failed
# leaves pg_dump killed by the closed pipe, saying nothing of why.
if age.wait() != 0:
    sys.exit("age: " + age.stderr.read().decode(errors="replace").strip()[-300:])
if dump.wait() != 0:
    sys.exit("pg_dump: " + dump.stderr.read().decode(errors="replace").strip()[-300:])
version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"sha256": sent.hexdigest(), "size": sizes["sent"], "dump_sha256": plain.hexdigest(),
                  "dump_size": sizes["dump"], "pg_dump": version}), file=sys.stderr)
'''


def export_command(database: str, recipients: list[str]) -> Command:
    bad = [recipient for recipient in recipients if not RECIPIENT.fullmatch(recipient)]
    if bad or not recipients:
        raise BackupError(f"the env's age recipients are not all age public keys (age1...): {len(bad)} are not")
    return Command(("python3", "-I", "-c", EXPORT, database, *recipients), sudo=True)


def export_database(transport: Transport, host: Host, env: str, database: str, recipients: list[str],
                    into: Path) -> tuple[Path, dict]:
    """`database` dumped on `host` now, age-encrypted there to `recipients`, into `into`; named only once
    it arrived as sent. Returns the .dump.age file and its record (written beside it, .json)."""
    into.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = into / f"{env}-{stamp}-export.dump.age"
    partial = target.with_name(target.name + ".partial")
    sha256, size, sent = receive(transport, export_command(database, recipients), target, host.name,
                                 f"the export of {database}")
    record = {
        "id": f"{stamp}-export",
        "env": env,
        "from": host.name,
        "database": database,
        "exported_at": stamp,
        "encrypted_sha256": sha256,
        "encrypted_size": size,
        "recipients": recipients,
        "dump_sha256": sent.get("dump_sha256"),
        "dump_size": sent.get("dump_size"),
        "pg_dump": sent.get("pg_dump"),
        "restore": f"invoke backup.decrypt {target.name} --env={env}, then pg_restore --no-owner "
                   "--dbname=DATABASE the .dump",
    }
    target.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(partial, target)
    return target, record
