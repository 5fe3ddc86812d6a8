"""The benchmark's Ansible peer (bench/peers/ansible_peer.py): counts read from ansible-playbook's real output,
the inventory prepare() writes, the commands, and the playbook's handlers against the names vigil notifies."""

from __future__ import annotations

import configparser
import json
import shlex
import stat
from pathlib import Path

import pytest
import yaml

from bench.peers import ansible_peer as peer
from bench.peers.common import PEERS_BIN, PeerHost
from bench.peers.export import HANDLERS

# Captured from runs against the sandbox's vps1 (trimmed): a no-op real run.
NOOP = """
PLAY [Onboard the servers as vigil plans them] *********************************

TASK [Read this host's manifest (what vigil's plan wants it to be)] ************
ok: [vps1]

TASK [Ensure the packages are installed] ***************************************
ok: [vps1]

TASK [Refuse an item whose handlers no task below notifies] ********************
skipping: [vps1]

TASK [Ensure the directories exist with their owner, group and mode] ***********
ok: [vps1] => (item=/var/www/together-pray)
ok: [vps1] => (item=/etc/ssl/vigil)

TASK [Ensure nginx's unwanted sites are absent, then reload nginx] *************
ok: [vps1] => (item=/etc/nginx/sites-enabled/default)

TASK [Read ufw's status, default policies and added rules] *********************
ok: [vps1]

TASK [Ensure ufw has each wanted rule (a rule for one source goes first)] ******
skipping: [vps1]

PLAY RECAP *********************************************************************
vps1                       : ok=22   changed=0    unreachable=0    failed=0    skipped=19   rescued=0    ignored=0

"""

# Check mode against a copy of the manifest with /etc/motd's mode, /etc/timezone's and two other files'
# content altered (one of them secret, one notifying `reload nginx`).
CHANGED = """
TASK [Ensure the files that notify no handler have their content, owner, group and mode (seeds only while missing)] ***
--- before: /etc/timezone
+++ after: /tmp/peers-dev/ansible/alt/timezone
@@ -1 +1,2 @@
 Etc/UTC
+# altered

changed: [vps1] => (item=/etc/timezone)
--- before
+++ after
@@ -1,4 +1,4 @@
 {
-    "mode": "0644",
+    "mode": "0600",
     "path": "/etc/motd"
 }

changed: [vps1] => (item=/etc/motd)
ok: [vps1] => (item=/etc/apt/apt.conf.d/20auto-upgrades)
changed: [vps1] => (item=(censored due to no_log))

TASK [Ensure nginx's site, certificate and snippets, then reload nginx] ********
changed: [vps1] => (item=/etc/nginx/snippets/vigil-security-headers.conf)
ok: [vps1] => (item=(censored due to no_log))

RUNNING HANDLER [Check nginx's configuration before reloading it] **************
skipping: [vps1]

RUNNING HANDLER [Reload nginx] *************************************************
changed: [vps1]

PLAY RECAP *********************************************************************
vps1                       : ok=23   changed=3    unreachable=0    failed=0    skipped=20   rescued=0    ignored=0
"""

# A run that failed on a task (an early draft's bad regex); the host stopped there.
FAILED = """
TASK [Ensure ufw's default incoming and outgoing policies] *********************
fatal: [vps1]: FAILED! => {"msg": "The filter plugin 'ansible.builtin.regex_search' failed: \
'NoneType' object has no attribute 'group'"}

PLAY RECAP *********************************************************************
vps1                       : ok=10   changed=0    unreachable=0    failed=1    skipped=2    rescued=0    ignored=0
"""

# Two hosts: vps1's real recap line, and the same line edited for a vps2 that changed one task.
TWO_HOSTS = """
TASK [Ensure the packages are installed] ***************************************
ok: [vps1]
changed: [vps2]

PLAY RECAP *********************************************************************
vps1                       : ok=22   changed=0    unreachable=0    failed=0    skipped=19   rescued=0    ignored=0
vps2                       : ok=18   changed=1    unreachable=0    failed=0    skipped=23   rescued=0    ignored=0
"""

UNREACHABLE = """
PLAY RECAP *********************************************************************
vps1                       : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
"""


@pytest.mark.parametrize("stdout, changed, operations", [
    # operations: module runs, each item of a loop counted (the recap's ok= counts a loop once).
    (NOOP, 0, 6),
    (CHANGED, 3, 7),
    (TWO_HOSTS, 1, 2),
    ("\x1b[0;32m" + NOOP.replace("ok:", "\x1b[0;32mok:") + "\x1b[0m", 0, 6),  # colours, were they forced on
])
def test_changed_is_the_recap_and_operations_the_module_runs_summed_over_hosts(stdout, changed, operations):
    assert peer.changed(stdout, "") == changed
    assert peer.operations(stdout, "") == operations


