"""roles/pgbackrest: which end each host gets, the keys each end accepts and holds, and the
repository's encryption; the SSH keys derived from the env's seed (vigil.vault.derived_keys)."""

import dataclasses
import json
import re
import subprocess

import pytest

from tests.support.inventories import layout
from vigil.backup.repository import LOCK_PATH
from vigil.core.commands import Secret
from vigil.core.errors import ConfigError
from vigil.core.redaction import REDACTOR
from vigil.core.roles import load_role
from vigil.operations.files import File
from vigil.operations.postgresql import PostgresSettings
from vigil.vault.derived_keys import derive_ssh_key

SECRETS = {"PGBACKREST_CIPHER_PASS": "a-repository-cipher-pass-of-32-chars-and-more",
           "PGBACKREST_SSH_SEED": "a-seed-for-the-pgbackrest-ssh-keys-32+"}
THREE_HOSTS = {"web": ["web1"], "db": ["db1"], "backup": ["backup1"]}


def operations(tmp_path, groups, host, secrets=SECRETS, pins=True):
    inventory = layout(groups, private={"db1": "10.0.0.5", "backup1": "10.0.0.9"})
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(f"{h.address} ssh-ed25519 AAAA{h.name}\n" for h in inventory.hosts.values()
                                   if pins))
    inventory = dataclasses.replace(inventory, known_hosts=known_hosts)
    role = load_role("pgbackrest")
    vars = inventory.vars_for(inventory.hosts[host], [role], secrets=lambda: secrets)
    return role.tasks(role, vars)


def files(ops) -> dict[str, File]:
    return {op.path: op for op in ops if isinstance(op, File)}


@pytest.mark.parametrize("groups, host", [
    ({"web": ["web1"], "db": ["db1"]}, "db1"),  # no backup host: the database is left as it is
    (THREE_HOSTS, "web1"),
])
def test_hosts_that_are_neither_end_get_nothing(tmp_path, groups, host):
    assert operations(tmp_path, groups, host) == []


def test_the_database_end_archives_its_wal_to_the_backup_host_without_the_cipher(tmp_path):
    ops = operations(tmp_path, THREE_HOSTS, "db1")
    config = files(ops)["/etc/pgbackrest/pgbackrest.conf"].content.decode()
    assert "repo1-host=10.0.0.9\nrepo1-host-user=pgbackrest\n" in config and "archive-async=y" in config
    assert "pg1-path=/var/lib/postgresql/17/main" in config and "cipher" not in config.replace("encrypts", "")
    (settings,) = [op for op in ops if isinstance(op, PostgresSettings)]
    assert settings.settings == {"wal_level": "replica", "archive_mode": "on", "archive_timeout": "60",
                                 "archive_command": "pgbackrest --stanza=together-pray archive-push %p"}
    assert settings.notify == ("restart postgresql",)
    # It pins the backup host's key at the address it dials, from the inventory's known_hosts.
    pinned = files(ops)["/var/lib/postgresql/.ssh/vigil-pgbackrest.known_hosts"].content.decode()
    assert pinned == "10.0.0.9 ssh-ed25519 AAAAbackup1\n"


def test_the_repository_is_encrypted_with_the_envs_passphrase_and_its_config_is_secret(tmp_path):
    ops = operations(tmp_path, THREE_HOSTS, "backup1")
    config = files(ops)["/etc/pgbackrest/pgbackrest.conf"]
    text = config.content.decode()
    assert "repo1-cipher-type=aes-256-cbc\n" in text
    assert f"repo1-cipher-pass={SECRETS['PGBACKREST_CIPHER_PASS']}\n" in text
    assert config.secret and config.mode == "0640" and config.group == "pgbackrest"
    assert SECRETS["PGBACKREST_CIPHER_PASS"] not in REDACTOR.redact(text)
    assert "pg1-host=10.0.0.5\npg1-host-user=postgres\n" in text and "repo1-path=/var/lib/pgbackrest/repository" in text


def test_each_end_accepts_exactly_the_key_the_other_holds_and_only_from_its_address(tmp_path):
    database, repository = operations(tmp_path, THREE_HOSTS, "db1"), operations(tmp_path, THREE_HOSTS, "backup1")
    directions = [
        (files(database)["/var/lib/postgresql/.ssh/vigil-pgbackrest"],
         files(repository)["/var/lib/pgbackrest/.ssh/authorized_keys"].content.decode().strip(), "10.0.0.5"),
        (files(repository)["/var/lib/pgbackrest/.ssh/vigil-pgbackrest"],
         files(database)["/var/lib/postgresql/.ssh/authorized_keys"].content.decode().strip(), "10.0.0.9"),
    ]
    held = []
    for private_key, accepted, source in directions:
        options, key_type, key = accepted.split()[:3]
        assert options == f'restrict,from="{source}"' and private_key.secret and private_key.mode == "0600"
        public = subprocess.run(["ssh-keygen", "-y", "-f", "/dev/stdin"], input=private_key.content,
                                capture_output=True, check=True).stdout.decode().split()
        assert public[:2] == [key_type, key]
        held.append(key)
    assert held[0] != held[1]  # one key per direction


