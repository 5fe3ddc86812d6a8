"""Previews beside the sandbox env on its two web hosts: two branches of the app served side by side with
staging, each with its own release, database (a branch of staging's, made by the backup host) and secrets,
one on vps1 (the database host: its database over loopback, https://<name>.preview.together-pray.test), the
other on vps2 (over TLS, under vps2's own domain), then removed with nothing left behind. Between: a branch
that does not build, a preview whose health gate fails, and hosts at their limit leave nothing and change
nothing; each preview's role reaches its own database and no other; an update keeps a preview's data;
prune removes the expired one.

One preview serves this checkout as the env's deploys built it (--worktree: their artifacts, no build);
the other a backend changed in a scratch copy (--source=backend=...: one build), with the frontend as the
first's. The previews' settings (previews_domain, group preview: vps1, vps2) are in a scratch copy of the
sandbox inventory.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
import requests

from tests.support.accounts import signed_in
from tests.support.named_https import session_for
from tests.support.sandbox_hosts import REPO, invoke, ssh
from vigil.previews.slug import slug_of

CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
DOMAIN, OTHER_DOMAIN = "preview.together-pray.test", "two.preview.together-pray.test"
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


def previews_on(data: dict, **more) -> None:
    """Previews on vps1 and vps2, each under its own domain (one wildcard DNS record each)."""
    data["vars"].update({"previews_domain": DOMAIN, **more})
    data["hosts"]["vps2"].setdefault("vars", {})["previews_domain"] = OTHER_DOMAIN
    data["groups"]["preview"] = {"hosts": ["vps1", "vps2"]}


@pytest.fixture(scope="module")
def previews(deployed, sandbox, changed_backend, tmp_path_factory):
    inventory = sandbox.scratch_inventory(tmp_path_factory.mktemp("inventory"), previews_on)
    env = {"VIGIL_INVENTORY": str(inventory)}
    # vps1: the previews' site settings and pg_hba.conf's rules for them; vps2: the previews' settings.
    readied = invoke("provision.server", "--limit=vps1,vps2", extra_env=env, timeout=1800)
    assert readied.code == 0, readied.stdout + readied.stderr
    # A backup in the backup host's repository, for the previews' databases to be branched from (run alone,
    # this module may come before any other made one).
    backed_up = invoke("backup.create", "--label=previews", timeout=900)
    assert backed_up.code == 0, backed_up.stdout[-2000:] + backed_up.stderr
    made = {}
    builds = {SAME: ["--worktree"], CHANGED: ["--worktree", f"--source=backend={changed_backend}"]}
    for branch in (SAME, CHANGED):
        run = invoke("preview.up", f"--branch={branch}", *builds[branch], "--pr=7", "--json", extra_env=env,
                     timeout=1800)
        assert run.code == 0, run.stdout[-3000:] + run.stderr[-3000:]
        made[branch] = json.loads(run.stdout[run.stdout.index("{"):])
    yield {"env": env, "made": made, "address": sandbox.addresses["vps1"],
           "on": {branch: sandbox.addresses[made[branch]["host"]] for branch in made},
           "names": {branch: made[branch]["url"].removeprefix("https://") for branch in made}}
    for branch in (SAME, CHANGED):
        invoke("preview.down", f"--branch={branch}", "--missing-ok", extra_env=env, timeout=600)


def get(previews, branch: str, path: str, headers: dict | None = None) -> requests.Response:
    name = previews["names"][branch]
    return session_for(name, previews["on"][branch]).get(f"https://{name}{path}", verify=str(CA), timeout=15,
                                                         headers=headers)


def listed(previews) -> dict[str, dict]:
    """Every preview's record, by name, each with the host it runs on."""
    hosts = json.loads(invoke("preview.list", "--json", extra_env=previews["env"]).stdout)
    return {record["slug"]: {**record, "on": host} for host, records in hosts.items() for record in records}


