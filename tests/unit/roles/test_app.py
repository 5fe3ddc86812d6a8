"""roles/app: each color's unit, and the root helper that gives it its release id without reading
anything through the deploy user's files."""

import os
import subprocess

import pytest

from tests.support.inventories import layout
from vigil.core.roles import load_role

HELPER = "/usr/local/sbin/vigil-release-env"


def app_files() -> dict:
    inventory = layout({"web": ["web1"], "db": ["web1"]})
    roles = [load_role("app"), load_role("nginx")]
    vars = inventory.vars_for(inventory.hosts["web1"], roles, {})
    return {getattr(op, "path", ""): op for op in roles[0].tasks(roles[0], vars)}


def test_a_color_unit_reads_its_release_id_only_from_roots_own_file():
    unit = app_files()["/etc/systemd/system/together-pray-backend@.service"].content.decode()
    environment = [line for line in unit.splitlines() if line.startswith("EnvironmentFile=")]
    # Every file systemd reads as root is root's: none under the deploy user's /srv/together-pray.
    assert environment and not [line for line in environment if "/srv/" in line]
    assert "EnvironmentFile=-/run/together-pray/backend-%i.release.env" in environment
    assert f"ExecStartPre=+{HELPER} backend %i" in unit


@pytest.fixture
def helper(tmp_path):
    """The real helper on scratch directories: `root` stands for /srv/together-pray, `run` for /run/together-pray."""
    script = app_files()[HELPER].content.decode()
    script = script.replace("/srv/together-pray", str(tmp_path / "srv")).replace("/run/together-pray",
                                                                                   str(tmp_path / "run"))
    (tmp_path / "helper").write_text(script)
    (tmp_path / "srv" / "backend" / "colors").mkdir(parents=True)
    (tmp_path / "srv" / "backend" / "releases").mkdir()

    def run(*args):
        return subprocess.run(["sh", str(tmp_path / "helper"), *args], capture_output=True, text=True, timeout=10)

    run.colors = tmp_path / "srv" / "backend" / "colors"
    run.written = lambda color: (tmp_path / "run" / f"backend-{color}.release.env")
    return run


def test_the_release_id_comes_from_the_links_name(helper):
    os.symlink("../releases/20261203T1100-a1b2c3d", helper.colors / "blue")
    done = helper("backend", "blue")
    assert done.returncode == 0, done.stderr
    assert helper.written("blue").read_text() == "RELEASE_ID=20261203T1100-a1b2c3d\n"


@pytest.mark.parametrize("make, args, code, said", [
    # A FIFO, a file or a link elsewhere where the color link should be: nothing read, nothing written.
    (lambda colors: os.mkfifo(colors / "blue"), ["backend", "blue"], 1, "is not a link to a release"),
    (lambda colors: (colors / "blue").write_text("RELEASE_ID=x\n"), ["backend", "blue"], 1, "is not a link"),
    (lambda colors: os.symlink("/etc/vigil/probe.env", colors / "blue"), ["backend", "blue"], 1,
     "points at no release"),
    (lambda colors: os.symlink("../releases/x/../../../etc", colors / "blue"), ["backend", "blue"], 1,
     "points at no release"),
    (lambda colors: None, ["backend", "purple"], 64, "usage"),
    (lambda colors: None, ["../backend", "blue"], 64, "usage"),
])
def test_anything_but_a_link_to_a_release_is_refused(helper, make, args, code, said):
    make(helper.colors)
    done = helper(*args)
    assert done.returncode == code and said in done.stderr
    assert not helper.written("blue").exists()
