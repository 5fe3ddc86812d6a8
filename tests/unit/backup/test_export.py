"""vigil.backup.export: the export program run for real here, with the real `age` and stand-ins for
runuser and pg_dump on PATH; and the file named only when what arrived is what the host sent."""

import hashlib
import json
import subprocess

import pyrage
import pytest

from vigil.backup.access import BackupError
from vigil.backup.export import export_command, export_database
from vigil.core.connectors import Result
from vigil.core.inventory import Host

DUMP = ("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'pg_dump (PostgreSQL) 17.6'; exit 0; }\n"
        "printf 'PGDMP of %s' \"$3\"\n")
BROKEN_DUMP = "#!/bin/sh\necho 'pg_dump: error: connection to server failed' >&2\nexit 1\n"


def stand_ins(tmp_path, dump=DUMP):
    directory = tmp_path / "bin"
    directory.mkdir()
    for name, text in (("runuser", '#!/bin/sh\nshift 3\nexec "$@"\n'), ("pg_dump", dump)):
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
    return {"PATH": f"{directory}:/usr/bin:/bin"}


def run_export(tmp_path, recipients, dump=DUMP):
    command = export_command("together_pray", recipients)
    assert command.argv[:3] == ("python3", "-I", "-c") and command.sudo
    return subprocess.run(command.argv, capture_output=True, env=stand_ins(tmp_path, dump))


def test_the_dump_leaves_the_host_encrypted_to_the_recipients_with_both_hashes(tmp_path):
    identity = pyrage.x25519.Identity.generate()
    done = run_export(tmp_path, [str(identity.to_public())])
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stderr.decode().strip().splitlines()[-1])
    plain = pyrage.decrypt(done.stdout, [identity])
    assert plain == b"PGDMP of --dbname=together_pray" and not done.stdout.startswith(b"PGDMP")
    assert (sent["sha256"], sent["size"]) == (hashlib.sha256(done.stdout).hexdigest(), len(done.stdout))
    assert (sent["dump_sha256"], sent["dump_size"], sent["pg_dump"]) == (
        hashlib.sha256(plain).hexdigest(), len(plain), "pg_dump (PostgreSQL) 17.6")


def test_a_failed_dump_fails_the_export_with_pg_dumps_reason(tmp_path):
    done = run_export(tmp_path, [str(pyrage.x25519.Identity.generate().to_public())], dump=BROKEN_DUMP)
    assert done.returncode != 0 and "pg_dump: pg_dump: error: connection to server failed" in done.stderr.decode()


def test_an_age_that_fails_fails_the_export_without_waiting_on_pg_dump(tmp_path):
    """A large dump and an age that exits at once: pg_dump is not left blocked writing to nobody."""
    env = stand_ins(tmp_path, dump="#!/bin/sh\n[ \"$1\" = --version ] && exit 0\nexec head -c 50000000 /dev/zero\n")
    (tmp_path / "bin" / "age").write_text("#!/bin/sh\necho 'age: error: no identity' >&2\nexit 1\n")
    (tmp_path / "bin" / "age").chmod(0o755)
    command = export_command("together_pray", [str(pyrage.x25519.Identity.generate().to_public())])
    done = subprocess.run(command.argv, capture_output=True, env=env, timeout=60)
    assert done.returncode != 0 and "age: age: error: no identity" in done.stderr.decode()


@pytest.mark.parametrize("recipients", [[], ["age1short"], ["ssh-ed25519 AAAA"]])
def test_recipients_that_are_not_age_keys_are_refused_before_the_host_is_asked(recipients):
    with pytest.raises(BackupError, match="age recipients"):
        export_command("together_pray", recipients)


class ExportingHost:
    """The database host, its export program run here with stand-ins; `damage` flips a byte on the way."""

    def __init__(self, env, damage=False):
        self.env, self.damage = env, damage

    def run(self, command, timeout=None, sink=None):
        done = subprocess.run(command.argv, capture_output=True, env=self.env)
        data = bytearray(done.stdout)
        if self.damage:
            data[-1] ^= 0xFF
        sink(bytes(data))
        return Result(done.returncode, "", done.stderr.decode())


@pytest.mark.parametrize("damage", [False, True])
def test_an_export_is_named_only_when_it_arrived_as_sent_and_records_the_dumps_hash(tmp_path, damage):
    identity = pyrage.x25519.Identity.generate()
    host = ExportingHost(stand_ins(tmp_path), damage)
    db1 = Host("db1", "10.0.0.21", 22, "root", None, ("db",), 5, 30)
    into = tmp_path / "exports"
    if damage:
        with pytest.raises(BackupError, match="the export of together_pray arrived damaged"):
            export_database(host, db1, "staging", "together_pray", [str(identity.to_public())], into)
        assert list(into.iterdir()) == []
        return
    path, record = export_database(host, db1, "staging", "together_pray", [str(identity.to_public())], into)
    assert json.loads(path.with_suffix(".json").read_text()) == record
    plain = pyrage.decrypt(path.read_bytes(), [identity])
    assert record["dump_sha256"] == hashlib.sha256(plain).hexdigest() and record["database"] == "together_pray"
    assert path.name.startswith("staging-") and path.name.endswith("-export.dump.age")
