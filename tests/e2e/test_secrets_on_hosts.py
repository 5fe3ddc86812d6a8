"""Secrets against real sandbox VPSes: push, idempotency, no value on any command line, no leak anywhere.

Every test works on a scratch secrets/ (VIGIL_SECRETS) that is also a git
work tree, so the developer's own sandbox secrets are never touched.
"""

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pyrage import x25519

from tests.support.sandbox_hosts import REPO, app_database_login, invoke
from vigil.core.errors import ExitCode
from vigil.core.inventory import load_inventory
from vigil.vault.env_files import render_dotenv
from vigil.vault.error_tracking import dsn, errors_site
from vigil.vault.keys import load_recipients
from vigil.vault.masking import forms_of, password_forms
from vigil.vault.paths import SecretsPaths
from vigil.vault.schema import load_schema
from vigil.vault.store import load

LOCAL_AUDIT = REPO / ".vigil" / "audit.log"
# A test-only instance of the backend's unit (roles/app's template stays as it is), whose reload fails.
UNIT = "together-pray-backend@e2e.service"
DROPIN = f"/etc/systemd/system/{UNIT}.d/e2e.conf"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("vigil-secrets")
    (root / "secrets").mkdir()
    shutil.copy(REPO / "secrets" / "schema.yml", root / "secrets" / "schema.yml")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    # As in the real repository: local keys and state are never part of the tree.
    (root / ".gitignore").write_text((REPO / ".gitignore").read_text())
    return root


@pytest.fixture
def run(scratch, monkeypatch):
    """`invoke` with the scratch secrets; also points this process at them for load."""
    monkeypatch.setenv("VIGIL_SECRETS", str(scratch / "secrets"))
    monkeypatch.delenv("VIGIL_AGE_IDENTITY", raising=False)

    def go(*args, **kwargs):
        extra = {"VIGIL_SECRETS": str(scratch / "secrets"), **kwargs.pop("extra_env", {})}
        return invoke(*args, extra_env=extra, **kwargs)

    return go


def values(scratch) -> dict:
    return load("sandbox", SecretsPaths(scratch / "secrets"))


def test_push_writes_0600_files_owned_by_the_app_user_then_reports_unchanged(provisioned, sandbox, run, scratch):
    first = run("secrets.push", "--json", "--limit=vps1,vps2")
    assert first.code == 0, first.stderr
    second = run("secrets.push", "--json", "--limit=vps1,vps2")
    assert second.code == 0
    schema = load_schema()
    # DATABASE_URL is derived per host: loopback on the db host (vps1), its address with TLS on vps2.
    urls = {"vps1": f"postgresql://together_pray:{values(scratch)['DB_PASSWORD']}@127.0.0.1:5432/together_pray",
            "vps2": f"postgresql://together_pray:{values(scratch)['DB_PASSWORD']}@10.213.1.2:5432/together_pray"
                    "?sslmode=verify-full&sslrootcert=/etc/together-pray/database-server.crt"}
    # SENTRY_DSN is derived too where the sandbox has a monitor host: its Bugsink's, from BUGSINK_SECRET_KEY
    # (the sandbox's own module, which runs before this one, brings back two hosts and no monitor host).
    site = errors_site(load_inventory("sandbox"))
    derived = {"SENTRY_DSN": dsn(site, values(scratch)["BUGSINK_SECRET_KEY"])} if site else {}
    for name in ("vps1", "vps2"):
        expected = render_dotenv(
            schema.for_service("backend", {**values(scratch), "DATABASE_URL": urls[name], **derived}),
            list(schema.keys),
        )
        assert (second.host(name)["changed"], second.host(name)["failed"]) == (0, 0)
        listing = sandbox.ssh(name, "stat -c '%n %U %G %a' /etc/together-pray /etc/together-pray/backend.env "
                                    "/etc/together-pray/frontend.env")
        assert listing.split("\n")[:3] == [
            "/etc/together-pray root together-pray 750",
            "/etc/together-pray/backend.env together-pray together-pray 600",
            "/etc/together-pray/frontend.env together-pray together-pray 600",
        ]
        assert sandbox.ssh(name, "cat /etc/together-pray/backend.env") == expected
        assert sandbox.ssh(name, "getent passwd together-pray | cut -d: -f7").strip() == "/usr/sbin/nologin"


