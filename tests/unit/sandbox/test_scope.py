"""Which hosts a sandbox.up or sandbox.down concerns: the --hosts selection and the inventory that lists
each VPS (vigil/sandbox/scope.py), and the inventory files written from it."""

from __future__ import annotations

import re

import pytest

from tests.unit.sandbox.test_plan import TWO_HOSTS
from vigil.core.yaml_loader import load_yaml
from vigil.sandbox.apply import write_inventory
from vigil.sandbox.paths import MAX_HOSTS, SandboxError, SandboxPaths
from vigil.sandbox.plan import plan_hosts
from vigil.sandbox.scope import (
    hosts_in_scope,
    inventory_file_of,
    inventory_home,
    parse_group_flags,
    parse_hosts,
    parse_release_flags,
)


@pytest.mark.parametrize("value, names, counted", [
    (2, ("vps1", "vps2"), True),
    ("3", ("vps1", "vps2", "vps3"), True),
    ("vps7-vps9", ("vps7", "vps8", "vps9"), False),
    ("vps5,vps6", ("vps5", "vps6"), False),
    ("vps5, vps9-vps10", ("vps5", "vps9", "vps10"), False),
    ("vps4-vps4", ("vps4",), False),
])
def test_hosts_are_a_count_a_range_or_names(value, names, counted):
    selection = parse_hosts(value)
    assert (selection.names, selection.counted) == (names, counted)


@pytest.mark.parametrize("value, message", [
    ("0", f"--hosts must be between 1 and {MAX_HOSTS}, not 0"),
    ("-1", f"--hosts must be between 1 and {MAX_HOSTS}, not -1"),
    ("vps9-vps7", "--hosts=vps9-vps7: 'vps9-vps7' runs backwards"),
    ("web1", "--hosts=web1: 'web1' is not a sandbox host name"),
    ("vps5;reboot", "is not a sandbox host name"),
    ("vps5,vps5", "--hosts=vps5,vps5: vps5 named twice"),
    ("vps5-vps7,vps6", "vps6 named twice"),
    (f"vps1-vps{MAX_HOSTS + 1}", f"{MAX_HOSTS + 1} VPSes; at most {MAX_HOSTS}"),
    ("vps0", "is not a sandbox host name"),
])
def test_a_bad_host_selection_is_one_clear_line(value, message):
    with pytest.raises(SandboxError, match=re.escape(message)):
        parse_hosts(value)


@pytest.mark.parametrize("call, message", [
    (lambda: parse_release_flags(["vps3:12"], "vps7-vps9"),
     "'vps3' is not one of vps7, vps8, vps9 (--hosts=vps7-vps9)"),
    (lambda: parse_group_flags(["vps1:db"], "vps5,vps6"), "'vps1' is not one of vps5, vps6 (--hosts=vps5,vps6)"),
    (lambda: plan_hosts("vps5,vps6", set(), replace=["vps1"]), "--replace=vps1: not one of vps5, vps6"),
    # A stopped host of the same inventory outside the selection: the suggestion keeps it selected.
    (lambda: plan_hosts("vps5,vps6", set(), stopped={"vps8"}),
     "`sudo invoke sandbox.up --hosts=vps5,vps6,vps8 --replace=vps8` replaces it"),
])
def test_flags_are_checked_against_the_selection(call, message):
    with pytest.raises(SandboxError, match=re.escape(message)):
        call()


def test_flags_of_a_selection_give_releases_and_groups_to_its_hosts_alone():
    assert parse_release_flags(["vps8:12"], "vps7-vps8") == {"vps7": "13", "vps8": "12"}
    assert parse_group_flags(["vps8:backup"], "vps7-vps8") == {"vps8": ["backup"]}


@pytest.mark.parametrize("selection, healthy, create, keep, extra", [
    ("vps5,vps6", set(), ["vps5", "vps6"], [], []),
    ("vps5,vps6", {"vps6"}, ["vps5"], ["vps6"], []),
    ("vps5", {"vps5", "vps6"}, [], ["vps5"], ["vps6"]),
])
def test_a_selection_creates_what_it_names_and_keeps_the_rest_of_its_inventory(selection, healthy, create, keep,
                                                                               extra):
    plan = plan_hosts(selection, healthy)
    assert ([vps.name for vps in plan.create], plan.keep, plan.extra) == (create, keep, extra)


