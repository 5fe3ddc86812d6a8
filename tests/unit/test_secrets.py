"""Secrets without hosts: dotenv quoting and injection, schema rules, redaction forms, age interop, scanning."""

import base64
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from dotenv import dotenv_values

from vigil import secrets as S
from vigil.commands import REDACTOR
from vigil.config import Host, Inventory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def paths(tmp_path, monkeypatch):
    """A scratch secrets/ with the shipped schema; the sandbox identity lands in tmp_path/.vigil."""
    root = tmp_path / "secrets"
    root.mkdir()
    shutil.copy(REPO / "secrets" / "schema.yml", root / "schema.yml")
    monkeypatch.setenv("VIGIL_SECRETS", str(root))
    for name in ("VIGIL_AGE_IDENTITY", "VIGIL_AGE_IDENTITY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return S.SecretsPaths(root)


@pytest.fixture
def schema(paths):
    return S.load_schema(paths)


# --- dotenv --------------------------------------------------------------------

ROUND_TRIP = ["plain", "with space", "dollar$HOME", "hash # not a comment", 'double"quote', "", "ünïcode",
              "postgresql://u:p%40ss@db:5432/x?sslmode=require"]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_rendered_env_file_reads_back_exactly(value):
    text = S.render_dotenv({"KEY": value, "OTHER": "x"})
    assert dotenv_values(stream=__import__("io").StringIO(text)) == {"KEY": value, "OTHER": "x"}
    assert S.parse_dotenv(text, "t") == {"KEY": value, "OTHER": "x"}


@pytest.mark.parametrize("value, message", [
    ("abc\nJWT_SECRET=stolen", "contains a line break"),
    ("abc\rdef", "contains a line break"),
    ("it's quoted", "contains ' or \\"),
    ("back\\slash here", "contains ' or \\"),
])
def test_values_that_could_inject_a_key_are_refused_naming_the_key(value, message):
    with pytest.raises(S.SecretsError, match=re.escape(message)) as raised:
        S.render_dotenv({"JWT_SECRET": value})
    assert "JWT_SECRET" in str(raised.value) and value not in str(raised.value)


@pytest.mark.parametrize("text, message", [
    ("JWT_SECRET\n", "line 1: a key without a value"),
    ("lower=1\n", "line 1: not a valid key"),
    ("NODE_ENV=x\nghp_0123456789abcdefghijklmnopqrstuvwxyzAB\n", "line 2: not a valid key"),
    ('NODE_ENV=x\nSENTRY_DSN="https://unclosed\n', "line 2 is not a KEY=value line"),
    ("JWT_SECRET=one-development\nJWT_SECRET=two-development\n", "line 2: JWT_SECRET is given twice"),
    ('JWT_SECRET="abc\nNODE_ENV=development"\n', "JWT_SECRET contains a line break"),
    ("JWT_SECRET=abc\x1bdevelopment\n", "JWT_SECRET contains a line break or control character"),
    ("JWT_SECRET=abc\u2028development\n", "JWT_SECRET contains a line break or control character"),
])
def test_parse_refuses_bad_lines_without_echoing_values(text, message):
    with pytest.raises(S.SecretsError, match=re.escape(message)) as raised:
        S.parse_dotenv(text, "secrets/x.env.age")
    assert "development" not in str(raised.value) and "ghp_" not in str(raised.value) and "unclosed" not in str(raised.value)


def test_values_are_taken_literally_never_expanded(monkeypatch):
    monkeypatch.setenv("VIGIL_AGE_IDENTITY", "AGE-SECRET-KEY-1XYZ")
    text = "A=Xk9${HOME}Lq2\nB='${VIGIL_AGE_IDENTITY}'\nC=\"$PATH\"\n"
    assert S.parse_dotenv(text, "t") == {"A": "Xk9${HOME}Lq2", "B": "${VIGIL_AGE_IDENTITY}", "C": "$PATH"}


# --- schema ------------------------------------------------------------------

RULES = [
    # (key, env, value, other values, expected problem or None)
    ("JWT_SECRET", "staging", "short", {}, "must be at least 32 characters (has 5)"),
    ("JWT_SECRET", "staging", "x" * 40, {"JWT_REFRESH_SECRET": "x" * 40}, "must differ from JWT_REFRESH_SECRET"),
    ("JWT_SECRET", "staging", "x" * 40, {"JWT_REFRESH_SECRET": "y" * 40}, None),
    ("NODE_ENV", "staging", "prod", {}, "must be one of production, development, test"),
    ("FRONTEND_URL", "production", "http://together-pray.app", {}, "must use https outside the sandbox"),
    ("FRONTEND_URL", "sandbox", "http://localhost", {}, None),
    ("FRONTEND_URL", "production", "https://together-pray.app", {}, None),
    ("FRONTEND_URL", "production", "ftp://together-pray.app", {}, "must be a URL with scheme http or https"),
    ("FRONTEND_URL", "production", "together-pray.app", {}, "must be a URL"),
    ("DATABASE_URL", "production", "postgresql://u:p@db.internal:5432/app", {}, "must set sslmode=require"),
    ("DATABASE_URL", "production", "postgresql://u:p@db.internal:5432/app?sslmode=require", {}, None),
    ("DATABASE_URL", "production", "postgresql://u:p@127.0.0.1:5432/app", {}, None),
    ("DATABASE_URL", "production", "mysql://u:p@127.0.0.1/app", {}, "scheme postgresql or postgres"),
    # libpq lets the query name the real host: it counts.
    ("DATABASE_URL", "production", "postgresql://u:p@localhost/app?host=db.remote.example", {}, "must set sslmode=require"),
    ("DATABASE_URL", "production", "postgresql://u:p@localhost/app?hostaddr=203.0.113.9", {}, "must set sslmode=require"),
    ("DATABASE_URL", "production", "postgresql:///app?host=/var/run/postgresql", {}, None),
    ("FRONTEND_URL", "production", "http\ts://together-pray.app", {}, "without spaces"),
    ("FRONTEND_URL", "production", "https://exa mple.com", {}, "without spaces"),
    ("DATABASE_URL", "sandbox", "postgresql://u:S3cr[etPass@127.0.0.1/app", {}, "does not parse"),
    ("DATABASE_URL", "sandbox", "postgresql://tp:right@127.0.0.1/app", {"DB_PASSWORD": "wrong"}, "its password must be DB_PASSWORD's value"),
    ("DATABASE_URL", "sandbox", "postgresql://tp:ri%40ght@127.0.0.1/app", {"DB_PASSWORD": "ri@ght"}, None),
]


@pytest.mark.parametrize("key, env, value, others, problem", RULES)
def test_schema_rule(schema, key, env, value, others, problem):
    problems = S.check_rule(schema.keys[key], env, value, {key: value, **others})
    assert problems == ([problem] if problem else []) or (problem and any(problem in p for p in problems))
    assert len(value) < 8 or all(value not in p for p in problems)


def test_required_keys_depend_on_the_env(schema):
    values = {}
    S.generate_missing(schema, values, "sandbox")
    assert schema.problems("sandbox", values) == []
    production = schema.problems("production", values)
    assert "SENTRY_DSN: missing (required in production)" in production


def test_unknown_key_is_named(schema):
    values = {}
    S.generate_missing(schema, values, "sandbox")
    values["STRIPE_KEY"] = "sk_test_abc"
    assert any(p.startswith("STRIPE_KEY: not in") for p in schema.problems("sandbox", values))


@pytest.mark.parametrize("text, message", [
    ("app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {A_KEY: {min_lenght: 3}}\n", "keys.A_KEY.min_lenght: unknown rule"),
    ("app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {A_KEY: {services: [api]}}\n", "keys.A_KEY.services: unknown service 'api'"),
    ("app: {user: 'tp;id', config_dir: /etc/tp}\nservices: {}\nkeys: {}\n", "app.user"),
    ("app: {user: tp, config_dir: /etc/../tp}\nservices: {}\nkeys: {}\n", "app.config_dir"),
    ("keys: {}\n", "needs the sections app, services and keys"),
    ("app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {U: {url: {https_outside_sanbox: true}}}\n", "keys.U.url: expected a mapping of"),
    ("app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {U: {url: https}}\n", "keys.U.url: expected a mapping of"),
    ("app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {U: {required: production}}\n", "keys.U.required: expected true, false or a list"),
])
def test_bad_schema_names_the_rule(paths, text, message):
    paths.schema.write_text(text)
    with pytest.raises(Exception, match=re.escape(message)):
        S.load_schema(paths)


# --- redaction -----------------------------------------------------------------


def test_every_likely_spelling_of_a_value_is_masked(schema):
    value = "pa ss/wörd+42=="
    S.register({"JWT_SECRET": value}, schema)
    for form in (value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
                 base64.b64encode(value.encode()).decode(), base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")):
        assert REDACTOR.redact(f"before {form} after") == "before *** after", form


@pytest.mark.parametrize("spelling", [
    lambda v: urllib.parse.quote(v),  # Python's default keeps '/'
    lambda v: urllib.parse.quote(v, safe="").lower(),  # lowercase percent-escapes
    lambda v: base64.b64encode(b"user:" + v.encode()).decode(),  # HTTP Basic auth: the value after 5 bytes
    lambda v: base64.b64encode(b"ab" + v.encode() + b"!").decode(),
])
def test_misaligned_and_partial_encodings_are_masked(schema, spelling):
    value = "Tr0ub4dor/&3-horse+battery"
    S.register({"JWT_SECRET": value}, schema)
    leaked = spelling(value)
    masked = REDACTOR.redact(f"header: {leaked}")
    assert len(masked) < len(leaked) and "***" in masked


def test_database_url_password_is_masked_alone(schema):
    S.register({"DATABASE_URL": "postgresql://tp:Zx9%40secretpw@127.0.0.1:5432/tp"}, schema)
    assert REDACTOR.redact("PGPASSWORD=Zx9@secretpw") == "PGPASSWORD=***"
    assert REDACTOR.redact("password Zx9%40secretpw") == "password ***"


def test_query_password_is_masked(schema):
    S.register({"DATABASE_URL": "postgresql://127.0.0.1/tp?user=tp&password=qu3ryPassw0rd"}, schema)
    assert REDACTOR.redact("PGPASSWORD=qu3ryPassw0rd") == "PGPASSWORD=***"


def test_public_values_stay_readable(schema):
    S.register({"NODE_ENV": "production", "FRONTEND_URL": "https://together-pray.example"}, schema)
    assert REDACTOR.redact("provision.server on production") == "provision.server on production"


# --- age interop -----------------------------------------------------------------


@pytest.fixture
def initialised(paths, schema):
    S.init_env("sandbox", paths, schema, "unit test")
    return paths


def test_vigil_file_opens_with_the_age_tool(initialised):
    identity = initialised.identity_file("sandbox")
    out = subprocess.run(["age", "-d", "-i", str(identity), str(initialised.encrypted("sandbox"))],
                         capture_output=True, check=True).stdout.decode()
    assert S.parse_dotenv(out, "age output") == S.load("sandbox", initialised)


def test_age_tool_file_opens_in_vigil(initialised, schema):
    (recipient, _), = S.load_recipients("sandbox", initialised)
    values = S.load("sandbox", initialised)
    values["JWT_SECRET"] = "z" * 48
    subprocess.run(["age", "-r", recipient, "-o", str(initialised.encrypted("sandbox"))],
                   input=S.render_dotenv(values).encode(), check=True)
    assert S.load("sandbox", initialised)["JWT_SECRET"] == "z" * 48


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-20], "corrupt, truncated or was tampered"),
    (lambda data: data[:-5] + bytes([data[-5] ^ 1]) + data[-4:], "corrupt, truncated or was tampered"),
    (lambda data: b"not an age file at all", "corrupt, truncated or was tampered"),
])
def test_tampering_is_detected(initialised, damage, message):
    path = initialised.encrypted("sandbox")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(S.SecretsError, match=message):
        S.load("sandbox", initialised)


