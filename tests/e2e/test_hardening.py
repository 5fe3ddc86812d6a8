"""What the deploy user's key could do to root, tried for real on the session's deployed hosts: point
the env file a color's unit loads at a root-only file, and leave a FIFO where status screens read the
deploy state. Neither works any more."""

import json
import time

from tests.support.sandbox_hosts import invoke

BASE = "/srv/together-pray/backend"
# A root-only KEY=VALUE file, as the hosts hold for their daemons' secrets.
ROOT_ONLY = "/etc/vigil/e2e-root-only.env"
MARKER = "VIGIL_E2E_ROOT_ONLY"


def as_deploy(sandbox, host: str, command: str) -> str:
    return sandbox.ssh(host, f"su -s /bin/sh deploy -c '{command}'")


def test_a_color_never_loads_a_file_the_deploy_user_links_its_release_env_to(deployed, sandbox):
    host = "vps2"
    live_port = sandbox.ssh(host, "sed -n 's/^upstream together_pray_backend { server 127.0.0.1:\\([0-9]*\\);.*/\\1/p' "
                                  "/etc/nginx/conf.d/together-pray-upstreams.conf").strip()
    idle = "green" if live_port == "3001" else "blue"
    release = sandbox.ssh(host, f"basename $(readlink {BASE}/current)").strip()
    link = f"{BASE}/colors/{idle}"
    linked_before = sandbox.ssh(host, f"readlink {link} || true").strip()
    env_file = f"{BASE}/releases/{release}/release.env"
    unit = f"together-pray-backend@{idle}.service"
    mode = sandbox.ssh(host, f"stat -c %a {BASE}/releases/{release}").strip()
    # What the deploy key allows: point the idle color at a release whose release.env is a link to root's file.
    sandbox.ssh(host, f"mkdir -p /etc/vigil && install -m 0600 /dev/null {ROOT_ONLY} && echo {MARKER}=1 > {ROOT_ONLY}")
    as_deploy(sandbox, host, f"ln -sfn ../releases/{release} {link} && chmod u+w {BASE}/releases/{release} && "
                             f"mv {env_file} {env_file}.kept && ln -s {ROOT_ONLY} {env_file}")
    try:
        sandbox.ssh(host, f"/usr/local/sbin/vigil-app-unit restart {unit}")
        deadline = time.monotonic() + 60
        while (pid := sandbox.ssh(host, f"systemctl show -p MainPID --value {unit}").strip()) == "0":
            assert time.monotonic() < deadline, sandbox.ssh(host, f"journalctl -n 20 -u {unit}")
            time.sleep(1)
        environment = sandbox.ssh(host, f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()
        assert f"RELEASE_ID={release}" in environment
        assert not [line for line in environment if line.startswith(MARKER)]
    finally:
        sandbox.ssh(host, f"systemctl stop {unit}")
        restore_link = f"ln -sfn {linked_before} {link}" if linked_before else f"rm -f {link}"
        as_deploy(sandbox, host, f"rm -f {env_file} && mv {env_file}.kept {env_file} && "
                                 f"chmod {mode} {BASE}/releases/{release} && {restore_link}")
        sandbox.ssh(host, f"rm -f {ROOT_ONLY}")


def test_a_fifo_in_the_deploy_state_does_not_stall_the_status_screens(deployed, sandbox):
    lock = f"{BASE}/.deploy-lock"
    as_deploy(sandbox, "vps1", f"mkdir {lock} && mkfifo {lock}/owner.json")
    try:
        began = time.monotonic()
        status = invoke("incident.status", "--json", "--limit=vps1", timeout=120)
        assert time.monotonic() - began < 90 and status.json["hosts"], status.stdout[-2000:] + status.stderr
        deploy_status = invoke("deploy.status", "--json", "--limit=vps1", timeout=120)
        assert deploy_status.json["hosts"]["vps1"]["backend"]["release"], deploy_status.stdout[-2000:]
    finally:
        as_deploy(sandbox, "vps1", f"rm -rf {lock}")


def test_root_keeps_a_record_of_what_deploys_had_it_do_that_the_deploy_user_cannot_touch(deployed, sandbox):
    trail = "/var/log/vigil/deploy-actions.jsonl"
    # deploy.releases shows it, read as the deploy user through the unit helper's one read-only action.
    releases = invoke("deploy.releases", "--json", "--limit=vps2", timeout=120)
    lines = [json.loads(line) for line in sandbox.ssh("vps2", f"cat {trail}").splitlines()]
    assert releases.json["root_trail"]["vps2"] == lines[-200:] and lines, releases.stdout[-2000:]
    assert any(line["helper"] == "vigil-switch-upstream" and line["by"] == "deploy" for line in lines), lines
    assert any(line["helper"] == "vigil-app-unit" and line["action"] == "restart" for line in lines), lines
    tried = as_deploy(sandbox, "vps2", f"{{ cat {trail}; echo forged >> {trail}; }} 2>&1; true")
    assert tried.count("Permission denied") == 2 and "forged" not in sandbox.ssh("vps2", f"cat {trail}")