def test_each_preview_serves_its_own_release_over_https_beside_staging(previews):
    records = listed(previews)
    assert set(records) == {slug_of(SAME), slug_of(CHANGED)}
    # The second goes where there is the most room: the other host.
    assert (records[slug_of(SAME)]["on"], records[slug_of(CHANGED)]["on"]) == ("vps1", "vps2")
    # The env has a backup host: each database is a branch of staging's, made there.
    for branch in (SAME, CHANGED):
        assert previews["made"][branch]["data"].startswith("together_pray as of "), previews["made"][branch]
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
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        # CORS answers the preview's own address, not staging's nor the other preview's.
        origin = f"https://{previews['names'][branch]}"
        own = get(previews, branch, "/api/prayers", {"Origin": origin}).headers
        assert own["Access-Control-Allow-Origin"] == origin
        for foreign in ("http://localhost", f"https://{previews['names'][SAME if branch == CHANGED else CHANGED]}"):
            denied = get(previews, branch, "/api/prayers", {"Origin": foreign}).headers
            assert not [name for name in denied if name.lower().startswith("access-control-")], (branch, foreign)
    assert len(releases) == 2  # the changed backend is a release of its own
    # Staging still serves its own release beside them (not the changed branch's).
    staging = requests.get(f"https://{previews['address']}/api/health", verify=str(CA), timeout=15).json()
    assert staging["status"] == "ok" and staging["release"] != records[slug_of(CHANGED)]["releases"]["backend"]


def test_a_prayer_made_in_one_preview_is_in_neither_the_other_nor_staging(previews):
    marker = f"only in one preview {uuid.uuid4()}"
    made = get(previews, SAME, "/api/health")  # warm the session's name
    assert made.status_code == 200
    name = previews["names"][SAME]
    session = session_for(name, previews["on"][SAME])
    posted = session.post(f"https://{name}/api/prayers", json={"body": marker}, verify=str(CA), timeout=15,
                          headers=signed_in(f"https://{name}", str(CA), session, "preview"))
    assert posted.status_code == 201, posted.text
    assert marker in get(previews, SAME, "/api/prayers").text
    assert marker not in get(previews, CHANGED, "/api/prayers").text
    staging = requests.get(f"https://{previews['address']}/api/prayers", verify=str(CA), timeout=15)
    assert staging.status_code == 200 and marker not in staging.text


def test_each_preview_has_its_own_database_role_and_fresh_signing_keys(previews):
    files = {branch: ssh(previews["on"][branch], f"cat /etc/together-pray/previews/{slug_of(branch)}/backend.env")
             for branch in (SAME, CHANGED)}
    staging = ssh(previews["address"], "cat /etc/together-pray/backend.env")
    secret = {name: {line.split("=", 1)[1] for line in text.splitlines() if line.startswith("JWT_SECRET=")}
              for name, text in {**files, "staging": staging}.items()}
    assert len(set.union(*secret.values())) == 3
    database = {branch: "preview_" + slug_of(branch).replace("-", "_") for branch in (SAME, CHANGED)}
    for branch, text in files.items():
        assert f"FRONTEND_URL=https://{previews['names'][branch]}" in text
    # On the database host over loopback; from the other host over TLS, the server verified.
    assert f"@127.0.0.1:5432/{database[SAME]}\n" in files[SAME]
    assert f"@{previews['address']}:5432/{database[CHANGED]}?sslmode=verify-full&sslrootcert=" in files[CHANGED]
    mode = ssh(previews["on"][CHANGED], f"stat -c '%a %U' /etc/together-pray/previews/{slug_of(CHANGED)}/backend.env")
    assert mode.strip() == "600 together-pray"
    # Capped as roles/previews's defaults say (384M, 50% of a core). The sandbox's containers (cgroup v1 on
    # this machine) cannot enforce them; a VPS's systemd does.
    for service in ("backend", "frontend"):
        caps = ssh(previews["on"][CHANGED], "systemctl show -p MemoryMax -p CPUQuotaPerSecUSec "
                                            f"together-pray-preview-{service}@{slug_of(CHANGED)}.service")
        assert sorted(caps.split()) == ["CPUQuotaPerSecUSec=500ms", "MemoryMax=402653184"], caps
    # Each role, with its own password, is turned away from staging's database and from the other preview's.
    passwords = {branch: next(line for line in text.splitlines() if line.startswith("DATABASE_URL="))
                 .split("://", 1)[1].split("@", 1)[0].split(":", 1)[1] for branch, text in files.items()}
    for branch, other in ((SAME, CHANGED), (CHANGED, SAME)):
        for target in ("together_pray", database[other]):
            said = connect_as(previews["address"], database[branch], passwords[branch], target)
            assert "pg_hba.conf rejects connection" in said or "no pg_hba.conf entry" in said, (branch, target, said)
        assert connect_as(previews["address"], database[branch], passwords[branch], database[branch]).strip() == "1"