def test_wrong_identity_is_a_clear_error(initialised, monkeypatch):
    monkeypatch.setenv("VIGIL_AGE_IDENTITY", str(S.x25519.Identity.generate()))
    with pytest.raises(S.SecretsError, match="none of your age identities can open it"):
        S.load("sandbox", initialised)


def test_missing_identity_names_where_to_put_one(paths, schema):
    S.init_env("staging", paths, schema, "x")
    paths.identity_file("staging").unlink()
    with pytest.raises(S.SecretsError, match=r"no age identity for env 'staging': set VIGIL_AGE_IDENTITY"):
        S.load("staging", paths)


def test_an_invalid_save_leaves_the_file_unchanged(initialised, schema):
    before = initialised.encrypted("sandbox").read_bytes()
    values = S.load("sandbox", initialised)
    with pytest.raises(S.SecretsError, match="JWT_SECRET: must be at least 32") as raised:
        S.save("sandbox", {**values, "JWT_SECRET": "tooshort"}, schema, initialised)
    assert "tooshort" not in str(raised.value)
    assert initialised.encrypted("sandbox").read_bytes() == before


def test_reencrypting_to_a_new_recipient_lets_them_decrypt(initialised, tmp_path):
    bob = S.x25519.Identity.generate()
    recipients = [key for key, _ in S.load_recipients("sandbox", initialised)] + [str(bob.to_public())]
    S.reencrypt("sandbox", initialised, recipients)
    data = initialised.encrypted("sandbox").read_bytes()
    assert "JWT_SECRET=" in S.decrypt(data, [bob], "x")