def test_a_derived_key_is_the_same_for_the_same_seed_and_purpose_only():
    seed = Secret("a-seed-for-the-pgbackrest-ssh-keys-32+")
    one, again = derive_ssh_key(seed, "a"), derive_ssh_key(seed, "a")
    assert one.private_pem.value == again.private_pem.value and one.public_line == again.public_line
    assert derive_ssh_key(seed, "b").public_line.split()[1] != one.public_line.split()[1]
    assert derive_ssh_key(Secret("another-seed-for-the-ssh-keys-of-32+"), "a").public_line != one.public_line
    assert one.private_pem.value not in REDACTOR.redact(one.private_pem.value)


@pytest.mark.parametrize("groups, host, secrets, pins, message", [
    ({"web": ["web1"], "db": ["db1"], "backup": ["db1"]}, "db1", SECRETS, True,
     "db1 is both a database host and the repository's"),
    (THREE_HOSTS, "backup1", SECRETS, False, "pins no host key for db1 (203.0.113.2): run `invoke provision.trust"),
])
def test_a_layout_it_cannot_serve_is_refused_naming_the_host(tmp_path, groups, host, secrets, pins, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        operations(tmp_path, groups, host, secrets, pins)


def test_a_missing_passphrase_names_the_secret(tmp_path):
    with pytest.raises(Exception, match="secret PGBACKREST_CIPHER_PASS is missing"):
        operations(tmp_path, THREE_HOSTS, "backup1", {"PGBACKREST_SSH_SEED": SECRETS["PGBACKREST_SSH_SEED"]})


@pytest.mark.parametrize("host, exempt", [("db1", ["10.0.0.9"]), ("backup1", ["10.0.0.5"]), ("web1", [])])
def test_the_two_ends_log_in_to_each_other_without_the_ssh_rate_limit(host, exempt):
    inventory = layout(THREE_HOSTS, private={"db1": "10.0.0.5", "backup1": "10.0.0.9"})
    role = load_role("firewall")
    rules = next(op for op in role.tasks(role, inventory.vars_for(inventory.hosts[host], [role])) if
                 type(op).__name__ == "Firewall").rules
    allowed = [rule.split()[2] for rule in rules[:rules.index("limit 22/tcp")]]
    assert allowed == exempt


def test_the_repository_keeps_the_window_and_takes_a_weekly_full_and_daily_incrementals(tmp_path):
    ops = operations(tmp_path, THREE_HOSTS, "backup1")
    config = files(ops)["/etc/pgbackrest/pgbackrest.conf"].content.decode()
    assert "repo1-retention-full-type=time\nrepo1-retention-full=14\n" in config
    assert f"lock-path={LOCK_PATH}\n" in config  # where a restore takes pgBackRest's backup lock
    timers = {path.rsplit("/", 1)[1]: op.content.decode() for path, op in files(ops).items() if path.endswith(".timer")}
    assert "OnCalendar=Sun *-*-* 02:30:00" in timers["vigil-pgbackrest-full.timer"]
    assert "Unit=vigil-pgbackrest-backup@incr.service" in timers["vigil-pgbackrest-incr.timer"]
    service = files(ops)["/etc/systemd/system/vigil-pgbackrest-backup@.service"].content.decode()
    assert "User=pgbackrest" in service and "--type=%i" in service and "TimeoutStartSec=21600" in service


def test_the_backup_host_drills_restores_in_a_scratch_cluster_of_postgresql_without_one_of_its_own(tmp_path):
    ops = operations(tmp_path, THREE_HOSTS, "backup1")
    # No "main" cluster is created when the server package lands: the file comes before the package.
    no_main = files(ops)["/etc/postgresql-common/createcluster.d/vigil-no-main-cluster.conf"]
    packages = [op for op in ops if type(op).__name__ == "AptPackages"]
    assert "create_main_cluster = false" in no_main.content.decode()
    assert ops.index(no_main) < ops.index(next(op for op in packages if op.packages == ["postgresql"]))
    settings = json.loads(files(ops)["/etc/vigil/pgbackrest-drill.json"].content)
    assert settings == {
        "stanza": "together-pray", "database": "together_pray", "owner": "together_pray",
        "peer_address": "10.0.0.5", "peer_port": 22,
        "ssh": "/usr/local/lib/vigil/pgbackrest-ssh", "scratch": "/var/lib/pgbackrest/drill/scratch",
        "result": "/var/lib/pgbackrest/drill/last.json", "lock": "/var/lib/pgbackrest/lock/vigil-drill.lock",
        "port": 5499, "lock_wait_seconds": 10, "recovery_deadline_seconds": 3600}
    service = files(ops)["/etc/systemd/system/vigil-pgbackrest-drill.service"].content.decode()
    assert "User=pgbackrest" in service and "ExecStart=/usr/local/lib/vigil/vigil-pgbackrest-drill" in service
    assert "ReadWritePaths=/var/lib/pgbackrest/repository /var/log/pgbackrest /var/lib/pgbackrest/lock " \
           "/var/spool/pgbackrest /var/lib/pgbackrest/drill" in service
    timer = files(ops)["/etc/systemd/system/vigil-pgbackrest-drill.timer"].content.decode()
    assert "OnCalendar=Sun *-*-* 05:00:00" in timer and "Unit=vigil-pgbackrest-drill.service" in timer
    # The drill runs where the repository and its stanza already are.
    stanza = next(op for op in ops if "stanza" in getattr(op, "name", ""))
    assert ops.index(stanza) < ops.index(files(ops)["/etc/systemd/system/vigil-pgbackrest-drill.service"])


def test_the_drill_counts_the_database_the_database_host_names(tmp_path):
    inventory_vars = {"postgresql_database": "prayers_prod"}
    inventory = layout(THREE_HOSTS, private={"db1": "10.0.0.5", "backup1": "10.0.0.9"},
                       host_vars={"db1": inventory_vars})
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(f"{h.address} ssh-ed25519 AAAA{h.name}\n" for h in inventory.hosts.values()))
    inventory = dataclasses.replace(inventory, known_hosts=known_hosts)
    role = load_role("pgbackrest")
    ops = role.tasks(role, inventory.vars_for(inventory.hosts["backup1"], [role], secrets=lambda: SECRETS))
    assert json.loads(files(ops)["/etc/vigil/pgbackrest-drill.json"].content)["database"] == "prayers_prod"


