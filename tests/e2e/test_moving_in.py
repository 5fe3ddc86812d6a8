"""Moving in, as docs/moving-in.md says: its `invoke` commands run as written, in order, on two fresh
sandbox VPSes (vps5 for the app and its database, vps6 the backup host), with the doc's values set to
theirs, against a stand-in PaaS database of a million rows on this machine (tests/support/paas.py), its
variables in the files `vercel env pull` and `railway variables --kv` write. It ends with the app serving
the imported prayers over HTTPS, every table's rows and checksum equal to the PaaS's.

The one edit the sandbox needs: Let's Encrypt cannot reach it, so the inventory env.new wrote is pointed
at a local ACME server (tests/support/acme.py), whose DNS helper also stands in for the domain's records
(env.check asks it with --resolver). The faults are injected on the way: a key not accepted, a wrong
password, a port nobody answers, a certificate from another CA, the source ending the copy midway; and
before the rehearsal the same database comes in as a pg_dump archive (after a plain SQL dump and an
archive cut in half are refused), then the app's database is emptied again for the doc's next step.
Its VPSes are booted apart from the session's (marked `apart`: scripts/test runs it beside them).
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.support.acme import CA, RESOLVER, local_acme
from tests.support.named_https import session_for
from tests.support.paas import DATABASE, NEWEST_PRAYER, OWNER, PORT, paas_database
from tests.support.sandbox_hosts import REPO, SANDBOX_KEY, apart_layout, ssh
from vigil.sandbox.paths import Vps

WEB, BACKUP = "vps5", "vps6"
pytestmark = pytest.mark.apart
DOMAIN = "staging.together-pray.test"
ROWS = 1_000_000
DOC = REPO / "docs" / "moving-in.md"
WRITTEN_AFTER_REHEARSAL = "written on the PaaS after the rehearsal, before the cut-over"
# Every app table's figures on one side: rows and an order-free checksum of the rows' text.
# (md5 here, not vigil's own hash: an independent check.)
FIGURES = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SELECT 'prayers', count(*), "
           "sum(('x' || left(md5(r::text), 16))::bit(64)::bigint::numeric) FROM prayers r UNION ALL "
           "SELECT 'migrations', count(*), sum(('x' || left(md5(r::text), 16))::bit(64)::bigint::numeric) "
           "FROM migrations r ORDER BY 1;")


def doc_steps() -> tuple[list[str], list[str]]:
    """(the doc's value names, its invoke commands in order): the first sh block holds the values."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    values = [line.split("=", 1)[0] for line in blocks[0].splitlines() if "=" in line]
    commands = [line.strip() for block in blocks[1:] for line in block.splitlines() if line.startswith("invoke ")]
    return values, commands


def run_on_a_terminal(command: str, env: dict, cwd: Path, answer: str, timeout: float = 1800) -> tuple[int, str]:
    """`command` in bash on a pseudo-terminal, as a person types it; each [y/N] question gets `answer`."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(["bash", "-c", command], stdin=terminal, stdout=terminal, stderr=terminal, cwd=cwd,
                               env=env, start_new_session=True)
    os.close(terminal)
    output, answered, deadline = b"", 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                output += chunk
                if output.count(b"[y/N]") > answered:
                    answered += 1
                    os.write(controller, answer.encode() + b"\n")
            elif process.poll() is not None:
                break
        else:
            os.killpg(process.pid, 9)
            raise AssertionError(f"{command}: not done within {timeout}s: {output.decode(errors='replace')[-3000:]}")
        return process.wait(timeout=60), output.decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(controller)


@pytest.fixture(scope="module")
def fresh():
    """vps5 and vps6, fresh, apart from the session's VPSes (the doc's inventory is the only one naming them)."""
    with apart_layout("moving-in", f"{WEB},{BACKUP}") as hosts:
        yield hosts.addresses


@pytest.fixture(scope="module")
def paas(fresh):
    directory = Path(tempfile.mkdtemp(prefix="vigil-paas-"))
    try:
        with paas_database(Vps.from_name(WEB).gateway, directory, ROWS) as database:
            yield database
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def acme(fresh, tmp_path_factory):
    with local_acme(WEB, tmp_path_factory.mktemp("acme")) as server:
        yield server


@pytest.fixture(scope="module")
def walk(fresh, paas, acme, tmp_path_factory):
    """A person's shell: the doc's values, scratch inventory/ and secrets/, the PaaS's exports in the
    working directory, and `invoke` on the PATH."""
    home = tmp_path_factory.mktemp("moving-in")
    workdir, inventory, vault = home / "work", home / "inventory", home / "secrets"
    for directory in (workdir, inventory, vault, home / "bin"):
        directory.mkdir()
    shutil.copy(REPO / "secrets" / "schema.yml", vault / "schema.yml")
    (home / "bin" / "invoke").write_text(f'#!/bin/sh\nexec {REPO}/.venv/bin/invoke --search-root={REPO} "$@"\n')
    (home / "bin" / "invoke").chmod(0o755)
    (workdir / "paas-ca.pem").write_bytes(CA.read_bytes())
    # What `vercel env pull` and `railway variables --kv` write (shapes from their CLIs; values the stand-in's).
    (workdir / ".env.production.local").write_text(
        "# Created by Vercel CLI\n"
        'NEXT_PUBLIC_API_URL="https://together-pray-api.up.railway.app/api"\n'
        'VERCEL="1"\nVERCEL_ENV="production"\nVERCEL_OIDC_TOKEN="eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl"\n'
        'TURBO_CACHE="remote:rw"\n')
    (workdir / "railway.env").write_text(
        f"DATABASE_PUBLIC_URL={paas.url}\n"
        f"DATABASE_URL=postgresql://{OWNER}:{paas.password}@postgres.railway.internal:5432/{DATABASE}\n"
        "FRONTEND_URL=https://together-pray.vercel.app\n"
        "JWT_REFRESH_SECRET=paas-refresh-secret-kept-across-the-move-0123456789\n"
        "JWT_SECRET=paas-access-secret-kept-across-the-move-012345678901\n"
        "NODE_ENV=production\nRAILWAY_ENVIRONMENT_NAME=production\n"
        "RAILWAY_PUBLIC_DOMAIN=together-pray-api.up.railway.app\n")
    # The domain's records as the world would see them: the ACME server's DNS helper answers for it.
    values = {"ENV": "staging", "WEB1": fresh[WEB], "BACKUP1": fresh[BACKUP], "DOMAIN": DOMAIN,
              "EMAIL": "ops@together-pray.test", "SSH_KEY": str(SANDBOX_KEY), "PAAS_CA": "paas-ca.pem",
              "RESOLVER": RESOLVER}
    env = {**os.environ, **values, "PATH": f"{home / 'bin'}:{os.environ['PATH']}", "VIGIL_INVENTORY": str(inventory),
           "VIGIL_SECRETS": str(vault), "XDG_CONFIG_HOME": str(home / "config"), "TERM": "dumb",
           "COLUMNS": "200"}
    for name in ("VIGIL_AGE_IDENTITY", "VIGIL_AGE_IDENTITY_FILE"):
        env.pop(name, None)
    return {"env": env, "workdir": workdir, "inventory": inventory, "values": values, "acme": acme,
            "paas": paas, "addresses": fresh}


def sandbox_edits(walk) -> None:
    """The one edit the sandbox needs, as a person edits the inventory env.new wrote."""
    path = walk["inventory"] / "staging.yml"
    data = yaml.safe_load(path.read_text())
    data["groups"]["web"]["vars"].update({"nginx_certbot_server": walk["acme"]["directory"],
                                          "nginx_certbot_ca_certificate": str(CA)})
    # This machine is each VPS's gateway: exempt from the SSH rate limit, as a bastion would be; and the
    # sandbox's quicker deploy gates.
    for name, address in (("web1", WEB), ("backup1", BACKUP)):
        data["hosts"][name]["vars"] = {"firewall_ssh_trusted_sources": [Vps.from_name(address).gateway]}
    data["vars"].update({"app_watch_seconds": 5, "app_min_healthy_seconds": 5, "app_health_timeout": 25,
                         "pgbackrest_archive_timeout": 15})
    path.write_text(yaml.safe_dump(data, sort_keys=False))


class SourceCutter:
    """Ends the source's session that runs pg_dump's COPY the moment one runs (the server polls every 10 ms):
    the PaaS dropping the copy midway."""

    CUT = """DO $$ DECLARE ended int := 0; BEGIN
      FOR attempt IN 1..6000 LOOP
        PERFORM pg_stat_clear_snapshot();
        SELECT count(pg_terminate_backend(pid)) INTO ended FROM pg_stat_activity
          WHERE query LIKE 'COPY %' AND backend_type = 'client backend' AND pid <> pg_backend_pid();
        EXIT WHEN ended > 0;
        PERFORM pg_sleep(0.01);
      END LOOP;
      RAISE NOTICE 'vigil-cut %', ended; END $$;"""

    def __init__(self, paas):
        self.paas, self.cut = paas, 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        done = subprocess.run([str(self.paas.bin / "psql"), "-X", "-h", "127.0.0.1", "-p", str(PORT), "-U", OWNER,
                               "-d", DATABASE, "-c", self.CUT], capture_output=True, text=True, timeout=120,
                              env=self.paas.client_env())
        found = re.search(r"vigil-cut (\d+)", done.stderr)
        self.cut = int(found.group(1)) if found else 0

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join()


def database_figures(address: str, database: str = "together_pray") -> str:
    return ssh(address, f"runuser -u postgres -- psql -X -A -t -d {database} -c \"{FIGURES}\"")


def databases(address: str) -> list[str]:
    return ssh(address, "runuser -u postgres -- psql -X -A -t -c 'SELECT datname FROM pg_database "
                        "ORDER BY 1'").split()


@pytest.fixture(scope="module")
def walked(walk):
    """Every invoke command of the doc, in order, with the faults injected before the steps they fit."""
    names, commands = doc_steps()
    assert set(names) == set(walk["values"]), "the doc's values are the ones this walk sets"
    env, workdir, runs = walk["env"], walk["workdir"], []

    def run(command: str, answer: str = "y") -> tuple[int, str]:
        code, output = run_on_a_terminal(command, env, workdir, answer)
        runs.append((command, code, output))
        return code, output

    faults = {}
    for command in commands:
        if command.startswith("invoke env.new"):
            # A key the person does not accept: nothing written.
            faults["rejected"] = run(command.replace("env.new $ENV", "env.new rejected"), answer="n")
            faults["rejected_files"] = sorted(p.name for p in walk["inventory"].iterdir())
        if command.startswith("invoke backup.import") and "--final" not in command:
            faults.update(inject_source_faults(walk, run))
        if "--final" in command:
            # The PaaS kept taking writes after the rehearsal: the cut-over must bring them too.
            walk["paas"].psql(f"INSERT INTO prayers (author, body) VALUES ('late', '{WRITTEN_AFTER_REHEARSAL}')")
        code, output = run(command)
        assert code == 0, f"{command} exited {code}:\n{output[-4000:]}"
        if command.startswith("invoke env.new"):
            sandbox_edits(walk)
    return runs, faults


def inject_source_faults(walk, run) -> dict:
    """Before the rehearsal's import: each way the source can fail, then one cut midway."""
    paas, gateway = walk["paas"], Vps.from_name(WEB).gateway
    base = f"invoke backup.import --env=staging --from-url=postgresql://{OWNER}@{gateway}:{PORT}/{DATABASE}"
    other_ca = walk["workdir"] / "other-ca.pem"
    other_ca.write_bytes(walk["acme"]["root"].encode())
    found = {
        "wrong_password": run(f"printf 'not-the-password-at-all\\n' | {base} --ca=paas-ca.pem"),
        "unreachable": run(base.replace(f":{PORT}/", ":5999/") + f" --ca=paas-ca.pem <<< {paas.password!r}"),
        "other_ca": run(f"{base} --ca={other_ca} <<< {paas.password!r}"),
    }
    with SourceCutter(paas) as cutter:
        found["cut"] = run("invoke backup.import --env=staging --from-env-file=railway.env --ca=paas-ca.pem")
    found["cut_sessions"] = cutter.cut
    # The same database as archives: a plain SQL dump, an archive cut in half, then a whole one.
    make_archives(walk)
    found["dump_plain"] = run("invoke backup.import --env=staging --from-dump=paas.sql")
    found["dump_cut"] = run("invoke backup.import --env=staging --from-dump=cut.dump")
    found["databases_after_faults"] = databases(walk["addresses"][WEB])
    found["dump"] = run("invoke backup.import --env=staging --from-dump=paas.dump")
    found["uploads_left"] = ssh(walk["addresses"][WEB], "ls -A /var/lib/postgresql/vigil-import")
    found["dump_figures"], found["paas_figures"] = database_figures(walk["addresses"][WEB]), paas.psql(FIGURES)
    # Emptied again, so the doc's rehearsal runs as written (it refuses a database that holds rows).
    ssh(walk["addresses"][WEB], "runuser -u postgres -- psql -X -q -c 'DROP DATABASE together_pray WITH (FORCE)' "
                                "-c 'CREATE DATABASE together_pray OWNER together_pray'")
    return found