# --- push plans --------------------------------------------------------------------


def test_push_plan_keeps_values_out_of_every_command_line(initialised, schema):
    values = S.load("sandbox", initialised)
    host = Host("vps1", "10.213.1.2", 22, "root", None, ("web", "db"), 5, 30)
    inventory = Inventory("sandbox", Path("inventory/sandbox.yml"), Path("k"), {"vps1": host},
                          {"web": ["vps1"], "db": ["vps1"]}, {}, {}, {})
    (plan,) = S.push_plans(inventory, schema, values, "sandbox", None)
    files = [op for op in plan.operations if type(op).__name__ == "File"]
    assert [(f.path, f.owner, f.mode, f.secret) for f in files] == [
        ("/etc/together-pray/backend.env", "together-pray", "0600", True),
        ("/etc/together-pray/frontend.env", "together-pray", "0600", True),
    ]
    backend = S.parse_dotenv(files[0].content.decode(), "backend")
    assert set(backend) == {"NODE_ENV", "DATABASE_URL", "JWT_SECRET", "JWT_REFRESH_SECRET", "FRONTEND_URL"}
    assert "DB_PASSWORD" not in files[1].content.decode()
    from vigil import facts as F
    fresh = {f"file:{p}": F.FileState(None) for p in ("/etc/together-pray/backend.env", "/etc/together-pray/frontend.env")}
    fresh["file:/etc/together-pray"] = F.FileState("directory", "0750", "root", "together-pray")
    for op in files:
        for command in op.plan(fresh).commands:
            rendered = command.render("deploy")
            assert all(value not in rendered for value in values.values() if len(value) > 8)
            assert command.stdin  # the content travels on stdin


