"""Deploys of the real sample app to the session's web hosts: vps1 (also the database) and vps2 (over TLS to it).

Everything runs as a person would: `invoke deploy.*`, then HTTPS requests and
reads of the hosts. Variants of the backend (a failing health check, a failing
migration) are scratch copies of the sample with one change each.
"""

import json
import re
import shlex
import shutil
import subprocess
import threading
import time

import requests
import yaml

from tests.support.load import LoadLoop
from tests.support.sandbox_hosts import REPO, SSH_OPTIONS, invoke
from vigil.core.errors import ExitCode
from vigil.core.yaml_loader import load_yaml
from vigil.deploy.scripts import UNPACK

CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
BACKEND = REPO / "examples" / "together-pray" / "backend"
WEB = ("vps1", "vps2")


def health(address: str) -> dict:
    for _ in range(10):
        response = requests.get(f"https://{address}/api/health", verify=str(CA), timeout=10)
        if response.status_code != 429:  # the API's rate limit, after a burst: it refills at 10 per second
            break
        time.sleep(0.5)
    return response.json() if response.status_code == 200 else {"status": response.status_code}


def current_release(sandbox, host: str, service: str = "backend") -> str:
    return sandbox.ssh(host, f"basename $(readlink /srv/together-pray/{service}/current)").strip()


def variant(tmp_path, name: str, edit) -> str:
    """A scratch copy of the sample backend with one change; returns an inventory pointing app_services at it."""
    source = tmp_path / name
    shutil.copytree(BACKEND, source, ignore=shutil.ignore_patterns("node_modules", "dist"))
    edit(source)
    return str(source)


def add_migration(source, timestamp: int, name: str, up: list[str], down: list[str]) -> None:
    """A TypeORM migration in the scratch copy's src/migrations, its up and down as SQL statements."""
    body = lambda statements: "".join(f"    await queryRunner.query(`{sql}`);\n" for sql in statements)  # noqa: E731
    (source / "src" / "migrations" / f"{timestamp}-{name}.ts").write_text(
        'import { MigrationInterface, QueryRunner } from "typeorm";\n'
        f"export class {name}{timestamp} implements MigrationInterface {{\n"
        f'  name = "{name}{timestamp}";\n'
        f"  public async up(queryRunner: QueryRunner): Promise<void> {{\n{body(up)}  }}\n"
        f"  public async down(queryRunner: QueryRunner): Promise<void> {{\n{body(down)}  }}\n"
        "}\n")


def scratch_with_backend(sandbox, tmp_path, source: str, **more_vars):
    def point_at(data):
        data["vars"]["app_services"] = {
            "backend": {"kind": "node", "source": source, "ref": ""},
            "frontend": {"kind": "next-standalone", "source": "examples/together-pray/frontend", "ref": ""},
        }
        data["vars"].update(more_vars)
    return sandbox.scratch_inventory(tmp_path, point_at)


def test_the_first_deploy_serves_prayers_from_postgresql_on_every_web_host(deployed, sandbox):
    assert deployed.code == 0, deployed.stdout[-4000:] + deployed.stderr
    release = current_release(sandbox, "vps1")
    for host in WEB:
        address = sandbox.addresses[host]
        # vps2 reaches the database on vps1 over TLS, verified (node-postgres, verify-full).
        assert health(address) == {"status": "ok", "release": release, "database": "up"}
        page = requests.get(f"https://{address}/", verify=str(CA), timeout=10)
        assert page.status_code == 200 and "Welcome. May this be a place of peace" in page.text
        assert sandbox.ssh(host, "ps -o user= -C node | sort -u").split() == ["together-pray"]
        assert (
            sandbox.ssh(host, "test -e /srv/together-pray/backend/.deploy-lock && echo locked || echo free").strip()
            == "free"
        )
    history = [
        json.loads(line) for line in sandbox.ssh("vps1", "cat /srv/together-pray/backend/deploys.jsonl").splitlines()
    ]
    assert history[-1]["release"] == release and history[-1]["result"] == "live"


