"""Previews beside the sandbox env on vps1 (its web and database host): two branches of the app served side
by side with staging at https://<name>.preview.together-pray.test, each with its own release, database and
secrets, then removed with nothing left behind.

One preview serves this checkout as the env's deploys built it (--worktree: their artifacts, no build);
the other a backend changed in a scratch copy (--source=backend=...: one build), with the frontend as the
first's. The previews' settings (previews_domain, group preview: vps1) are in a scratch copy of the
sandbox inventory.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
import requests

from tests.support.named_https import session_for
from tests.support.sandbox_hosts import REPO, invoke, ssh
from vigil.previews.slug import slug_of

CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
DOMAIN = "preview.together-pray.test"
SAME, CHANGED = "Feature/Login.v2", "fix/prayers-$(id)"


@pytest.fixture(scope="module")
def changed_backend(tmp_path_factory):
    """The sample backend copied, with a change: a release of its own."""
    copy = tmp_path_factory.mktemp("branch") / "backend"
    shutil.copytree(REPO / "examples" / "together-pray" / "backend", copy,
                    ignore=shutil.ignore_patterns("node_modules", "dist"))
    controller = copy / "src" / "prayers.controller.ts"
    controller.write_text(controller.read_text() + "\n// A branch's change: its own release.\n")
    return copy


@pytest.fixture(scope="module")
def previews(deployed, sandbox, changed_backend, tmp_path_factory):
    def edit(data):
        data["vars"]["previews_domain"] = DOMAIN
        data["groups"]["preview"] = {"hosts": ["vps1"]}

    inventory = sandbox.scratch_inventory(tmp_path_factory.mktemp("inventory"), edit)
    env = {"VIGIL_INVENTORY": str(inventory)}
    readied = invoke("provision.server", "--limit=vps1", extra_env=env, timeout=1800)
    assert readied.code == 0, readied.stdout + readied.stderr
    made = {}
    builds = {SAME: ["--worktree"], CHANGED: ["--worktree", f"--source=backend={changed_backend}"]}
    for branch in (SAME, CHANGED):
        run = invoke("preview.up", f"--branch={branch}", *builds[branch], "--pr=7", "--json", extra_env=env,
                     timeout=1800)
        assert run.code == 0, run.stdout[-3000:] + run.stderr[-3000:]
        made[branch] = json.loads(run.stdout[run.stdout.index("{"):])
    yield {"env": env, "made": made, "address": sandbox.addresses["vps1"]}
    for branch in (SAME, CHANGED):
        invoke("preview.down", f"--branch={branch}", "--missing-ok", extra_env=env, timeout=600)


def get(previews, branch: str, path: str) -> requests.Response:
    name = f"{slug_of(branch)}.{DOMAIN}"
    return session_for(name, previews["address"]).get(f"https://{name}{path}", verify=str(CA), timeout=15)


def test_each_preview_serves_its_own_release_over_https_beside_staging(previews):
    listed = json.loads(invoke("preview.list", "--json", extra_env=previews["env"]).stdout)
    records = {record["slug"]: record for record in listed["vps1"]}
    assert set(records) == {slug_of(SAME), slug_of(CHANGED)}
    releases = set()
    for branch in (SAME, CHANGED):
        health = get(previews, branch, "/api/health").json()
        record = records[slug_of(branch)]
        assert health == {"status": "ok", "release": record["releases"]["backend"], "database": "up"}
        assert record["branch"] == branch and record["pr"] == 7 and record["memory"] > 0
        releases.add(health["release"])
        page = get(previews, branch, "/")
        assert page.status_code == 200 and "</html>" in page.text
        assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    assert len(releases) == 2  # the changed backend is a release of its own
    staging = requests.get(f"https://{previews['address']}/api/health", verify=str(CA), timeout=15).json()
    # Built as the env's deploys build (--worktree): the env's own release, run as a preview beside it.
    assert records[slug_of(SAME)]["releases"]["backend"] == staging["release"]
    assert records[slug_of(CHANGED)]["releases"]["backend"] != staging["release"]


def test_a_prayer_made_in_one_preview_is_in_neither_the_other_nor_staging(previews):
    marker = f"only in one preview {uuid.uuid4()}"
    made = get(previews, SAME, "/api/health")  # warm the session's name
    assert made.status_code == 200
    name = f"{slug_of(SAME)}.{DOMAIN}"
    posted = session_for(name, previews["address"]).post(f"https://{name}/api/prayers",
                                                         json={"author": "preview", "body": marker},
                                                         verify=str(CA), timeout=15)
    assert posted.status_code == 201, posted.text
    assert marker in get(previews, SAME, "/api/prayers").text
    assert marker not in get(previews, CHANGED, "/api/prayers").text
    staging = requests.get(f"https://{previews['address']}/api/prayers", verify=str(CA), timeout=15)
    assert staging.status_code == 200 and marker not in staging.text


def test_each_preview_has_its_own_database_role_and_fresh_signing_keys(previews):
    files = {branch: ssh(previews["address"], f"cat /etc/together-pray/previews/{slug_of(branch)}/backend.env")
             for branch in (SAME, CHANGED)}
    staging = ssh(previews["address"], "cat /etc/together-pray/backend.env")
    secret = {name: {line.split("=", 1)[1] for line in text.splitlines() if line.startswith("JWT_SECRET=")}
              for name, text in {**files, "staging": staging}.items()}
    assert len(set.union(*secret.values())) == 3
    for branch, text in files.items():
        database = "preview_" + slug_of(branch).replace("-", "_")
        assert f"@127.0.0.1:5432/{database}" in text and f"FRONTEND_URL=https://{slug_of(branch)}.{DOMAIN}" in text
    mode = ssh(previews["address"], f"stat -c '%a %U' /etc/together-pray/previews/{slug_of(SAME)}/backend.env")
    assert mode.strip() == "600 together-pray"


def test_down_removes_everything_and_onboarding_then_finds_nothing_to_change(previews):
    slug = slug_of(CHANGED)
    gone = invoke("preview.down", slug, "--json", extra_env=previews["env"])
    assert gone.code == 0, gone.stdout + gone.stderr
    removed = json.loads(gone.stdout[gone.stdout.index("{"):])["removed"]["vps1"]
    assert set(removed) >= {"record", "units", "site", "files", "env files", "database and role"}
    again = invoke("preview.down", slug, extra_env=previews["env"])
    assert again.code != 0 and f"no preview {slug} in sandbox" in again.stdout + again.stderr
    left = ssh(previews["address"], f"ls /etc/nginx/sites-enabled /srv/together-pray/previews "
                                    f"/etc/together-pray/previews; systemctl list-units --all --plain '*{slug}*'; "
                                    "runuser -u postgres -- psql -X -A -t -c 'SELECT datname FROM pg_database'")
    assert slug not in left and slug.replace("-", "_") not in left
    rerun = invoke("provision.server", "--limit=vps1", "--json", extra_env=previews["env"], timeout=1800)
    assert rerun.code == 0 and rerun.host("vps1")["changed"] == 0, rerun.stdout[-2000:]