def make_archives(walk) -> None:
    """paas.dump (pg_dump --format=custom of the PaaS), cut.dump (its first half), paas.sql (plain SQL)."""
    paas, workdir = walk["paas"], walk["workdir"]
    for name, format_ in (("paas.dump", "custom"), ("paas.sql", "plain")):
        subprocess.run([str(paas.bin / "pg_dump"), f"--format={format_}", f"--file={workdir / name}", "-h",
                        "127.0.0.1", "-p", str(PORT), "-U", OWNER, "-d", DATABASE], env=paas.client_env(), check=True,
                       timeout=600)
    whole = (workdir / "paas.dump").read_bytes()
    (workdir / "cut.dump").write_bytes(whole[:len(whole) // 2])


# --- what the walk shows --------------------------------------------------------------------------

def served_prayers(walk) -> list[dict]:
    """GET /api/prayers at the web host, for the domain, its certificate verified against the ACME root."""
    root = walk["workdir"] / "acme-root.pem"
    root.write_text(walk["acme"]["root"])
    # The domain resolves to the web host here as it would in DNS; TLS checks the certificate for it.
    session = session_for(DOMAIN, walk["addresses"][WEB])
    answer = session.get(f"https://{DOMAIN}/api/prayers", verify=str(root), timeout=15)
    assert answer.status_code == 200, answer.text[:500]
    return answer.json()


def test_the_doc_walked_as_written_serves_the_imported_prayers_over_https(walked, walk):
    runs, _ = walked
    assert [command for command, _, _ in runs if command.startswith("invoke ")]
    prayers = served_prayers(walk)
    bodies = [prayer["body"] for prayer in prayers]
    # Newest first: what the PaaS took after the rehearsal came over with the cut-over.
    assert bodies[0] == WRITTEN_AFTER_REHEARSAL, bodies[:3]
    assert NEWEST_PRAYER in bodies


def test_every_table_has_the_rows_and_checksum_the_paas_had(walked, walk):
    mine = database_figures(walk["addresses"][WEB])
    theirs = walk["paas"].psql(FIGURES)
    assert mine.split() == theirs.split()
    prayers = next(line for line in mine.splitlines() if line.startswith("prayers|"))
    assert int(prayers.split("|")[1]) == ROWS + 3  # the welcome prayer, the marked one, the late one


def test_the_cut_over_froze_the_source_and_said_how_long_writes_stopped(walked, walk):
    runs, _ = walked
    final = next(output for command, _, output in runs if "--final" in command)
    assert re.search(r"write downtime: \d+\.\ds", final), final[-2000:]
    assert walk["paas"].psql("SHOW default_transaction_read_only") == "on"
    # The rehearsal's copy it replaced was backed up and kept, named.
    assert [name for name in databases(walk["addresses"][WEB]) if name.startswith("together_pray_replaced_")]


def test_the_apps_secrets_came_over_and_the_paas_own_did_not(walked, walk):
    backend = ssh(walk["addresses"][WEB], "cat /etc/together-pray/backend.env")
    assert "JWT_SECRET=paas-access-secret-kept-across-the-move-012345678901" in backend
    assert f"FRONTEND_URL=https://{DOMAIN}" in backend
    assert "RAILWAY" not in backend and "VERCEL" not in backend and "railway.internal" not in backend


def test_no_run_of_the_walk_printed_a_secret(walked, walk):
    runs, _ = walked
    for command, _, output in runs:
        assert walk["paas"].password not in output, command
        assert "paas-access-secret-kept-across-the-move" not in output, command


def test_a_key_not_accepted_writes_nothing(walked):
    _, faults = walked
    code, output = faults["rejected"]
    assert code != 0 and "was not accepted; nothing was written" in output, output[-2000:]
    assert faults["rejected_files"] == []


@pytest.mark.parametrize("fault, says", [
    ("wrong_password", "password authentication failed"),
    ("unreachable", "Connection refused"),
    ("other_ca", "certificate verify failed"),
    ("cut", "pg_dump of the source failed"),
])
def test_a_source_that_fails_leaves_the_apps_database_as_it_was(walked, walk, fault, says):
    _, faults = walked
    code, output = faults[fault]
    assert code != 0 and says in output, output[-3000:]
    assert walk["paas"].password not in output
    # No scratch database left behind; the app's still empty, as the rehearsal after them found it.
    assert [name for name in faults["databases_after_faults"] if "import" in name] == []
    if fault == "cut":
        assert faults["cut_sessions"] >= 1


def test_an_archive_is_imported_checked_table_by_table_and_leaves_nothing_on_the_host(walked):
    _, faults = walked
    code, output = faults["dump"]
    assert code == 0 and "rows equal to the source's" in output, output[-3000:]
    assert faults["dump_figures"].split() == faults["paas_figures"].split()
    assert faults["uploads_left"] == ""


@pytest.mark.parametrize("fault, says", [
    ("dump_plain", "--from-dump: paas.sql is a plain SQL dump"),
    ("dump_cut", "--from-dump cut.dump: web1: pg_restore of the archive failed"),
])
def test_an_archive_that_cannot_be_restored_is_named_and_changes_nothing(walked, fault, says):
    _, faults = walked
    code, output = faults[fault]
    assert code != 0 and says in output, output[-3000:]
    # No scratch database left (the rehearsal after them found the app's empty, as it refuses one with rows).
    assert [name for name in faults["databases_after_faults"] if "import" in name] == []


def test_a_database_that_holds_rows_is_refused_without_replace(walked, walk):
    before = database_figures(walk["addresses"][WEB])
    code, output = run_on_a_terminal("invoke backup.import --env=staging --from-env-file=railway.env --ca=paas-ca.pem",
                                      walk["env"], walk["workdir"], "n")
    assert code != 0 and "already holds rows" in output and "--replace" in output, output[-2000:]
    assert database_figures(walk["addresses"][WEB]) == before


def test_a_preview_gets_a_certificate_of_its_own_by_http_01_and_loses_it_with_the_preview(walked, walk, tmp_path):
    """The env the doc made, with previews on and no DNS API (previews_certificates: per-name): the local ACME
    server validates the preview's own name through the env's site on port 80."""
    inventory = tmp_path / "inventory"
    shutil.copytree(walk["inventory"], inventory)
    data = yaml.safe_load((inventory / "staging.yml").read_text())
    data["vars"].update({"previews_domain": "preview.together-pray.test", "previews_certificates": "per-name"})
    (inventory / "staging.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**walk["env"], "VIGIL_INVENTORY": str(inventory)}

    def run(command: str) -> tuple[int, str]:
        return run_on_a_terminal(command, env, walk["workdir"], "y")

    code, output = run("invoke provision.server --env=staging")
    assert code == 0, output[-3000:]
    code, output = run("invoke preview.up --env=staging --branch=feature/own-certificate --worktree")
    assert code == 0, output[-3000:]
    name = re.search(r"https://([a-z0-9-]+\.preview\.together-pray\.test)", output).group(1)
    issuer = tmp_path / "acme-root.pem"
    issuer.write_text(walk["acme"]["root"])
    page = session_for(name, walk["addresses"][WEB]).get(f"https://{name}/api/health", verify=str(issuer), timeout=15)
    assert page.status_code == 200 and page.json()["database"] == "up", page.text
    assert name in ssh(walk["addresses"][WEB], "certbot certificates 2>/dev/null")
    code, output = run(f"invoke preview.down {name.split('.')[0]} --env=staging")
    assert code == 0 and "certificate" in output, output[-3000:]
    assert name not in ssh(walk["addresses"][WEB], "certbot certificates 2>/dev/null; ls /etc/letsencrypt/live")