def test_a_redeploy_under_load_fails_no_request(deployed, sandbox, tmp_path):
    address = sandbox.addresses["vps1"]
    before = health(address)["release"]
    # The page: the frontend renders it from the backend's data on every request, so a gap in either
    # shows (the public API itself is rate-limited per client, which would count 429s).
    with LoadLoop(f"https://{address}/", expect="Welcome. May this be a place of peace", verify=str(CA)) as load:
        time.sleep(1)
        again = invoke("deploy.all", "--limit=vps1", timeout=900)
    assert again.code == 0, again.stdout[-3000:] + again.stderr
    assert health(address)["release"] == before  # the same release, now on the other color
    assert load.result.ok > 50 and load.result.failed == 0, load.result.failures[:5]


def test_a_release_whose_health_fails_leaves_the_old_one_serving(deployed, sandbox, tmp_path):
    def break_health(source):
        path = source / "src" / "health.controller.ts"
        path.write_text(
            path.read_text().replace(
                'await this.dataSource.query("SELECT 1");', 'throw new Error("broken on purpose");'
            )
        )

    inventory = scratch_with_backend(sandbox, tmp_path, variant(tmp_path, "broken-health", break_health))
    before, before_on_vps2 = (health(sandbox.addresses[host])["release"] for host in WEB)
    # Rolling one host at a time: the first failure stops the roll before vps2.
    run = invoke("deploy.backend", "--json", "--serial=1", inventory=inventory, timeout=900)
    assert run.code == ExitCode.HOST_FAILED
    error = run.host("vps1")["error"]
    assert error.startswith("Check backend@") and "not healthy for 5s in a row within" in error and "its log:" in error
    assert run.host("vps2")["skipped_because"] == "an earlier host failed"
    assert run.json["notes"] == {"backend": f"{before} on vps1; not reached on vps2"}
    assert health(sandbox.addresses["vps1"])["release"] == before
    assert health(sandbox.addresses["vps2"])["release"] == before_on_vps2
    broken = run.json["task"].split()[-1]  # "deploy.backend <release>"
    assert (
        sandbox.ssh("vps1", f"test -e /srv/together-pray/backend/releases/{broken}/.vigil-bad && echo bad").strip()
        == "bad"
    )
    assert (
        sandbox.ssh("vps1", f"test -e /srv/together-pray/backend/releases/{before}/.vigil-bad || echo good").strip()
        == "good"
    )
    history = json.loads(sandbox.ssh("vps1", "tail -1 /srv/together-pray/backend/deploys.jsonl"))
    assert (history["release"], history["result"]) == (broken, "failed")
    assert (
        sandbox.ssh("vps1", "test -e /srv/together-pray/backend/.deploy-lock && echo locked || echo free").strip()
        == "free"
    )


def test_a_release_that_crashes_seconds_after_it_starts_never_goes_live(deployed, sandbox, tmp_path):
    def crash_after_start(source):
        path = source / "src" / "main.ts"
        # Up, healthy, then gone 3 s later, every time systemd starts it again: three quick checks pass.
        path.write_text(path.read_text() + '\nsetTimeout(() => process.exit(1), 3000);\n')

    address = sandbox.addresses["vps1"]
    before = health(address)["release"]
    source = variant(tmp_path, "crashes-after-start", crash_after_start)
    with LoadLoop(f"https://{address}/", expect="Welcome. May this be a place of peace", verify=str(CA)) as load:
        run = invoke("deploy.backend", "--json", "--limit=vps1", f"--source={source}", timeout=900)
    assert run.code == ExitCode.HOST_FAILED, run.stdout[-3000:] + run.stderr
    assert "backend@" in run.host("vps1")["error"] and "restarted" in run.host("vps1")["error"]
    assert load.result.ok > 20 and load.result.failed == 0, load.result.failures[:5]
    assert health(address)["release"] == before
    crashed = run.json["task"].split()[-1]
    marked = sandbox.ssh("vps1", f"test -e /srv/together-pray/backend/releases/{crashed}/.vigil-bad && echo bad")
    assert marked.strip() == "bad"