@pytest.mark.parametrize("word, code, said", [("migrate", 0, "vigil-migrate-"), ("revert", 0, "vigil-revert-"),
                                              ("", 64, "usage"), ("drop", 64, "usage")])
def test_the_restore_point_helper_takes_two_words_and_archives_the_point_it_made(tmp_path, word, code, said):
    """vigil-restore-point for real, with psql and pgbackrest stood in for by runuser on PATH."""
    ops = operations(tmp_path, THREE_HOSTS, "db1")
    helper = tmp_path / "vigil-restore-point"
    helper.write_bytes(files(ops)["/usr/local/sbin/vigil-restore-point"].content)
    log = tmp_path / "calls"
    answer = 'echo "1796309000|1|$(echo "$*" | grep -o "vigil-[a-z]*-[0-9TZ]*" | head -n 1)"'
    (tmp_path / "runuser").write_text(f'#!/bin/sh\nshift 3\necho "$*" | tr "\\n" " " >> {log}; echo >> {log}\n'
                                      f'case "$1" in psql) {answer} ;; esac\n')
    (tmp_path / "runuser").chmod(0o755)
    done = subprocess.run(["sh", str(helper), *([word] if word else [])], capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert done.returncode == code and said in done.stdout + done.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    if code == 0:
        assert calls[0].startswith("psql ") and "pg_create_restore_point('vigil-" in calls[0]
        assert calls[1].startswith("pgbackrest --stanza=together-pray") and calls[1].strip().endswith(" check")
    else:
        assert calls == []


@pytest.mark.parametrize("prints, exits, code, said", [
    ("[backrest]\nbackrest-format=5\n", 0, 0, ""),
    # A wrong key: pgBackRest says so (95)...
    ("", 95, 1, "encrypted with another passphrase than the env's PGBACKREST_CIPHER_PASS"),
    # ...or, about once in 256, decrypts garbage without an error.
    ("\\321\\020\\371\\020\\006", 0, 1, "encrypted with another passphrase than the env's PGBACKREST_CIPHER_PASS"),
    ("", 41, 1, "could not be opened with the new configuration (pgbackrest exit 41)"),
])
def test_a_configuration_is_written_only_if_its_passphrase_opens_the_repository_there(tmp_path, prints, exits, code,
                                                                                        said):
    """The repository configuration's validator for real, pgbackrest stood in for on PATH."""
    ops = operations(tmp_path, THREE_HOSTS, "backup1")
    validate = files(ops)["/etc/pgbackrest/pgbackrest.conf"].validate
    repository = tmp_path / "repository"
    (repository / "backup" / "together-pray").mkdir(parents=True)
    (repository / "backup" / "together-pray" / "backup.info").write_text("Salted__")
    (tmp_path / "pgbackrest").write_text(f"#!/bin/sh\nprintf '{prints}'\nexit {exits}\n")
    (tmp_path / "pgbackrest").chmod(0o755)
    argv = [*validate[:-1], str(repository), str(tmp_path / "new.conf")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert done.returncode == code and said in done.stderr


S3 = {"pgbackrest_s3_bucket": "together-pray-backups", "pgbackrest_s3_endpoint": "s3.eu-central-1.amazonaws.com",
      "pgbackrest_s3_region": "eu-central-1"}
S3_SECRETS = {**SECRETS, "PGBACKREST_S3_KEY": "AKIAEXAMPLEKEY0001", "PGBACKREST_S3_KEY_SECRET": "s3-key-secret-value",
              "PGBACKREST_S3_CIPHER_PASS": "a-second-repository-pass-of-32-chars-and-more"}


def operations_with(tmp_path, host, host_vars, secrets):
    inventory = layout(THREE_HOSTS, private={"db1": "10.0.0.5", "backup1": "10.0.0.9"},
                       host_vars={"db1": host_vars, "backup1": host_vars})
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(f"{h.address} ssh-ed25519 AAAA{h.name}\n" for h in inventory.hosts.values()))
    inventory = dataclasses.replace(inventory, known_hosts=known_hosts)
    role = load_role("pgbackrest")
    return role.tasks(role, inventory.vars_for(inventory.hosts[host], [role], secrets=lambda: secrets))


def test_an_s3_bucket_is_a_second_repository_each_end_reaches_with_its_own_passphrase(tmp_path):
    repository = files(operations_with(tmp_path, "backup1", S3, S3_SECRETS))
    config = repository["/etc/pgbackrest/pgbackrest.conf"].content.decode()
    for line in ("repo2-type=s3", "repo2-s3-bucket=together-pray-backups", "repo2-s3-region=eu-central-1",
                 "repo2-s3-endpoint=s3.eu-central-1.amazonaws.com", "repo2-s3-uri-style=host",
                 "repo2-s3-key-secret=s3-key-secret-value", "repo2-retention-full=14",
                 f"repo2-cipher-pass={S3_SECRETS['PGBACKREST_S3_CIPHER_PASS']}",
                 f"repo1-cipher-pass={SECRETS['PGBACKREST_CIPHER_PASS']}"):
        assert line + "\n" in config, line
    # Backups go into it weekly, one repository per pgBackRest run.
    unit = repository["/etc/systemd/system/vigil-pgbackrest-backup-s3@.service"].content.decode()
    assert "--stanza=together-pray --repo=2 --type=%i" in unit
    timer = repository["/etc/systemd/system/vigil-pgbackrest-s3-full.timer"].content.decode()
    assert "OnCalendar=Sun *-*-* 04:30:00" in timer and "Unit=vigil-pgbackrest-backup-s3@full.service" in timer
    # The database host archives WAL into it too, with the second passphrase only, its file kept secret.
    database = files(operations_with(tmp_path, "db1", S3, S3_SECRETS))["/etc/pgbackrest/pgbackrest.conf"]
    text = database.content.decode()
    assert "repo2-s3-bucket=together-pray-backups\n" in text and database.secret
    assert S3_SECRETS["PGBACKREST_S3_CIPHER_PASS"] in text and SECRETS["PGBACKREST_CIPHER_PASS"] not in text


def test_without_a_bucket_there_is_no_second_repository(tmp_path):
    ops = files(operations_with(tmp_path, "backup1", {}, SECRETS))
    assert "repo2" not in ops["/etc/pgbackrest/pgbackrest.conf"].content.decode()
    assert not [path for path in ops if "s3" in path]
    assert not files(operations_with(tmp_path, "db1", {}, SECRETS))["/etc/pgbackrest/pgbackrest.conf"].secret


@pytest.mark.parametrize("host_vars, secrets, message", [
    (S3, SECRETS, "secret PGBACKREST_S3_KEY is missing"),
    ({**S3, "pgbackrest_s3_endpoint": ""}, S3_SECRETS, "pgbackrest_s3_endpoint"),
    ({**S3, "pgbackrest_s3_bucket": "Not A Bucket"}, S3_SECRETS, "pgbackrest_s3_bucket"),
    ({**S3, "pgbackrest_s3_uri_style": "virtual"}, S3_SECRETS, "pgbackrest_s3_uri_style"),
])
def test_an_s3_repository_it_cannot_reach_is_refused_naming_the_key(tmp_path, host_vars, secrets, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        operations_with(tmp_path, "backup1", host_vars, secrets)
