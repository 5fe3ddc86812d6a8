"""bench/peers/pyinfra_peer.py: what pyinfra's --json output says changed, and the inventory prepare() writes.

The outputs are pyinfra 3.10's own, trimmed to a few operations: NOOP_RUN and DRY_NOOP from the deploy
on an onboarded sandbox VPS (`-y --no-wait --json`, `--dry --json`), DRY_CHANGED from `--dry` with a
manifest copy where /etc/motd's mode and the nginx snippet's content differ, CHANGED_RUN from a real run
of the same deploy on a local scratch manifest (a checked file rewritten, its handler run).
"""

import ast
import json
from pathlib import Path

import pytest

from bench.peers import pyinfra_peer
from bench.peers.common import PEERS_BIN, PeerHost

NOOP_RUN = (
    '{"plan": [{"op_hash": "1bd83ee2808e6a400b3b257ea9097fefbef3b355", "name": "Ensure the packages are i'
    'nstalled", "names": ["Ensure the packages are installed"], "args": [], "hosts_with_change": [], "hos'
    'ts_with_conditional_change": []}, {"op_hash": "8cf9505e653fcde416f9459f3abe2dfdc9506b2e-0", "name": '
    '"Ensure /etc/motd", "names": ["Ensure /etc/motd"], "args": [], "hosts_with_change": [], "hosts_with_'
    'conditional_change": []}, {"op_hash": "f5efef6c268aaa188388a6afd052627f29c4251f-0-1", "name": "Ensur'
    'e nginx.service is enabled and running", "names": ["Ensure nginx.service is enabled and running"], "'
    'args": [], "hosts_with_change": [], "hosts_with_conditional_change": []}, {"op_hash": "ff7542da4313a'
    '802797562b73f5660a28d656f83", "name": "handler: reload nginx", "names": ["handler: reload nginx"], "'
    'args": [], "hosts_with_change": [], "hosts_with_conditional_change": []}], "results": {"operations":'
    ' [{"op_hash": "1bd83ee2808e6a400b3b257ea9097fefbef3b355", "name": "Ensure the packages are installed'
    '", "names": ["Ensure the packages are installed"], "args": [], "hosts": 1, "success": [], "error": ['
    '], "no_change": ["vps1"]}, {"op_hash": "8cf9505e653fcde416f9459f3abe2dfdc9506b2e-0", "name": "Ensure'
    ' /etc/motd", "names": ["Ensure /etc/motd"], "args": [], "hosts": 1, "success": [], "error": [], "no_'
    'change": ["vps1"]}, {"op_hash": "f5efef6c268aaa188388a6afd052627f29c4251f-0-1", "name": "Ensure ngin'
    'x.service is enabled and running", "names": ["Ensure nginx.service is enabled and running"], "args":'
    ' [], "hosts": 1, "success": [], "error": [], "no_change": ["vps1"]}, {"op_hash": "ff7542da4313a80279'
    '7562b73f5660a28d656f83", "name": "handler: reload nginx", "names": ["handler: reload nginx"], "args"'
    ': [], "hosts": 1, "success": [], "error": [], "no_change": ["vps1"]}], "totals": {"hosts": 4, "succe'
    'ss": 0, "error": 0, "no_change": 4}, "failed_hosts": []}}'
)
CHANGED_RUN = (
    '{"plan": [{"op_hash": "f755cf7739bc9d7bcae49edef4979a1dec1eb185", "name": "Ensure directory /tmp/pee'
    'rs-dev/pyinfra/local/target/d", "names": ["Ensure directory /tmp/peers-dev/pyinfra/local/target/d"],'
    ' "args": [], "hosts_with_change": [], "hosts_with_conditional_change": []}, {"op_hash": "0f3569bf712'
    '27fd49693d22ffc1044a7f2b10655", "name": "Ensure /tmp/peers-dev/pyinfra/local/target/d/checked (check'
    'ed by grep)", "names": ["Ensure /tmp/peers-dev/pyinfra/local/target/d/checked (checked by grep)"], "'
    'args": [], "hosts_with_change": [], "hosts_with_conditional_change": []}, {"op_hash": "59f55d9747f58'
    '416bb1fd83a479f654911baeac2", "name": "handler: reload systemd", "names": ["handler: reload systemd"'
    '], "args": [], "hosts_with_change": [], "hosts_with_conditional_change": []}], "results": {"operatio'
    'ns": [{"op_hash": "f755cf7739bc9d7bcae49edef4979a1dec1eb185", "name": "Ensure directory /tmp/peers-d'
    'ev/pyinfra/local/target/d", "names": ["Ensure directory /tmp/peers-dev/pyinfra/local/target/d"], "ar'
    'gs": [], "hosts": 1, "success": [], "error": [], "no_change": ["@local"]}, {"op_hash": "0f3569bf7122'
    '7fd49693d22ffc1044a7f2b10655", "name": "Ensure /tmp/peers-dev/pyinfra/local/target/d/checked (checke'
    'd by grep)", "names": ["Ensure /tmp/peers-dev/pyinfra/local/target/d/checked (checked by grep)"], "a'
    'rgs": [], "hosts": 1, "success": ["@local"], "error": [], "no_change": []}, {"op_hash": "59f55d9747f'
    '58416bb1fd83a479f654911baeac2", "name": "handler: reload systemd", "names": ["handler: reload system'
    'd"], "args": [], "hosts": 1, "success": ["@local"], "error": [], "no_change": []}], "totals": {"host'
    's": 3, "success": 2, "error": 0, "no_change": 1}, "failed_hosts": []}}'
)
DRY_NOOP = (
    '{"plan": [{"op_hash": "dfa8cd18fd05ef0a2e38866db8d9a1ba08fd4228-0-1", "name": "Ensure user deploy", '
    '"names": ["Ensure user deploy"], "args": [], "hosts_with_change": [], "hosts_with_conditional_change'
    '": []}, {"op_hash": "8cf9505e653fcde416f9459f3abe2dfdc9506b2e-0", "name": "Ensure /etc/motd", "names'
    '": ["Ensure /etc/motd"], "args": [], "hosts_with_change": [], "hosts_with_conditional_change": []}, '
    '{"op_hash": "ff7542da4313a802797562b73f5660a28d656f83", "name": "handler: reload nginx", "names": ["'
    'handler: reload nginx"], "args": [], "hosts_with_change": [], "hosts_with_conditional_change": ["vps'
    '1"]}], "results": null}'
)
DRY_CHANGED = (
    '{"plan": [{"op_hash": "8cf9505e653fcde416f9459f3abe2dfdc9506b2e", "name": "Ensure /etc/timezone", "n'
    'ames": ["Ensure /etc/timezone"], "args": [], "hosts_with_change": [], "hosts_with_conditional_change'
    '": []}, {"op_hash": "8cf9505e653fcde416f9459f3abe2dfdc9506b2e-0", "name": "Ensure /etc/motd", "names'
    '": ["Ensure /etc/motd"], "args": [], "hosts_with_change": ["vps1"], "hosts_with_conditional_change":'
    ' []}, {"op_hash": "8cf9505e653fcde416f9459f3abe2dfdc9506b2e-0-1-2-3-4-5-6-7", "name": "Ensure /etc/n'
    'ginx/snippets/vigil-security-headers.conf", "names": ["Ensure /etc/nginx/snippets/vigil-security-hea'
    'ders.conf"], "args": [], "hosts_with_change": ["vps1"], "hosts_with_conditional_change": []}, {"op_h'
    'ash": "ff7542da4313a802797562b73f5660a28d656f83", "name": "handler: reload nginx", "names": ["handle'
    'r: reload nginx"], "args": [], "hosts_with_change": [], "hosts_with_conditional_change": ["vps1"]}],'
    ' "results": null}'
)