def test_a_release_that_fails_while_watched_after_the_switch_is_switched_back(deployed, sandbox, tmp_path):
    def fail_once_live(source):
        path = source / "src" / "health.controller.ts"
        # Healthy for its gate, then failing from the 7th answer on, early in the sandbox's 5 s watch after
        # the switch, whatever the machine's speed: the gate asks once a second or slower until 5 s have
        # passed since its first pass (whole seconds), so it has had 5 or 6 answers when it lets the switch go.
        path.write_text(path.read_text().replace('@Controller("health")', 'let answered = 0;\n\n@Controller("health")')
                        .replace('await this.dataSource.query("SELECT 1");',
                                 'if (++answered > 6) throw new Error("fails once live");\n'
                                 '      await this.dataSource.query("SELECT 1");'))

    address = sandbox.addresses["vps1"]
    before = health(address)["release"]
    run = invoke("deploy.backend", "--json", "--limit=vps1",
                 f"--source={variant(tmp_path, 'fails-once-live', fail_once_live)}", timeout=900)
    assert run.code == ExitCode.HOST_FAILED, run.stdout[-3000:] + run.stderr
    assert run.host("vps1")["error"].startswith("Watch backend@"), run.host("vps1")["error"]
    names = [op["name"] for op in run.host("vps1")["operations"]]
    assert "Switch nginx's backend upstream back to" in " ".join(names)
    assert health(address)["release"] == before  # the old color serves again
    failed = run.json["task"].split()[-1]
    assert sandbox.ssh("vps1", f"test -e /srv/together-pray/backend/releases/{failed}/.vigil-bad && echo bad").strip() \
        == "bad"
    last = json.loads(sandbox.ssh("vps1", "tail -1 /srv/together-pray/backend/deploys.jsonl"))
    assert (last["release"], last["result"], last["switched_back_to"]) == (failed, "failed", before)


def restore_points_made(sandbox) -> list[str]:
    """The restore points PostgreSQL on vps1 logged making (deploys make them before migrating)."""
    return re.findall(r'restore point "(vigil-[a-z]+-[0-9TZ]+)" created',
                      sandbox.ssh("vps1", "cat /var/log/postgresql/postgresql-*-main.log"))


def test_a_deploy_that_would_fail_on_sudo_stops_before_any_build_or_backup(deployed, sandbox):
    before = restore_points_made(sandbox)
    sandbox.ssh("vps1", "mv /etc/sudoers.d/vigil-deploy /root/vigil-deploy.sudoers")
    try:
        run = invoke("deploy.backend", "--limit=vps1", timeout=600)
    finally:
        sandbox.ssh("vps1", "mv /root/vigil-deploy.sudoers /etc/sudoers.d/vigil-deploy")
    assert run.code == ExitCode.HOST_FAILED, run.stdout[-2000:] + run.stderr
    assert "nothing was built, backed up or changed" in run.stderr
    assert "vps1: sudo: deploy may not run /usr/local/sbin/vigil-app-unit without a password" in run.stderr
    assert restore_points_made(sandbox) == before  # no restore point was made before migrating


def test_a_failing_migration_switches_nothing_and_leaves_the_database_unchanged(deployed, sandbox, tmp_path):
    def add_failing_migration(source):
        add_migration(
            source, 1765000000001, "Broken", up=['CREATE TABLE "half_done" ("id" int)', "SELECT 1/0"], down=[]
        )

    inventory = scratch_with_backend(sandbox, tmp_path, variant(tmp_path, "broken-migration", add_failing_migration))
    before = health(sandbox.addresses["vps1"])["release"]
    run = invoke("deploy.backend", "--json", "--limit=vps1", inventory=inventory, timeout=900)
    assert run.code == ExitCode.HOST_FAILED
    error = run.host("vps1")["error"]
    assert error.startswith("Run migrate for") and "division by zero" in error
    # The restore point made before the migration is named, with the command that returns to it.
    kept = re.search(r"Kept before it: restore point (vigil-migrate-[0-9TZ]+) \(timeline ([0-9]+)\); to return to "
                     r"it: invoke backup.restore (\S+) --timeline=([0-9]+) --env=sandbox", error)
    assert kept and kept.group(1) == kept.group(3) and kept.group(2) == kept.group(4), error
    assert kept.group(1) in restore_points_made(sandbox)
    assert health(sandbox.addresses["vps1"])["release"] == before
    tables = sandbox.ssh(
        "vps1",
        'su postgres -c "psql -tA -d together_pray '
        '-c \\"select count(*) from pg_tables where tablename = \'half_done\'\\""',
    )
    assert tables.strip() == "0"  # the migration's transaction rolled back
    names = sandbox.ssh("vps1", "su postgres -c \"psql -tA -d together_pray -c 'select name from migrations'\"").split()
    assert names == ["CreatePrayers1764000000000", "CreateUsers1765000000000"]