def test_no_value_appears_in_any_process_command_line_or_environment_while_pushing(provisioned, sandbox, run, scratch):
    assert run("secrets.generate", "--force").code == 0  # new values, so the push really writes
    # Every value but the public ones (secret: false in the schema: NODE_ENV, the site's URLs, a "1" flag).
    public = {key for key, rule in load_schema(SecretsPaths(scratch / "secrets")).keys.items() if not rule.secret}
    secret_forms = {
        form
        for key, value in values(scratch).items()
        if key not in public
        for form in forms_of(value)
    }
    # A bounded sampler of every process's argv and environment on the host, stopped by a flag file: all but
    # the app's own (user together-pray), whose environment holds its secrets by design (its env files,
    # EnvironmentFile=), read anew when the push restarts it.
    sandbox.ssh(
        "vps1",
        "rm -f /tmp/proc-watch /tmp/proc-watch.stop; nohup sh -c '"
        "end=$(( $(date +%s) + 60 )); "
        "while [ ! -e /tmp/proc-watch.stop ] && [ $(date +%s) -lt $end ]; do "
        'for p in /proc/[0-9]*; do [ "$(stat -c %U $p)" = together-pray ] && continue; '
        'tr "\\0" " " < $p/cmdline; echo; tr "\\0" "\\n" < $p/environ; done 2>/dev/null; '
        "done > /tmp/proc-watch' >/dev/null 2>&1 &",
    )
    time.sleep(1)
    pushed = run("secrets.push", "--limit=vps1")
    sandbox.ssh("vps1", "touch /tmp/proc-watch.stop; sleep 1")
    seen = sandbox.ssh("vps1", "cat /tmp/proc-watch")
    assert pushed.code == 0, pushed.stderr
    assert "sudo" in seen or "sshd" in seen  # the sampler did run
    assert not [form for form in secret_forms if form in seen]


