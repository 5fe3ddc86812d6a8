"""The sample app on an onboarded host, run with nothing but the deploy user's scoped sudo.

The release is put in place by hand here, as a deploy will: unpacked as the
deploy user, its migrations run by their unit, its color started through
vigil-app-unit. The page then shows prayers read from PostgreSQL over HTTPS.
"""

import shlex
import subprocess
import time

import pytest
import requests

from conftest import REPO, SSH_OPTIONS, invoke

CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
HOST = "vps1"  # web and db in the session's layout: DATABASE_URL over loopback


@pytest.fixture(scope="module")
def artifacts():
    built = invoke("deploy.build", timeout=1800)
    assert built.code == 0, built.stdout[-3000:] + built.stderr
    found = {}
    for line in built.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("backend", "frontend") and parts[2].endswith(".tar.gz"):
            found[parts[0]] = (parts[1], parts[2])
    assert set(found) == {"backend", "frontend"}, built.stdout
    return found


def as_deploy(address: str, script: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", *SSH_OPTIONS, f"deploy@{address}", script], input=stdin, capture_output=True, timeout=300)


UNPACK = ('set -e; root=/srv/together-pray/"$1"; release="$root/releases/$2"; rm -rf "$release.partial"; '
          'mkdir "$release.partial"; tar -xzf - -C "$release.partial"; printf "RELEASE_ID=%s\\n" "$2" > "$release.partial/release.env"; '
          'rm -rf "$release"; mv "$release.partial" "$release"; ln -sfn "../releases/$2" "$root/colors/blue"')


def test_the_deploy_user_runs_a_release_with_its_scoped_sudo_only(provisioned, sandbox, artifacts):
    address = sandbox.addresses[HOST]
    assert invoke("secrets.push", f"--limit={HOST}").code == 0
    for service, (release, path) in artifacts.items():
        unpacked = as_deploy(address, f"sh -c {shlex.quote(UNPACK)} unpack {service} {release}", stdin=open(path, "rb").read())
        assert unpacked.returncode == 0, unpacked.stderr.decode()
    backend = artifacts["backend"][0]
    migrate = as_deploy(address, f"sudo -n /usr/local/sbin/vigil-app-unit start together-pray-backend-migrate@{backend}.service")
    assert migrate.returncode == 0, migrate.stderr.decode()
    journal = as_deploy(address, f"journalctl -q --no-pager -u together-pray-backend-migrate@{backend}.service")
    assert b"has been executed successfully" in journal.stdout or b"No migrations are pending" in journal.stdout, journal.stdout[-2000:]
    started = as_deploy(address, "sudo -n /usr/local/sbin/vigil-app-unit restart together-pray-backend@blue.service "
                                 "together-pray-frontend@blue.service")
    assert started.returncode == 0, started.stderr.decode()

    health = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = requests.get(f"https://{address}/api/health", verify=str(CA), timeout=10)
        if response.status_code == 200:
            health = response.json()
            break
        time.sleep(1)
    assert health == {"status": "ok", "release": backend, "database": "up"}
    page = requests.get(f"https://{address}/", verify=str(CA), timeout=10)
    assert page.status_code == 200 and "Welcome. May this be a place of peace" in page.text
    # The units run as the app's user, from the release the color points at.
    assert sandbox.ssh(HOST, "ps -o user= -C node | sort -u").split() == ["together-pray"]