def test_a_held_lock_refuses_a_second_deploy_and_lock_wait_waits_for_it(deployed, sandbox):
    lock = "/srv/together-pray/backend/.deploy-lock"
    owner = json.dumps({"who": "alice@laptop", "since": "2026-11-26T01:00:00Z", "release": "x", "ref": "y"})
    hold = f"mkdir {lock} && printf '%s' {shlex.quote(owner)} > {lock}/owner.json"
    assert subprocess.run(["ssh", *SSH_OPTIONS, f"deploy@{sandbox.addresses['vps1']}", hold]).returncode == 0
    refused = invoke("deploy.backend", "--limit=vps1")
    # Found by the preflight, before anything is built.
    assert refused.code == ExitCode.HOST_FAILED
    assert "vps1: lock: another deploy holds it: alice@laptop since 2026-11-26T01:00:00Z" in refused.stderr
    assert "alice@laptop" in sandbox.ssh("vps1", f"cat {lock}/owner.json")  # not taken over
    shown = invoke("deploy.unlock", "--app=backend")
    assert shown.code == 0 and "vps1 backend: held by alice@laptop since 2026-11-26T01:00:00Z" in shown.stdout
    assert "alice@laptop" in sandbox.ssh("vps1", f"cat {lock}/owner.json")  # without --force, only shown
    release_later = threading.Timer(8, lambda: sandbox.ssh("vps1", f"rm -rf {lock}"))
    release_later.start()
    try:
        waited = invoke("deploy.backend", "--json", "--limit=vps1", "--lock-wait=60", timeout=600)
    finally:
        release_later.join()
    assert waited.code == 0, waited.stdout[-2000:] + waited.stderr
    taking = next(op for op in waited.host("vps1")["operations"] if op["name"] == "Take the deploy lock.")
    assert taking["seconds"] >= 4  # it waited for the holder, then took the lock


def test_a_lock_left_by_a_dead_deploy_is_broken_with_a_reason_on_record(deployed, sandbox):
    lock = "/srv/together-pray/backend/.deploy-lock"
    owner = json.dumps({"who": "ci-runner-7", "since": "2026-11-26T02:00:00Z", "release": "r-dead"})
    assert (
        sandbox.ssh(
            "vps2", f"su deploy -c {shlex.quote(f'mkdir {lock} && echo {shlex.quote(owner)} > {lock}/owner.json')}"
        )
        == ""
    )
    assert invoke("deploy.unlock", "--app=backend", "--force").code == ExitCode.BAD_INPUT  # a reason is required
    broken = invoke("deploy.unlock", "--app=backend", "--force", "--reason=runner killed mid-deploy", "--json")
    assert broken.code == 0, broken.stdout + broken.stderr
    assert sandbox.ssh("vps2", f"test -e {lock} && echo locked || echo free").strip() == "free"
    entry = json.loads(sandbox.ssh("vps2", "tail -1 /srv/together-pray/backend/deploys.jsonl"))
    assert (entry["result"], entry["reason"], entry["holder"]["who"]) == (
        "unlocked",
        "runner killed mid-deploy",
        "ci-runner-7",
    )
    audit = json.loads((REPO / ".vigil" / "audit.log").read_text().splitlines()[-1])
    assert audit["task"] == "deploy.unlock backend" and audit["broken"] == {"vps2": {"backend": json.loads(owner)}}
    # A lock whose deploy stopped beating longer than the lease ago (here: 10 minutes, no heartbeat)
    # is taken over by the next deploy, no --force needed, and the takeover is on record.
    stale = json.dumps({"who": "ci-runner-8", "pid": 4242, "control_host": "runner", "since": "2026-11-26T02:00:00Z"})
    make_stale = f"mkdir {lock} && echo {shlex.quote(stale)} > {lock}/owner.json && touch -d '10 minutes ago' {lock}"
    assert sandbox.ssh("vps2", f"su deploy -c {shlex.quote(make_stale)}") == ""
    taken = invoke("deploy.backend", "--limit=vps2", "--json", timeout=600)
    assert taken.code == 0, taken.stdout[-2000:] + taken.stderr
    taking = next(op for op in taken.host("vps2")["operations"] if op["name"] == "Take the deploy lock.")
    assert "took over the lock of ci-runner-8 (pid 4242 on runner)" in taking["summary"]
    lines = sandbox.ssh("vps2", "cat /srv/together-pray/backend/deploys.jsonl").splitlines()
    history = [json.loads(line) for line in lines]
    assert any(entry["result"] == "lock taken over" and entry["holder"]["who"] == "ci-runner-8" for entry in history)
    assert sandbox.ssh("vps2", f"test -e {lock} && echo locked || echo free").strip() == "free"