def layout(web: list[str], db: list[str], private: dict | None = None) -> Inventory:
    names = list(dict.fromkeys(web + db))
    hosts = {name: Host(name, f"203.0.113.{i}", 22, "deploy", None, (), 5, 30, private_address=(private or {}).get(name))
             for i, name in enumerate(names, 1)}
    return Inventory("sandbox", Path("inventory/sandbox.yml"), Path("k"), hosts, {"web": web, "db": db}, {}, {},
                     {"db1": {"postgresql_user": "tp_app"}})


@pytest.mark.parametrize("inventory, host, url", [
    # The database on the web host itself: loopback, no TLS needed.
    (layout(["web1"], ["web1"]), "web1", "postgresql://together_pray:p%40ss@127.0.0.1:5432/together_pray"),
    # A separate database host: its private address, TLS required; the role name from its vars.
    (layout(["web1", "web2"], ["db1"], {"db1": "10.0.0.5"}), "web2",
     "postgresql://tp_app:p%40ss@10.0.0.5:5432/together_pray?sslmode=verify-full&sslrootcert=/etc/db.crt"),
    (layout(["web1"], ["db1"], {"db1": "fd00::5"}), "web1",
     "postgresql://tp_app:p%40ss@[fd00::5]:5432/together_pray?sslmode=verify-full&sslrootcert=/etc/db.crt"),
    # No private address: the public one.
    (layout(["web1"], ["db1"]), "web1",
     "postgresql://tp_app:p%40ss@203.0.113.2:5432/together_pray?sslmode=verify-full&sslrootcert=/etc/db.crt"),
])
def test_database_url_is_derived_per_host(schema, inventory, host, url):
    assert S.postgresql_url(inventory, inventory.hosts[host], "p@ss", "/etc/db.crt") == url
    assert S.check_rule(schema.keys["DATABASE_URL"], "production", url, {"DB_PASSWORD": "p@ss"}) == []