APART = "/tmp/trial"
STATE = {
    "vps1": {"name": "vps1"},
    "vps2": {"name": "vps2"},
    "vps7": {"name": "vps7", "inventory": APART},
    "vps8": {"name": "vps8", "inventory": APART},
}


@pytest.mark.parametrize("selection, home, scope", [
    # The repository's inventory: its own hosts, never the ones listed apart (even powered off).
    ("2", None, {"vps1", "vps2"}),
    ("1", None, {"vps1", "vps2"}),
    ("4", None, {"vps1", "vps2", "vps3", "vps4"}),
    # Apart: its own hosts and what it asks for.
    ("vps7-vps9", APART, {"vps7", "vps8", "vps9"}),
    ("vps9", APART, {"vps7", "vps8", "vps9"}),
    ("vps3", "/tmp/other", {"vps3"}),
])
def test_a_call_concerns_its_own_inventorys_hosts_and_what_it_asks_for(selection, home, scope):
    assert hosts_in_scope(STATE, parse_hosts(selection), home) == scope


@pytest.mark.parametrize("selection, home, message", [
    ("8", None, "vps7 is listed in /tmp/trial/sandbox.yml, not in inventory/sandbox.yml"),
    ("vps7", None, "`sudo invoke sandbox.down --inventory=/tmp/trial`"),
    ("vps2-vps3", APART, "vps2 is listed in inventory/sandbox.yml, not in /tmp/trial/sandbox.yml"),
    ("vps2", APART, "`sudo invoke sandbox.down --inventory=inventory`"),
])
def test_a_vps_listed_in_another_inventory_is_refused_naming_it(selection, home, message):
    with pytest.raises(SandboxError, match=re.escape(message)):
        hosts_in_scope(STATE, parse_hosts(selection), home)


def test_the_repositorys_inventory_is_the_default_home_however_it_is_named(tmp_path):
    paths = SandboxPaths(repo=tmp_path)
    assert inventory_home(paths, None) is None
    assert inventory_home(paths, tmp_path / "inventory") is None
    assert inventory_home(paths, tmp_path / "trial" / ".." / "trial") == str(tmp_path / "trial")
    assert inventory_file_of(paths, str(tmp_path / "trial")) == tmp_path / "trial" / "sandbox.yml"


def test_each_inventory_file_lists_its_own_hosts_and_known_hosts_pins_every_one(tmp_path):
    paths = SandboxPaths(repo=tmp_path / "repo")
    apart = tmp_path / "trial"
    one, two = ({**host, "index": int(host["name"][3:])} for host in TWO_HOSTS)
    hosts = {"vps1": one, "vps2": {**two, "inventory": str(apart)}}
    changed = write_inventory(paths, hosts)
    assert set(changed) == {paths.known_hosts_file, paths.inventory_file, apart / "sandbox.yml",
                            apart / "sandbox.known_hosts"}
    assert list(load_yaml(paths.inventory_file)["hosts"]) == ["vps1"]
    listed_apart = load_yaml(apart / "sandbox.yml")
    assert list(listed_apart["hosts"]) == ["vps2"]
    # From outside the repository, the key is named by its absolute path; known_hosts sits beside each file.
    assert listed_apart["defaults"]["ssh_key"] == str(paths.private_key.resolve())
    assert listed_apart["known_hosts"] == "sandbox.known_hosts"
    assert (apart / "sandbox.known_hosts").read_text() == "10.213.2.2 ssh-ed25519 AAAAtwo\n"
    assert load_yaml(paths.inventory_file)["defaults"]["ssh_key"] == "../.vigil/sandbox/id_ed25519"
    # The repository's known_hosts pins every VPS: sandbox.ssh and the tests reach any with it.
    assert len(paths.known_hosts_file.read_text().splitlines()) == 2
    # A key re-pinned by hand in the apart file (provision.trust there) is kept.
    (apart / "sandbox.known_hosts").write_text("10.213.2.2 ssh-ed25519 AAAArepinned\n")
    assert write_inventory(paths, hosts) == []
    # Once every VPS left is listed apart, the repository's inventory file goes.
    assert write_inventory(paths, {"vps2": hosts["vps2"]}) == [paths.known_hosts_file, paths.inventory_file]
    assert not paths.inventory_file.exists() and (apart / "sandbox.yml").exists()