def two_hosts(documents: list[str]) -> str:
    """Two hosts' results in one document, as pyinfra lists them (host names under each operation)."""
    first, second = (json.loads(document) for document in documents)
    for op, other in zip(first["results"]["operations"], second["results"]["operations"]):
        for key in ("success", "error", "no_change"):
            op[key] = sorted(op[key] + [name.replace("@local", "vps2") for name in other[key]])
    return json.dumps(first)


@pytest.mark.parametrize("stdout, changed, operations", [
    (NOOP_RUN, 0, 3),  # the handler that did not run is not counted
    (CHANGED_RUN, 2, 3),  # the rewritten file and the handler it notified
    (two_hosts([CHANGED_RUN, CHANGED_RUN]), 4, 6),
    ("--> Loading config...\n" + NOOP_RUN + "\n", 0, 3),
])
def test_a_real_run_counts_what_changed_and_what_ran(stdout, changed, operations):
    assert pyinfra_peer.changed(stdout, "") == changed
    assert pyinfra_peer.operations(stdout, "") == operations


@pytest.mark.parametrize("stdout, changed, operations", [
    (DRY_NOOP, 0, 2),  # a handler is only ever "conditional" in a dry run: not a change, not counted
    (DRY_CHANGED, 2, 3),  # exactly the file whose mode and the file whose content differ
])
def test_a_dry_run_counts_what_would_change(stdout, changed, operations):
    assert pyinfra_peer.changed(stdout, "") == changed
    assert pyinfra_peer.operations(stdout, "") == operations