def connect_as(address: str, role: str, password: str, database: str) -> str:
    """psql on the database host as `role` over loopback TCP (the password in a private pass file, on no
    command line); what it printed."""
    return ssh(address, f"""f=$(mktemp); trap 'rm -f "$f"' EXIT; cat > "$f" <<'PASS'
*:*:*:{role}:{password}
PASS
PGPASSFILE="$f" psql -X -A -t -h 127.0.0.1 -U {role} -d {database} -c 'SELECT 1' 2>&1 || true""")


def database_names(previews) -> list[str]:
    return ssh(previews["address"], "runuser -u postgres -- psql -X -A -t -c 'SELECT datname FROM pg_database'"
               ).split()


def test_a_branch_that_does_not_build_leaves_nothing_and_staging_serves(previews, tmp_path):
    broken = tmp_path / "backend"
    broken.mkdir()
    (broken / "package.json").write_text(json.dumps({"name": "broken", "version": "1.0.0", "private": True,
                                                     "scripts": {"build": "echo 'a type error' >&2; exit 1"}}))
    (broken / "package-lock.json").write_text(json.dumps({"name": "broken", "version": "1.0.0",
                                                          "lockfileVersion": 3, "requires": True,
                                                          "packages": {"": {"name": "broken", "version": "1.0.0"}}}))
    before = database_names(previews)
    run = invoke("preview.up", "--branch=broken/build", "--worktree", f"--source=backend={broken}",
                 extra_env=previews["env"], timeout=900)
    assert run.code != 0 and "npm run build" in run.stdout + run.stderr, run.stdout[-2000:] + run.stderr[-2000:]
    assert set(listed(previews)) == {slug_of(SAME), slug_of(CHANGED)}
    assert database_names(previews) == before
    for address in set(previews["on"].values()):
        assert slug_of("broken/build") not in ssh(address, "ls /etc/nginx/sites-enabled")
    staging = requests.get(f"https://{previews['address']}/api/health", verify=str(CA), timeout=15)
    assert staging.status_code == 200


def test_a_preview_whose_health_gate_fails_leaves_nothing_and_staging_serves(previews, sandbox, tmp_path):
    """The fault: the port the preview's backend would listen on is taken on every preview host (a squatter
    answering 404), so its backend cannot start and the gate never sees its health."""
    impatient = {"VIGIL_INVENTORY": str(sandbox.scratch_inventory(
        tmp_path, lambda data: previews_on(data, app_health_timeout=15)))}
    port = 4100 + 2  # the next free slot's backend: each host runs one preview
    hosts = sorted(set(previews["on"].values()))
    for address in hosts:
        ssh(address, f"systemd-run --unit=vigil-test-squatter python3 -m http.server {port} --bind 127.0.0.1")
    before = database_names(previews)
    try:
        run = invoke("preview.up", "--branch=gate/fails", "--worktree", extra_env=impatient, timeout=900)
    finally:
        for address in hosts:
            ssh(address, "systemctl stop vigil-test-squatter.service")
    said = run.stdout + run.stderr
    assert run.code != 0 and "the health gate (backend at http://127.0.0.1:4102" in said, said[-2000:]
    slug = slug_of("gate/fails")
    assert slug not in listed(previews) and database_names(previews) == before
    for address in hosts:
        left = ssh(address, f"ls /etc/nginx/sites-enabled /srv/together-pray/previews /etc/together-pray/previews; "
                            f"systemctl list-units --all --plain --no-legend '*{slug}*'")
        assert slug not in left, left
    roles = ssh(previews["address"], "runuser -u postgres -- psql -X -A -t -c 'SELECT rolname FROM pg_roles'")
    assert "preview_" + slug.replace("-", "_") not in roles.split()
    staging = requests.get(f"https://{previews['address']}/api/health", verify=str(CA), timeout=15)
    assert staging.status_code == 200


def test_a_host_at_its_limit_refuses_another_preview_naming_the_ones_to_remove(previews, sandbox, tmp_path):
    full = {"VIGIL_INVENTORY": str(sandbox.scratch_inventory(
        tmp_path, lambda data: previews_on(data, previews_max_per_host=1)))}
    run = invoke("preview.up", "--branch=one-too-many", "--worktree", extra_env=full, timeout=900)
    said = run.stdout + run.stderr
    assert run.code != 0 and "runs its most previews (1 each" in said, said[-2000:]
    assert slug_of(SAME) in said and slug_of(CHANGED) in said
    assert "preview_" + slug_of("one-too-many").replace("-", "_") not in database_names(previews)