def test_status_and_releases_show_what_each_host_serves_and_what_is_wrong(deployed, sandbox):
    status = invoke("deploy.status", "--json")
    assert status.code == 0, status.stdout + status.stderr
    for host in WEB:
        row = status.json["hosts"][host]["backend"]
        assert row["release"] == current_release(sandbox, host) and row["problems"] == []
        assert row["units"][row["live"].split(":")[0]] == "active"
    listed = invoke("deploy.releases", "--app=backend", "--limit=vps1", "--json")
    rows = listed.json["hosts"]["vps1"]["backend"]
    current = next(row for row in rows if row["current"])
    assert current["release"] == current_release(sandbox, "vps1") and "current" in current["marks"]
    assert all(row["status"] in ("good", "bad") and row["uploaded"] for row in rows)
    live = status.json["hosts"]["vps2"]["backend"]["live"].split(":")[0]
    sandbox.ssh("vps2", f"systemctl stop together-pray-backend@{live}.service")
    try:
        broken = invoke("deploy.status", "--json")
        assert broken.code == ExitCode.HOST_FAILED
        assert f"vps2 backend: the live color {live} is inactive" in broken.json["problems"]
    finally:
        sandbox.ssh("vps2", f"systemctl start together-pray-backend@{live}.service")


def test_old_releases_are_pruned_to_five_never_the_current_or_previous(deployed, sandbox):
    releases = "/srv/together-pray/backend/releases"
    fake = " ".join(f"old-{n}" for n in range(7))
    sandbox.ssh(
        "vps1",
        f"cd {releases} && for id in {fake}; do mkdir -p $id && "
        'printf \'{"id": "%s", "uploaded_at": "2020-01-01T00:00:0%s"}\' $id ${id#old-} > $id/.vigil-release.json; '
        "chown -R deploy:together-pray $id; done",
    )
    current = current_release(sandbox, "vps1")
    assert invoke("deploy.backend", "--limit=vps1", timeout=600).code == 0
    left = sandbox.ssh("vps1", f"ls {releases}").split()
    bad = {path.split("/")[-2] for path in sandbox.ssh("vps1", f"ls -d {releases}/*/.vigil-bad || true").split()}
    # Five good releases to roll back to; the recent bad ones (earlier tests' failures) on top of them.
    assert current in left and len(set(left) - bad) == 5, (left, bad)
    assert not {"old-0", "old-1", "old-2"} & set(left)  # the oldest go first