@pytest.mark.parametrize("stdout", [
    "",
    "--> pyinfra error: No hosts remaining!\n",
    "{not json\n",
    NOOP_RUN[:200],
])
def test_no_json_document_is_an_error(stdout):
    with pytest.raises(ValueError):
        pyinfra_peer.changed(stdout, "")
    with pytest.raises(ValueError):
        pyinfra_peer.operations(stdout, "")


HOSTS = [
    PeerHost("vps1", "10.213.1.2", 22, "ops", Path("/keys/id_ed25519"), Path("/inv/known_hosts"),
             Path("/work/vps1/manifest.json")),
    PeerHost("vps2", "10.213.2.2", 2222, "admin", Path("/keys/other"), Path("/inv/known_hosts"),
             Path("/work/vps2/manifest.json")),
]


def written_hosts(work: Path) -> dict:
    tree = ast.parse((work / pyinfra_peer.INVENTORY).read_text())
    [assignment] = [node for node in tree.body if isinstance(node, ast.Assign)]
    assert [target.id for target in assignment.targets] == ["hosts"]
    return dict(ast.literal_eval(assignment.value))


@pytest.mark.parametrize("host", HOSTS, ids=lambda host: host.name)
def test_prepare_writes_each_host_with_its_key_known_hosts_and_manifest(tmp_path, host):
    pyinfra_peer.prepare(tmp_path, HOSTS)
    hosts = written_hosts(tmp_path)
    assert list(hosts) == ["vps1", "vps2"]
    data = hosts[host.name]
    assert (data["ssh_hostname"], data["ssh_port"], data["ssh_user"]) == (host.address, host.port, host.user)
    assert data["ssh_key"] == str(host.key)
    assert data["ssh_known_hosts_file"] == str(host.known_hosts)
    assert data["ssh_strict_host_key_checking"] == "yes"
    assert data["ssh_config_file"] == "/dev/null"
    assert (data["ssh_allow_agent"], data["ssh_look_for_keys"], data["ssh_forward_agent"]) == (False, False, False)
    assert data["ssh_paramiko_connect_kwargs"] == {"allow_agent": False, "look_for_keys": False}
    assert data["_sudo"] is True
    assert data["manifest"] == str(host.manifest)


@pytest.mark.parametrize("build, flags, absent", [
    (pyinfra_peer.command, ["-y", "--no-wait", "--json"], ["--dry"]),
    (pyinfra_peer.check_command, ["--dry", "--json"], ["-y"]),
])
def test_commands_run_the_deploy_on_the_written_inventory(tmp_path, build, flags, absent):
    argv, env = build(tmp_path, HOSTS)
    assert argv[0] == str(PEERS_BIN / "pyinfra")
    assert argv[-2:] == [str(tmp_path / pyinfra_peer.INVENTORY), str(pyinfra_peer.DEPLOY)]
    assert all(flag in argv for flag in flags) and not any(flag in argv for flag in absent)
    assert pyinfra_peer.DEPLOY.is_file() and env == {"PYINFRA_PROGRESS": "off"}