def test_an_update_keeps_the_previews_data_and_renews_its_password_and_expiry(previews):
    marker = f"kept through an update {uuid.uuid4()}"
    name = previews["names"][SAME]
    session = session_for(name, previews["on"][SAME])
    posted = session.post(f"https://{name}/api/prayers", json={"body": marker}, verify=str(CA), timeout=15,
                          headers=signed_in(f"https://{name}", str(CA), session, "preview"))
    assert posted.status_code == 201, posted.text
    env_file = f"cat /etc/together-pray/previews/{slug_of(SAME)}/backend.env"
    before, record = ssh(previews["on"][SAME], env_file), listed(previews)[slug_of(SAME)]
    again = invoke("preview.up", f"--branch={SAME}", "--worktree", "--json", extra_env=previews["env"], timeout=1800)
    assert again.code == 0, again.stdout[-3000:] + again.stderr[-3000:]
    made = json.loads(again.stdout[again.stdout.index("{"):])
    assert (made["created"], made["data"], made["host"]) == (False, "kept", "vps1")
    assert marker in get(previews, SAME, "/api/prayers").text
    after = ssh(previews["on"][SAME], env_file)
    url = [line for line in after.splitlines() if line.startswith("DATABASE_URL=")]
    assert url and url[0] not in before  # a new password
    assert listed(previews)[slug_of(SAME)]["expires"] > record["expires"]


def test_logs_show_the_previews_own_units(previews):
    shown = invoke("preview.logs", slug_of(CHANGED), "--lines=1000", extra_env=previews["env"])
    assert shown.code == 0 and f"together-pray-preview-backend@{slug_of(CHANGED)}" in shown.stdout, shown.stdout[-2000:]
    assert f"@{slug_of(SAME)}" not in shown.stdout


def test_a_burst_against_a_previews_api_gets_429s(previews):
    name = previews["names"][CHANGED]
    with session_for(name, previews["on"][CHANGED]) as session:
        codes = [session.get(f"https://{name}/api/health", verify=str(CA), timeout=10).status_code
                 for _ in range(60)]  # bounded: 60 requests
    assert 429 in codes and codes[0] != 429


def test_prune_removes_the_expired_preview_and_only_it(previews):
    """Time passes for one preview: its record's expiry set in the past on its host, as seven days would."""
    record = f"/var/lib/vigil/previews/{slug_of(SAME)}.json"
    ssh(previews["on"][SAME], f"python3 -c 'import json, sys, time; p = sys.argv[1]; d = json.load(open(p)); "
                              f"d[\"expires\"] = time.time() - 60; json.dump(d, open(p, \"w\"))' {record}")
    pruned = invoke("preview.prune", "--json", extra_env=previews["env"], timeout=600)
    assert pruned.code == 0, pruned.stdout + pruned.stderr
    assert [item["slug"] for item in json.loads(pruned.stdout[pruned.stdout.index("["):])] == [slug_of(SAME)]
    assert set(listed(previews)) == {slug_of(CHANGED)}
    assert "preview_" + slug_of(SAME).replace("-", "_") not in database_names(previews)


def test_down_removes_everything_and_onboarding_then_finds_nothing_to_change(previews):
    slug = slug_of(CHANGED)
    gone = invoke("preview.down", slug, "--json", extra_env=previews["env"])
    assert gone.code == 0, gone.stdout + gone.stderr
    removed = json.loads(gone.stdout[gone.stdout.index("{"):])["removed"]
    assert set(removed["vps2"]) >= {"record", "units", "site", "files", "env files"}
    assert removed["vps1"] == ["database and role"]  # its database, on the database host
    again = invoke("preview.down", slug, extra_env=previews["env"])
    assert again.code != 0 and f"no preview {slug} in sandbox" in again.stdout + again.stderr
    left = ssh(previews["on"][CHANGED], f"ls /etc/nginx/sites-enabled /srv/together-pray/previews "
                                        f"/etc/together-pray/previews; systemctl list-units --all --plain '*{slug}*'")
    assert slug not in left and "preview_" + slug.replace("-", "_") not in database_names(previews)
    rerun = invoke("provision.server", "--limit=vps1,vps2", "--json", extra_env=previews["env"], timeout=1800)
    assert rerun.code == 0, rerun.stdout[-2000:]
    assert (rerun.host("vps1")["changed"], rerun.host("vps2")["changed"]) == (0, 0), rerun.stdout[-2000:]