@pytest.mark.parametrize("inventory, fetched, certificate_on", [
    (layout(["web1"], ["web1"]), 0, []),  # all local: the database host is never asked
    (layout(["web1", "web2"], ["db1"], {"db1": "10.0.0.5"}), 1, ["web1", "web2"]),  # asked once for both
    (layout(["web1", "web2"], ["web1"]), 1, ["web2"]),
])
def test_web_hosts_on_other_machines_get_the_database_certificate_beside_the_url(initialised, schema, inventory, fetched,
                                                                                   certificate_on):
    calls = []

    def fetch():
        calls.append(1)
        return "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    plans = S.push_plans(inventory, schema, S.load("sandbox", initialised), "sandbox", "web", database_certificate=fetch)
    holders = [plan.host.name for plan in plans
               if any(getattr(op, "path", "") == "/etc/together-pray/database-server.crt" for op in plan.operations)]
    assert (len(calls), holders) == (fetched, certificate_on)


def test_a_database_url_that_is_set_wins_and_two_database_hosts_need_one(schema):
    inventory = layout(["web1"], ["db1", "db2"])
    services = list(schema.services.values())
    explicit = {"DB_PASSWORD": "x" * 24, "DATABASE_URL": "postgresql://u:p@managed.example/app?sslmode=require"}
    assert S.derive_values(schema, explicit, inventory, inventory.hosts["web1"], services) == {}
    with pytest.raises(S.SecretsError, match=r"has 2 database hosts \(db1, db2\); vigil derives it for exactly one"):
        S.derive_values(schema, {"DB_PASSWORD": "x" * 24}, inventory, inventory.hosts["web1"], services)


def test_rotating_the_database_password_pushes_to_the_services_that_read_it_derived(schema):
    assert schema.services_using("DB_PASSWORD", {}) == ["backend"]
    assert schema.services_using("DB_PASSWORD", {"DATABASE_URL": "postgresql://u:p@h/app"}) == []


# --- scanning --------------------------------------------------------------------------


