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


SERVED = "/usr/local/sbin/vigil-start-served-colors"
UPSTREAMS = "/etc/nginx/conf.d/together-pray-upstreams.conf"


def test_a_boot_starts_the_served_colors_unit_and_no_color_of_its_own():
    files = app_files()
    assert "[Install]" not in files["/etc/systemd/system/together-pray-backend@.service"].content.decode()
    unit = files["/etc/systemd/system/together-pray-served-colors.service"].content.decode()
    assert f"ExecStart={SERVED}" in unit and "WantedBy=multi-user.target" in unit
    # The links deploys made when they enabled a color go.
    assert "/etc/systemd/system/multi-user.target.wants/together-pray-frontend@green.service" in files


@pytest.fixture
def served(tmp_path):
    """The real boot helper on scratch files: `srv` stands for /srv/together-pray, `upstreams` for nginx's file,
    and a `systemctl` on PATH that writes down what it is asked."""
    script = app_files()[SERVED].content.decode()
    script = script.replace("/srv/together-pray", str(tmp_path / "srv")).replace(UPSTREAMS, str(tmp_path / "upstreams"))
    (tmp_path / "served").write_text(script)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "asked"}\n')
    (tmp_path / "bin" / "systemctl").chmod(0o755)
    for service in ("backend", "frontend"):
        (tmp_path / "srv" / service / "colors").mkdir(parents=True)
        (tmp_path / "srv" / service / "releases" / "r1").mkdir(parents=True)

    def run(upstreams: str, deployed: dict[str, str]):
        (tmp_path / "upstreams").write_text(upstreams)
        for service, color in deployed.items():
            os.symlink("../releases/r1", tmp_path / "srv" / service / "colors" / color)
        done = subprocess.run(["sh", str(tmp_path / "served")], capture_output=True, text=True, timeout=10,
                              env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})
        asked = (tmp_path / "asked").read_text().splitlines() if (tmp_path / "asked").exists() else []
        return done, asked

    return run


def upstreams(backend: int, frontend: int) -> str:
    return (f"upstream together_pray_backend {{ server 127.0.0.1:{backend}; keepalive 16; }}\n"
            f"upstream together_pray_frontend {{ server 127.0.0.1:{frontend}; keepalive 16; }}\n")


# (upstream ports backend/frontend, colors with a release, started, exit status, said)
BOOTS = [
    # The served color of each service, whichever color that is.
    ((3001, 3101), {"backend": "blue", "frontend": "blue"},
     ["together-pray-backend@blue.service", "together-pray-frontend@blue.service"], 0, ""),
    ((3002, 3101), {"backend": "green", "frontend": "blue"},
     ["together-pray-backend@green.service", "together-pray-frontend@blue.service"], 0, ""),
    # A service never deployed starts nothing; nor does a served color that has no release.
    ((3001, 3101), {"backend": "blue"}, ["together-pray-backend@blue.service"], 0,
     "frontend: nginx serves blue, which has no release yet: nothing to start"),
    ((3002, 3101), {"backend": "blue", "frontend": "blue"}, ["together-pray-frontend@blue.service"], 0,
     "backend: nginx serves green, which has no release yet"),
    # An upstream on no color's port: the other service still starts, and the boot unit fails, naming it.
    ((4000, 3101), {"backend": "blue", "frontend": "blue"}, ["together-pray-frontend@blue.service"], 1,
     "backend: no upstream together_pray_backend on a color's port"),
]


@pytest.mark.parametrize("ports, deployed, started, status, said", BOOTS)
def test_a_boot_starts_the_color_each_upstream_serves(served, ports, deployed, started, status, said):
    done, asked = served(upstreams(*ports), deployed)
    assert (done.returncode, asked) == (status, [f"start --no-block -- {unit}" for unit in started]), done.stderr
    assert said in done.stdout + done.stderr