def test_every_task_with_verbose_and_diff_and_a_failure_leaks_no_value(provisioned, sandbox, run, scratch):
    outputs, seen_values = [], []

    def step(*args, expect=0, **kwargs):
        result = run(*args, **kwargs)
        outputs.append(result.stdout + result.stderr)
        assert result.code == expect, f"{args}: {result.stdout}{result.stderr}"
        seen_values.append(dict(values(scratch)))
        return result

    audit_before = {name: sandbox.audit_lines(name) for name in ("vps1", "vps2")}
    step("secrets.init", "--label=e2e")
    step("secrets.list")
    step("secrets.check")
    step("secrets.generate", "--force")
    step("secrets.set", "JWT_SECRET", "--generate")
    step("secrets.set", "SENTRY_DSN", input="https://0a1b2c3d4e5f60718293a4b5c6d7e8f9@o42.ingest.sentry.io/4242\n")
    step("secrets.diff", "--hosts", "--limit=vps1,vps2")
    step("secrets.push", "-v", "--diff", "--limit=vps1,vps2")
    step("secrets.rotate", "JWT_REFRESH_SECRET", "-v", "--limit=vps1,vps2")
    step("secrets.recipients")
    step("secrets.scan", "--env=sandbox")
    # Bad input: a too-short value and an injected second key; both refused, nothing saved.
    before = (scratch / "secrets" / "sandbox.env.age").read_bytes()
    step("secrets.set", "JWT_SECRET", expect=ExitCode.BAD_INPUT, input="short\n")
    step("secrets.set", "JWT_SECRET", expect=ExitCode.BAD_INPUT, input="a" * 40 + "\nNODE_ENV=development\n")
    assert (scratch / "secrets" / "sandbox.env.age").read_bytes() == before
    # A deliberately failing command: a running backend whose reload fails, on vps2.
    sandbox.ssh(
        "vps2",
        f"mkdir -p '{DROPIN.rsplit('/', 1)[0]}' && "
        # ExecStartPre= too: the color's release-id helper takes blue or green, not this made-up instance.
        "printf '[Service]\\nEnvironmentFile=\\nEnvironmentFile=/etc/together-pray/backend.env\\nExecStartPre=\\n"
        f"WorkingDirectory=/\\nExecStart=\\nExecStart=/bin/sleep infinity\\nExecReload=/bin/false\\n' > '{DROPIN}' && "
        f"systemctl daemon-reload && systemctl start {UNIT}",
    )
    try:
        failed = step("secrets.rotate", "JWT_SECRET", "-v", "--diff", "--limit=vps1,vps2", expect=ExitCode.HOST_FAILED)
        assert "try-reload-or-restart" in failed.stdout and "exited 1" in failed.stdout
        step("secrets.push", "--json", "--diff", "-v", "--limit=vps1,vps2", expect=ExitCode.HOST_FAILED)
    finally:
        sandbox.ssh("vps2", f"systemctl stop {UNIT}; rm -rf '{DROPIN.rsplit('/', 1)[0]}'; systemctl daemon-reload")
    # The reload that failed stays pending on vps2 and runs on the next push, though no file changes.
    retried = step("secrets.push", "--json", "--limit=vps2")
    assert [op["name"] for op in retried.host("vps2")["operations"] if op["status"] == "changed"] == [
        "Reload or restart backend where it runs."]
    assert step("secrets.push", "--json", "--limit=vps2").host("vps2")["changed"] == 0

    host_audits = {name: sandbox.ssh(name, "cat /var/log/vigil/audit.log") for name in ("vps1", "vps2")}
    assert all(sandbox.audit_lines(name) > audit_before[name] for name in ("vps1", "vps2"))
    everything = "\n".join(outputs + list(host_audits.values()) + [LOCAL_AUDIT.read_text()])
    assert "keys changed:" in everything and "***" in everything  # the diffs and masks really were printed
    schema = load_schema()
    leaked = set()
    for snapshot in seen_values:
        for key, value in snapshot.items():
            forms = forms_of(value) if schema.keys[key].secret else password_forms(value)
            leaked |= {f"{key} ({form[:4]}...)" for form in forms if form in everything}
    assert not leaked


def test_a_tampered_file_or_a_wrong_key_stops_before_any_host(provisioned, sandbox, run, scratch):
    path = scratch / "secrets" / "sandbox.env.age"
    good = path.read_bytes()
    audit_before = {name: sandbox.audit_lines(name) for name in ("vps1", "vps2")}
    try:
        path.write_bytes(good[:-40])
        tampered = run("secrets.push", "--limit=vps1,vps2")
        assert tampered.code == ExitCode.BAD_INPUT and "tampered" in tampered.stderr
        assert path.read_bytes() == good[:-40]
        path.write_bytes(good)
        stranger = run(
            "secrets.push", "--limit=vps1,vps2", extra_env={"VIGIL_AGE_IDENTITY": str(x25519.Identity.generate())}
        )
        assert stranger.code == ExitCode.BAD_INPUT and "none of your age identities can open it" in stranger.stderr
        unknown = run("secrets.push", "--env=nowhere")
        assert unknown.code == ExitCode.BAD_INPUT and "nowhere" in unknown.stderr
    finally:
        path.write_bytes(good)
    assert {name: sandbox.audit_lines(name) for name in ("vps1", "vps2")} == audit_before


def write_editor(tmp_path: Path, body: str) -> str:
    editor = tmp_path / "editor"
    editor.write_text(f"#!/bin/sh\n{body}\n")
    editor.chmod(0o755)
    return str(editor)


def leftover_drafts() -> list[str]:
    return [p.name for p in Path("/dev/shm").glob("vigil-secrets-*")]