@pytest.mark.parametrize("stdout, operations", [(FAILED, 1), (UNREACHABLE, 0)])
def test_a_run_stopped_early_has_no_changed_count(stdout, operations):
    with pytest.raises(ValueError, match="stopped early on vps1"):
        peer.changed(stdout, "")
    assert peer.operations(stdout, "") == operations


@pytest.mark.parametrize("stdout", [
    "",
    "ERROR! the playbook: onboard.yml could not be found\n",
    NOOP.split("PLAY RECAP")[0],
    "PLAY RECAP ***\n\n",
])
def test_output_without_a_recap_cannot_be_counted(stdout):
    with pytest.raises(ValueError):
        peer.changed(stdout, "")
    with pytest.raises(ValueError):
        peer.operations(stdout, "")


def hosts(tmp_path: Path) -> list[PeerHost]:
    key, known = tmp_path / "keys dir" / "id_ed25519", tmp_path / "known_hosts"
    return [PeerHost("vps1", "10.213.1.2", 22, "ops", key, known, tmp_path / "vps1" / "manifest.json"),
            PeerHost("vps2", "10.213.2.2", 2222, "ops", key, known, tmp_path / "vps2" / "manifest.json")]


def test_prepare_writes_a_private_inventory_of_exactly_these_hosts(tmp_path):
    given = hosts(tmp_path)
    peer.prepare(tmp_path, given)
    path = tmp_path / peer.INVENTORY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    inventory = json.loads(path.read_text())["all"]["hosts"]
    assert list(inventory) == ["vps1", "vps2"]
    for host in given:
        entry = inventory[host.name]
        assert (entry["ansible_host"], entry["ansible_port"], entry["ansible_user"]) == (host.address, host.port, "ops")
        assert entry["ansible_ssh_private_key_file"] == str(host.key)
        assert entry["vigil_manifest"] == str(host.manifest)
        # Quoted for the shlex split Ansible applies: the key's directory has a space in it here.
        assert shlex.split(entry["ansible_ssh_common_args"]) == [
            "-o", f"UserKnownHostsFile={host.known_hosts}", "-o", "StrictHostKeyChecking=yes"]


def test_prepare_replaces_an_older_inventory(tmp_path):
    peer.prepare(tmp_path, hosts(tmp_path))
    peer.prepare(tmp_path, hosts(tmp_path)[:1])
    assert list(json.loads((tmp_path / peer.INVENTORY).read_text())["all"]["hosts"]) == ["vps1"]


def test_the_commands_run_the_playbook_from_the_peers_venv_with_its_config(tmp_path):
    given = hosts(tmp_path)
    argv, env = peer.command(tmp_path, given)
    check, check_env = peer.check_command(tmp_path, given)
    assert argv[0] == str(PEERS_BIN / "ansible-playbook") and Path(argv[0]).is_absolute()
    assert argv[-1] == str(peer.PLAYBOOK) and peer.PLAYBOOK.is_file()
    assert argv[argv.index("-i") + 1] == str(tmp_path / peer.INVENTORY)
    assert argv[argv.index("--limit") + 1] == "vps1,vps2"
    assert "--check" not in argv
    assert check == argv[:-1] + ["--check", "--diff", argv[-1]]
    assert env == check_env == {"ANSIBLE_CONFIG": str(peer.CONFIG)}


def test_the_config_is_tuned_for_speed_and_logs_in_only_as_told():
    config = configparser.ConfigParser(interpolation=None)
    config.read(peer.CONFIG)
    assert config["defaults"]["gathering"] == "explicit"
    assert config["defaults"]["host_key_checking"] == "True"
    assert config["ssh_connection"]["pipelining"] == "True"
    assert config["privilege_escalation"]["become_method"] == "sudo"
    ssh_args = shlex.split(config["ssh_connection"]["ssh_args"])
    for option in ("ControlMaster=auto", "ControlPersist=60s", "IdentitiesOnly=yes", "IdentityAgent=none",
                   "StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null", "BatchMode=yes"):
        assert option in ssh_args
    assert ssh_args[ssh_args.index("-F") + 1] == "/dev/null"


def test_every_handler_vigil_notifies_is_one_the_playbook_listens_for():
    handlers = yaml.safe_load((peer.HERE / "handlers.yml").read_text())
    listening = {handler["listen"] for handler in handlers}
    assert listening == set(HANDLERS)
    (play,) = yaml.safe_load(peer.PLAYBOOK.read_text())
    notified = {name for task in play["tasks"] for name in ([task["notify"]] if isinstance(task.get("notify"), str)
                                                            else task.get("notify") or [])}
    notified |= {name for sets in play["vars"]["handled"].values() for handler_set in sets for name in handler_set}
    assert notified <= listening