def test_an_upload_cut_off_midway_never_becomes_a_release_and_the_next_deploy_succeeds(deployed, sandbox, tmp_path):
    def touch_comment(source):
        path = source / "src" / "main.ts"
        path.write_text(path.read_text() + f"// a new release {time.time_ns()}\n")  # new on every run of the suite

    # Another source tree, given for this run only (--source): the inventory stays as it is.
    source = variant(tmp_path, "new-release", touch_comment)
    built = invoke("deploy.build", "--app=backend", f"--source={source}", timeout=900)
    assert built.code == 0, built.stdout + built.stderr
    release, path = next(line.split()[1:3] for line in built.stdout.splitlines() if line.startswith("backend "))
    artifact = open(path, "rb").read()
    target = f"/srv/together-pray/backend/releases/{release}"
    upload = subprocess.Popen(
        [
            "ssh",
            *SSH_OPTIONS,
            f"deploy@{sandbox.addresses['vps1']}",
            f"sh -c {shlex.quote(UNPACK)} unpack {target} {'0' * 64} together-pray {release} '{{}}'",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    upload.stdin.write(artifact[: len(artifact) // 2])
    upload.stdin.flush()
    time.sleep(1)
    upload.kill()  # our own ssh client, by its handle: the connection drops mid-upload
    upload.wait()
    assert sandbox.ssh("vps1", f"test -d {target} && echo release || echo none").strip() == "none"
    again = invoke("deploy.backend", "--limit=vps1", f"--source={source}", timeout=600)
    assert again.code == 0, again.stdout[-2000:] + again.stderr
    assert current_release(sandbox, "vps1") == release
    assert health(sandbox.addresses["vps1"])["release"] == release
    assert sandbox.ssh("vps1", "ls -a /srv/together-pray/backend/releases | grep -c partial || true").strip() == "0"


def test_a_rollback_returns_to_the_previous_good_release_and_refuses_a_bad_one(deployed, sandbox):
    address = sandbox.addresses["vps1"]
    current = current_release(sandbox, "vps1")
    deploys = [
        json.loads(line) for line in sandbox.ssh("vps1", "cat /srv/together-pray/backend/deploys.jsonl").splitlines()
    ]
    # What the current release replaced when it was deployed.
    previous = next(entry["previous"] for entry in reversed(deploys)
                    if entry["result"] == "live" and entry["release"] == current and entry["previous"] != current)
    rolled = invoke("deploy.rollback", "--app=backend", "--json", "--limit=vps1", timeout=600)
    assert rolled.code == 0, rolled.stdout[-3000:] + rolled.stderr
    assert health(address)["release"] == previous and current_release(sandbox, "vps1") == previous
    last = json.loads(sandbox.ssh("vps1", "tail -1 /srv/together-pray/backend/deploys.jsonl"))
    assert (last["release"], last["result"], last.get("rollback")) == (previous, "live", True)
    bad = sandbox.ssh("vps1", "ls -d /srv/together-pray/backend/releases/*/.vigil-bad").split()[0].split("/")[-2]
    refused = invoke("deploy.rollback", "--app=backend", "--json", "--limit=vps1", f"--to={bad}")
    assert refused.code == ExitCode.HOST_FAILED and f"release {bad} is marked bad" in refused.host("vps1")["error"]
    assert health(address)["release"] == previous


def colors(sandbox, host: str, service: str = "backend") -> tuple[str, str]:
    """(the color nginx serves, which is the one a boot starts, the other): the upstream's port against blue's."""
    served, blue = sandbox.ssh(host, f"sed -n 's/^upstream together_pray_{service} {{ server 127.0.0.1:\\([0-9]*\\);.*/"
                                     f"\\1/p' /etc/nginx/conf.d/together-pray-upstreams.conf; "
                                     f"sed -n 's/^PORT=//p' /etc/together-pray/{service}-blue.env").split()
    return ("blue", "green") if served == blue else ("green", "blue")


def test_a_rollback_within_the_window_switches_to_the_release_still_running_and_fails_no_request(
    deployed, sandbox, tmp_path
):
    address, served = sandbox.addresses["vps1"], current_release(sandbox, "vps1")
    def another_release(source):
        path = source / "src" / "health.controller.ts"
        path.write_text(path.read_text() + "// a release to roll back from\n")
    source = variant(tmp_path, "instant", another_release)
    inventory = scratch_with_backend(sandbox, tmp_path, source)
    shipped = invoke("deploy.backend", "--limit=vps1", "--json", inventory=inventory, timeout=900)
    assert shipped.code == 0, shipped.stdout[-3000:] + shipped.stderr
    new, (live, idle) = current_release(sandbox, "vps1"), colors(sandbox, "vps1")
    assert new != served
    kept = {op["name"]: op for op in shipped.host("vps1")["operations"]}[
        f"Keep backend@{idle} running for an instant rollback."]
    assert kept["summary"].startswith(f"{served} stops in 30 min or at the next deploy"), kept
    warm = f"together-pray-backend@{idle}.service"
    assert sandbox.ssh("vps1", f"systemctl is-active {warm}").strip() == "active"
    # The window's end is a timer on the host: it stops the old color with nobody connected.
    timer = f"vigil-stop-together-pray-backend-{idle}.timer"
    assert "OnActiveUSec=30min" in sandbox.ssh("vps1", f"systemctl show -p TimersMonotonic --value {timer}")

    with LoadLoop(f"https://{address}/", expect="Welcome. May this be a place of peace", verify=str(CA)) as load:
        time.sleep(1)
        rolled = invoke("deploy.rollback", "--app=backend", "--limit=vps1", "--json", timeout=300)
        time.sleep(1)
    assert rolled.code == 0, rolled.stdout[-3000:] + rolled.stderr
    steps = [op["name"] for op in rolled.host("vps1")["operations"]]
    assert f"Switch nginx's backend upstream to {idle}, still running {served}." in steps
    assert not [step for step in steps if step.startswith(("Start backend@", "Check backend@", "Watch backend@"))]
    assert health(address)["release"] == served and current_release(sandbox, "vps1") == served
    assert load.result.ok > 20 and load.result.failed == 0, load.result.failures[:5]
    # Recorded like any deploy: the host's history and the local audit log.
    last = json.loads(sandbox.ssh("vps1", "tail -1 /srv/together-pray/backend/deploys.jsonl"))
    assert (last["release"], last["previous"], last["rollback"], last["instant"]) == (served, new, True, True)
    audit = json.loads((REPO / ".vigil" / "audit.log").read_text().splitlines()[-1])
    assert (audit["task"], audit["result"], audit["hosts"]) == ("deploy.rollback backend", "ok", ["vps1"])
    # The release it left drains, then its own timer stops it; a reboot starts the one serving.
    left = f"together-pray-backend@{live}.service"
    for _ in range(30):
        if sandbox.ssh("vps1", f"systemctl is-active {left}", check=False).strip() != "active":
            break
        time.sleep(1)
    assert sandbox.ssh("vps1", f"systemctl is-active {left}", check=False).strip() == "inactive"
    assert colors(sandbox, "vps1") == (idle, live)
    # What a boot does: only the served-colors unit is enabled, and it starts the color nginx serves now.
    assert sandbox.ssh("vps1", f"systemctl stop {warm}; systemctl is-enabled together-pray-served-colors.service "
                               f"together-pray-backend@blue.service together-pray-backend@green.service",
                       check=False).split() == ["enabled", "static", "static"]
    assert sandbox.ssh("vps1", "systemctl start together-pray-served-colors.service && sleep 2 && "
                               f"systemctl is-active {warm} {left}", check=False).split() == ["active", "inactive"]
    for _ in range(30):  # the backend listens a moment after its unit is active
        if health(address).get("release") == served:
            break
        time.sleep(1)
    assert health(address).get("release") == served
    # No boot link moved, so systemd has nothing to reload for the next provisioning run to report.
    assert sandbox.ssh("vps1", "systemctl show -p NeedDaemonReload --value nginx.service").strip() == "no"

    # Where the host has too little memory to spare, the old color stops as with no window...
    (tmp_path / "tight").mkdir()
    tight = scratch_with_backend(sandbox, tmp_path / "tight", source, app_rollback_window_min_available_mb=10 ** 8)
    shipped = invoke("deploy.backend", "--limit=vps1", "--json", inventory=tight, timeout=900)
    assert shipped.code == 0, shipped.stdout[-3000:] + shipped.stderr
    stopped = {op["name"]: op for op in shipped.host("vps1")["operations"]}[f"Drain and stop backend@{idle}."]
    assert "not kept for the rollback window: only" in stopped["summary"], stopped
    assert sandbox.ssh("vps1", f"systemctl is-active {warm}", check=False).strip() == "inactive"
    # ...and a rollback starts the release again, cold, through the health gate.
    rolled = invoke("deploy.rollback", "--app=backend", "--limit=vps1", "--json", timeout=600)
    assert rolled.code == 0, rolled.stdout[-3000:] + rolled.stderr
    steps = [op["name"] for op in rolled.host("vps1")["operations"]]
    assert f"Start backend@{idle} on {served}." in steps and f"Check backend@{idle} is healthy." in steps
    assert health(address)["release"] == served


def add_mood_column(source):
    """The release test_recovery_repository migrates too: the same source builds the same artifact, once."""
    add_migration(source, 1765000000002, "AddPrayerMood", up=['ALTER TABLE "prayers" ADD "mood" text'],
                  down=['ALTER TABLE "prayers" DROP COLUMN "mood"'])


def test_a_rollback_with_migrations_reverts_what_the_bad_release_added(deployed, sandbox, tmp_path):
    def columns():
        return sandbox.ssh("vps1", "su postgres -c \"psql -tA -d together_pray -c \\\"select column_name from "
                                   "information_schema.columns where table_name = 'prayers'\\\"\"").split()

    # On vps2: the database is on vps1, so the restore points are made over a second connection, to vps1.
    before = health(sandbox.addresses["vps2"])["release"]
    inventory = scratch_with_backend(sandbox, tmp_path, variant(tmp_path, "with-mood", add_mood_column))
    deployed_mood = invoke("deploy.backend", "--json", "--limit=vps2", inventory=inventory, timeout=900)
    assert deployed_mood.code == 0, deployed_mood.stdout[-3000:] + deployed_mood.stderr
    assert "mood" in columns()
    kept = next(op for op in deployed_mood.host("vps2")["operations"] if op["name"] == "Make a restore point.")
    assert kept["summary"].startswith("restore point vigil-migrate-"), kept
    mood_release, migrate_point = current_release(sandbox, "vps2"), kept["summary"].split()[2]
    rolled = invoke(
        "deploy.rollback", "--app=backend", "--migrations", "--json", "--limit=vps2", inventory=inventory, timeout=600
    )
    assert rolled.code == 0, rolled.stdout[-3000:] + rolled.stderr
    reverted = next(op for op in rolled.host("vps2")["operations"] if op["name"].startswith("Revert the migrations"))
    # With a backup host it also names the other way back: the restore point the release made before them.
    assert reverted["summary"].startswith(
        "reverted 1765000000002-AddPrayerMood.js (or the database to before they ran, losing all writes since: "
        "invoke backup.restore vigil-migrate-"), reverted
    assert "mood" not in columns()
    names = sandbox.ssh("vps1", "su postgres -c \"psql -tA -d together_pray -c 'select name from migrations'\"").split()
    assert names == ["CreatePrayers1764000000000", "CreateUsers1765000000000"]
    assert health(sandbox.addresses["vps2"])["release"] == before
    kept = next(op for op in rolled.host("vps2")["operations"] if op["name"] == "Make a restore point.")
    assert kept["summary"].startswith("restore point vigil-revert-"), kept
    assert kept["summary"].split()[2] in restore_points_made(sandbox)
    # The release's record still names the point before its migrations: a revert's is no way back to that.
    record = sandbox.ssh("vps2", f"cat /srv/together-pray/backend/releases/{mood_release}/.vigil-restore-point.json")
    assert json.loads(record)["name"] == migrate_point


def test_promote_ships_the_very_artifact_the_other_env_serves(deployed, sandbox, tmp_path):
    def touch_comment(source):
        path = source / "src" / "main.ts"
        path.write_text(path.read_text() + f"// promoted from staging {time.time_ns()}\n")

    source = variant(tmp_path, "to-promote", touch_comment)

    # Two environments over the session's hosts: "sandbox" runs the web on vps1, "production" on vps2.
    def staging(data):
        data["groups"]["web"]["hosts"] = ["vps1"]
        data["vars"]["app_services"] = {
            "backend": {"kind": "node", "source": source, "ref": ""},
            "frontend": {"kind": "next-standalone", "source": "examples/together-pray/frontend", "ref": ""},
        }
    (tmp_path / "envs").mkdir()
    inventory = sandbox.scratch_inventory(tmp_path / "envs", staging)
    production = load_yaml(inventory / "sandbox.yml")
    production["groups"]["web"]["hosts"] = ["vps2"]
    (inventory / "production.yml").write_text(yaml.safe_dump(production, sort_keys=False))
    staged = invoke("deploy.backend", "--json", inventory=inventory, timeout=900)
    assert staged.code == 0, staged.stdout[-3000:] + staged.stderr
    release = staged.json["task"].split()[-1]
    promoted = invoke("deploy.promote", "--from-env=sandbox", "--env=production", "--app=backend", "--json",
                      inventory=inventory, timeout=900)
    assert promoted.code == 0, promoted.stdout[-3000:] + promoted.stderr
    assert promoted.json["task"] == f"deploy.promote backend {release}"
    assert promoted.json["notes"] == {"backend": f"{release} on vps2"}
    assert health(sandbox.addresses["vps2"])["release"] == release
    sums = {
        host: sandbox.ssh(host, f"cat /srv/together-pray/backend/releases/{release}/.vigil-release.json")
        for host in WEB
    }
    assert json.loads(sums["vps1"])["sha256"] == json.loads(sums["vps2"])["sha256"]
    # Without the artifact here, a release built from a working tree cannot be promoted: said, nothing shipped.
    for leftover in (REPO / ".vigil" / "artifacts" / "backend").glob(f"{release}.*"):
        leftover.unlink()
    gone = invoke("deploy.promote", "--from-env=sandbox", "--env=production", "--app=backend", inventory=inventory)
    assert (
        gone.code == ExitCode.BAD_INPUT
        and f"release {release} (sandbox) is not in .vigil/artifacts/backend/" in gone.stderr
    )