def test_edit_saves_a_valid_edit_and_discards_an_invalid_one(run, scratch, tmp_path):
    valid = write_editor(tmp_path, "sed -i 's|^FRONTEND_URL=.*|FRONTEND_URL=http://127.0.0.1:8080|' \"$1\"")
    edited = run("secrets.edit", extra_env={"EDITOR": valid})
    assert edited.code == 0 and "changed: FRONTEND_URL" in edited.stdout
    assert values(scratch)["FRONTEND_URL"] == "http://127.0.0.1:8080"

    before = (scratch / "secrets" / "sandbox.env.age").read_bytes()
    invalid = write_editor(tmp_path, "sed -i 's|^JWT_SECRET=.*|JWT_SECRET=short|' \"$1\"")
    refused = run("secrets.edit", extra_env={"EDITOR": invalid})
    assert refused.code == ExitCode.BAD_INPUT
    assert "JWT_SECRET: must be at least 32 characters" in refused.stdout + refused.stderr
    assert "unchanged" in refused.stderr
    assert (scratch / "secrets" / "sandbox.env.age").read_bytes() == before
    assert leftover_drafts() == []


def test_recipients_add_and_remove_reencrypt_for_the_age_tool(run, scratch, tmp_path):
    bob_key = tmp_path / "bob.key"
    subprocess.run(["age-keygen", "-o", str(bob_key)], check=True, capture_output=True)
    bob = [line.split(": ")[1] for line in bob_key.read_text().splitlines() if line.startswith("# public key")][0]
    encrypted = scratch / "secrets" / "sandbox.env.age"

    def bob_can_read() -> bool:
        return subprocess.run(["age", "-d", "-i", str(bob_key), str(encrypted)], capture_output=True).returncode == 0

    assert not bob_can_read()
    assert run("secrets.recipients", f"--add={bob} # bob").code == 0
    assert bob_can_read() and "bob" in run("secrets.recipients").stdout
    assert run("secrets.recipients", f"--remove={bob}").code == 0
    assert not bob_can_read() and values(scratch)  # we still can
    (mine,) = load_recipients("sandbox", SecretsPaths(scratch / "secrets"))
    last = run("secrets.recipients", f"--remove={mine[0]}")
    assert last.code == ExitCode.BAD_INPUT and "last recipient" in last.stderr


def test_diff_between_two_envs_names_keys_only(run, scratch, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(scratch / "config"))  # staging's key, for the tasks and this test
    assert run("secrets.init", "--env=staging").code == 0
    diff = run("secrets.diff", "--against=staging")
    assert diff.code == 0, diff.stderr
    # Key names only, by kind (the sandbox has more where an earlier test rotated JWT_SECRET: its previous value).
    line = next(line for line in diff.stdout.splitlines() if line.startswith("staging -> sandbox: "))
    kinds = dict(part.split(": ", 1) for part in line.removeprefix("staging -> sandbox: ").split("; "))
    assert {"FRONTEND_URL", "NEXT_PUBLIC_API_URL", "NODE_ENV"} <= set(kinds["added"].split(", "))
    assert {"DB_PASSWORD", "JWT_REFRESH_SECRET", "JWT_SECRET"} <= set(kinds["changed"].split(", "))
    staging = load("staging", SecretsPaths(scratch / "secrets"))
    assert not [v for v in staging.values() if v in diff.stdout]


def test_rotating_the_database_password_changes_the_database_before_the_backend(provisioned, sandbox, run, scratch):
    assert run("secrets.push", "--limit=vps1,vps2").code == 0
    before = values(scratch)["DB_PASSWORD"]
    rotated = run("secrets.rotate", "DB_PASSWORD", "--limit=vps1,vps2")
    assert rotated.code == 0, rotated.stdout + rotated.stderr
    assert "applying DB_PASSWORD with roles/postgresql on vps1 first" in rotated.stdout
    assert values(scratch)["DB_PASSWORD"] != before
    # vps2's backend env now holds the new password, and the database takes it.
    assert app_database_login(sandbox.addresses["vps2"]) == "together_pray|t"
    # The repository's own sandbox secrets again, for whatever runs next.
    restored = invoke("provision.server", "--limit=vps1", extra_env={"VIGIL_SECRETS": ""})
    assert restored.code == 0, restored.stdout + restored.stderr
    assert invoke("secrets.push", "--limit=vps1,vps2", extra_env={"VIGIL_SECRETS": ""}).code == 0
