"""Each VPS's own cgroup: which hierarchies, how nspawn is started in them, and their removal (in a scratch
directory standing for /sys/fs/cgroup: a unit test never touches this machine's cgroups)."""

import subprocess
from pathlib import Path

import pytest

from vigil.sandbox.cgroups import in_own_cgroups, remove_vps_cgroups, tracking_hierarchies
from vigil.sandbox.paths import SandboxError

HYBRID = """tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
UNIFIED = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"
V1_ONLY = "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\nproc /proc proc rw 0 0\n"


@pytest.mark.parametrize("mounts, expected", [
    (HYBRID, [Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]),  # this machine: hybrid
    (UNIFIED, [Path("/sys/fs/cgroup")]),                                          # a current distribution
    (V1_ONLY, []),                                                                # no hierarchy systemd tracks in
    ("", []),
])
def test_the_hierarchies_a_systemd_tracks_units_in_are_found(mounts, expected):
    assert tracking_hierarchies(mounts) == expected


def scratch_mounts(tmp_path: Path) -> str:
    return f"cgroup {tmp_path}/systemd cgroup rw,name=systemd 0 0\ncgroup2 {tmp_path}/unified cgroup2 rw 0 0\n"


def test_nspawn_is_started_in_the_vpss_own_cgroup_in_each_hierarchy(tmp_path):
    argv = in_own_cgroups("vps7", ["systemd-nspawn", "--machine=vps7"], scratch_mounts(tmp_path))
    own = [tmp_path / "systemd" / "vigil-sandbox" / "vps7", tmp_path / "unified" / "vigil-sandbox" / "vps7"]
    assert all(cgroup.is_dir() for cgroup in own)
    assert argv[:2] == ["sh", "-c"] and argv[-3:] == ["--", "systemd-nspawn", "--machine=vps7"]
    assert argv[4:-3] == [str(cgroup / "cgroup.procs") for cgroup in own]
    # What the wrapper does with them, run for real with `echo` in nspawn's place: its own pid written to each
    # file, then the command run as given.
    for cgroup in own:
        (cgroup / "cgroup.procs").write_text("")
    ran = subprocess.run([*argv[:-2], "echo", "booted"], capture_output=True, text=True, check=True)
    assert ran.stdout == "booted\n"
    written = {(cgroup / "cgroup.procs").read_text() for cgroup in own}
    assert len(written) == 1 and written.pop().strip().isdigit()


def test_without_a_tracking_hierarchy_nspawn_is_started_as_it_is(tmp_path):
    assert in_own_cgroups("vps7", ["systemd-nspawn"], V1_ONLY) == ["systemd-nspawn"]


def test_a_vps_down_leaves_no_cgroup_of_its_own_and_keeps_the_others(tmp_path):
    mounts = scratch_mounts(tmp_path)
    for name in ("vps7", "vps8"):
        in_own_cgroups(name, ["true"], mounts)
    (tmp_path / "unified" / "vigil-sandbox" / "vps7" / "payload" / "system.slice").mkdir(parents=True)
    remove_vps_cgroups("vps7", mounts)
    for hierarchy in ("systemd", "unified"):
        assert sorted(path.name for path in (tmp_path / hierarchy / "vigil-sandbox").iterdir()) == ["vps8"]
    remove_vps_cgroups("vps8", mounts)
    assert not (tmp_path / "unified" / "vigil-sandbox").exists()


def test_a_cgroup_that_cannot_be_made_is_a_clear_error_naming_the_vps_and_the_path(tmp_path):
    (tmp_path / "unified").write_text("a file where the hierarchy should be")
    with pytest.raises(SandboxError, match=f"vps7: cannot make its own cgroup {tmp_path}/unified/vigil-sandbox/vps7"):
        in_own_cgroups("vps7", ["systemd-nspawn"], f"cgroup2 {tmp_path}/unified cgroup2 rw 0 0\n")