def test_scan_finds_values_and_tokens_in_the_tree_and_in_history(tmp_path, schema):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *args: subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True)
    git("init", "-q")
    secret = "Kq8vN2xLr5tY7wZ1aB3cD6eF9gH0jM4p"
    (repo / "config.js").write_text(f"const jwt = '{secret}';\n")
    git("add", "."), git("commit", "-qm", "oops")
    (repo / "config.js").write_text("const jwt = process.env.JWT_SECRET;\n")
    (repo / "notes.txt").write_text("token ghp_" + "a" * 36 + "\n")
    git("add", "."), git("commit", "-qm", "fix")
    forms = S.scan_forms({"production": {"JWT_SECRET": secret, "NODE_ENV": "production"}}, schema)
    findings = S.scan_repository(repo, forms, history=True)
    whats = {(f.where.split(":")[-1] if "(history)" not in f.where else "history", f.what) for f in findings}
    assert ("history", "the value of production JWT_SECRET") in whats
    assert any(f.where.startswith("notes.txt:1") and f.what == "a GitHub token" for f in findings)
    assert not any("NODE_ENV" in f.what for f in findings)
    assert all(secret not in f.where + f.what for f in findings)
    assert S.scan_repository(repo, forms, history=False) == [f for f in findings if "(history)" not in f.where]


@pytest.mark.parametrize("line, message", [
    ("age1" + "q" * 58, "not an age recipient"),  # right shape, bad checksum
    ("AGE-SECRET-KEY-1ABC", "not an age recipient"),
])
def test_bad_recipient_lines_name_file_and_line(line, message):
    with pytest.raises(S.SecretsError, match=f"recipients/prod.txt:2: {message}"):
        S.parse_recipients(f"# team\n{line}\n", "recipients/prod.txt")


def test_a_second_writer_is_refused_while_the_first_holds_the_env(paths):
    with S.locked("sandbox", paths):
        with pytest.raises(S.SecretsError, match="being changed by another vigil process"):
            with S.locked("sandbox", paths):
                pass
    with S.locked("sandbox", paths):  # released
        pass


def test_generated_sandbox_secrets_leave_the_database_url_to_be_derived(schema):
    values = {}
    S.generate_missing(schema, values, "sandbox")
    assert "DATABASE_URL" not in values and len(values["DB_PASSWORD"]) >= 24
    assert schema.problems("sandbox", values) == []


def test_a_label_cannot_break_the_recipients_file(paths, schema):
    with pytest.raises(S.SecretsError, match="--label"):
        S.init_env("staging", paths, schema, "x\nnot-a-key")
    assert not paths.recipients("staging").exists()


def test_scan_sees_merges_unicode_paths_and_misnamed_plaintext(tmp_path, schema):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *args: subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True)
    secret = "Kq8vN2xLr5tY7wZ1aB3cD6eF9gH0jM4p"
    git("init", "-q", "-b", "main")
    (repo / "a.txt").write_text("base\n")
    git("add", "."), git("commit", "-qm", "base")
    git("checkout", "-qb", "side")
    (repo / "b.txt").write_text("side\n")
    git("add", "."), git("commit", "-qm", "side")
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "--no-commit", "side")
    (repo / "café.md").write_text(f"pasted {secret}\n")  # added only in the merge commit
    git("add", "."), git("commit", "-qm", "merge")
    git("rm", "-q", "café.md"), git("commit", "-qm", "remove")
    (repo / "production.env.age").write_text(f"JWT_SECRET={secret}\n")  # plaintext despite its name
    forms = S.scan_forms({"production": {"JWT_SECRET": secret}}, schema)
    findings = S.scan_repository(repo, forms, history=True)
    assert any("café.md (history)" in f.where for f in findings)
    assert any(f.where.startswith("production.env.age:1") for f in findings)


def test_the_draft_directory_goes_with_everything_an_editor_left_in_it():
    from vigil.tasks import secrets as tasks

    with tasks._private_draft_directory() as directory:
        (directory / "sandbox.env").write_text("JWT_SECRET=x\n")
        (directory / "sandbox.env~").write_text("JWT_SECRET=x\n")  # an editor's backup
        assert oct(directory.stat().st_mode & 0o777) == "0o700"
    assert not directory.exists()
