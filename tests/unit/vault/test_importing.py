"""secrets.import: the PaaS's exports read as their platforms write them, each key mapped by the rules of
vigil/vault/importing.py, unknown keys kept only when a person says so, and no value ever in a message."""


import pytest

from vigil.vault import importing
from vigil.vault.paths import SecretsError
from vigil.vault.schema import load_schema
from vigil.vault.store import init_env, load, save

JWT = "railway-jwt-secret-0123456789-abcdefghijklmnop"
JWT_REFRESH = "railway-jwt-refresh-0123456789-abcdefghijklmno"
NEON = "postgresql://neondb_owner:npg_S3cretPassw0rd@ep-calm-sea-123456.eu-central-1.aws.neon.tech/neondb?sslmode=require"
NEON_POOLED = NEON.replace("ep-calm-sea-123456", "ep-calm-sea-123456-pooler")
# Built here, not written whole: secrets.scan (and audit.security) look for Stripe keys in the tree and history.
STRIPE = "sk_" + "live_" + "51ExampleExampleExampleExample"
# What the platforms write (shapes from their CLIs' sources; values invented).
EXPORTS = {
    ".env.local": (
        "# Created by Vercel CLI\n"
        'NEXT_PUBLIC_API_URL="https://together-pray-api.up.railway.app/api"\n'
        'NEXT_PUBLIC_ANALYTICS_ID="G-EXAMPLE1"\n'
        'NX_DAEMON="false"\n'
        'TURBO_CACHE="remote:rw"\n'
        'VERCEL="1"\n'
        'VERCEL_ENV="development"\n'
        'VERCEL_OIDC_TOKEN="eyJhbGciOiJSUzI1NiJ9.example.signature"\n'
        'VERCEL_URL=""\n'
        f'DATABASE_URL="{NEON_POOLED}"\n'
        f'DATABASE_URL_UNPOOLED="{NEON}"\n'
        'PGHOST="ep-calm-sea-123456-pooler.eu-central-1.aws.neon.tech"\n'
        'PGPASSWORD="npg_S3cretPassw0rd"\n'
    ),
    "railway.env": (
        "DATABASE_POOL_SIZE=5\n"
        "DATABASE_PUBLIC_URL=postgresql://postgres:railwaypass123456@roundhouse.proxy.rlwy.net:41234/railway\n"
        "DATABASE_URL=postgresql://postgres:railwaypass123456@postgres.railway.internal:5432/railway\n"
        "FRONTEND_URL=https://together-pray.vercel.app\n"
        f"JWT_REFRESH_SECRET={JWT_REFRESH}\n"
        f"JWT_SECRET={JWT}\n"
        "NODE_ENV=production\n"
        "RAILWAY_ENVIRONMENT_NAME=production\n"
        "RAILWAY_PUBLIC_DOMAIN=together-pray-api.up.railway.app\n"
        f"STRIPE_SECRET_KEY={STRIPE}\n"
    ),
    "railway.json": '{\n  "JWT_SECRET": "%s",\n  "RAILWAY_SERVICE_NAME": "api"\n}\n' % JWT,
    "neon.txt": NEON + "\n",
}


@pytest.fixture
def exports(tmp_path):
    for name, text in EXPORTS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("name, keys, services", [
    (".env.local", ["NEXT_PUBLIC_API_URL", "NEXT_PUBLIC_ANALYTICS_ID", "NX_DAEMON", "TURBO_CACHE", "VERCEL",
                    "VERCEL_ENV", "VERCEL_OIDC_TOKEN", "VERCEL_URL", "DATABASE_URL", "DATABASE_URL_UNPOOLED",
                    "PGHOST", "PGPASSWORD"], ("frontend",)),
    ("railway.env", ["DATABASE_POOL_SIZE", "DATABASE_PUBLIC_URL", "DATABASE_URL", "FRONTEND_URL", "JWT_REFRESH_SECRET",
                     "JWT_SECRET", "NODE_ENV", "RAILWAY_ENVIRONMENT_NAME", "RAILWAY_PUBLIC_DOMAIN",
                     "STRIPE_SECRET_KEY"], ("backend",)),
    ("railway.json", ["JWT_SECRET", "RAILWAY_SERVICE_NAME"], ("backend",)),
    ("neon.txt", ["DATABASE_URL"], ("backend",)),
])
def test_each_platforms_export_is_read_as_it_writes_it(exports, name, keys, services):
    entries = importing.read_export(exports / name)
    assert [entry.key for entry in entries] == keys
    assert {entry.services for entry in entries} == {services}


@pytest.mark.parametrize("key, rule", [
    ("VERCEL_OIDC_TOKEN", "platform"), ("VERCEL", "platform"), ("RAILWAY_PUBLIC_DOMAIN", "platform"),
    ("NX_DAEMON", "platform"), ("TURBO_CACHE", "platform"),
    ("DATABASE_URL", "database"), ("DATABASE_URL_UNPOOLED", "database"), ("DATABASE_PUBLIC_URL", "database"),
    ("PGPASSWORD", "database"), ("POSTGRES_PRISMA_URL", "database"),
    ("FRONTEND_URL", "site"), ("NEXT_PUBLIC_API_URL", "site"),
    ("JWT_SECRET", "schema"), ("NODE_ENV", "schema"),
    ("DATABASE_POOL_SIZE", "unknown"), ("STRIPE_SECRET_KEY", "unknown"), ("NEXT_PUBLIC_ANALYTICS_ID", "unknown"),
])
def test_each_key_goes_where_its_rule_says(paths, key, rule):
    entry = importing.Imported(key, "value-of-sixteen-chars", "export", ("backend",))
    site = {"FRONTEND_URL": "https://staging.example.com", "NEXT_PUBLIC_API_URL": "https://staging.example.com/api"}
    plan = importing.plan_import([entry], {}, load_schema(paths), site)
    found = {"platform": [k for k, why in plan.dropped if "PaaS for itself" in why],
             "database": [k for k, why in plan.dropped if "database" in why],
             "site": [k for k, _, _ in plan.replaced_site], "schema": plan.imported,
             "unknown": [e.key for e in plan.unknown]}
    assert {name: keys for name, keys in found.items() if keys} == {rule: [key]}


@pytest.fixture
def staging(paths):
    """A new env as env.new leaves it: generated values and the new domain's URLs."""
    schema = load_schema(paths)
    init_env("staging", paths, schema, "unit test")
    values = load("staging", paths, schema)
    values.update(NODE_ENV="production", FRONTEND_URL="https://staging.example.com",
                  NEXT_PUBLIC_API_URL="https://staging.example.com/api")
    save("staging", values, schema, paths, validate=False)
    return schema


def test_an_import_keeps_the_apps_secrets_drops_the_paas_own_and_sets_the_new_domain(paths, staging, exports):
    asked = []
    result = importing.import_files("staging", paths, staging, [exports / ".env.local", exports / "railway.env"],
                                    keep=lambda entry: asked.append(entry.key) or entry.key != "DATABASE_POOL_SIZE")
    values = load("staging", paths)
    # The users' tokens stay valid: the JWT secrets are the PaaS's.
    assert (values["JWT_SECRET"], values["JWT_REFRESH_SECRET"], values["NODE_ENV"]) == (JWT, JWT_REFRESH, "production")
    assert (values["FRONTEND_URL"], values["NEXT_PUBLIC_API_URL"]) == (
        "https://staging.example.com", "https://staging.example.com/api")
    assert "DATABASE_URL" not in values and "PGPASSWORD" not in values and "VERCEL_OIDC_TOKEN" not in values
    assert sorted(asked) == ["DATABASE_POOL_SIZE", "NEXT_PUBLIC_ANALYTICS_ID", "STRIPE_SECRET_KEY"]
    assert values["STRIPE_SECRET_KEY"] == STRIPE and "DATABASE_POOL_SIZE" not in values
    # The kept ones are in the schema now, for the service their file was for.
    schema = load_schema(paths)
    assert (schema.keys["STRIPE_SECRET_KEY"].services, schema.keys["STRIPE_SECRET_KEY"].secret) == (["backend"], True)
    assert (schema.keys["NEXT_PUBLIC_ANALYTICS_ID"].services,
            schema.keys["NEXT_PUBLIC_ANALYTICS_ID"].secret) == (["frontend"], False)
    assert set(result.changes["changed"]) == {"JWT_SECRET", "JWT_REFRESH_SECRET"}
    # What a person reads: key names, the site's public URLs, never a secret.
    shown = "\n".join(importing.describe(result.plan))
    assert "FRONTEND_URL: https://together-pray.vercel.app -> https://staging.example.com" in shown
    for secret in (JWT, JWT_REFRESH, STRIPE, "npg_S3cretPassw0rd", "railwaypass123456"):
        assert secret not in shown


def test_strict_refuses_unknown_keys_and_writes_nothing(paths, staging, exports):
    before = (paths.encrypted("staging").read_bytes(), paths.schema.read_bytes())
    with pytest.raises(SecretsError, match="--strict: not in .*STRIPE_SECRET_KEY.*nothing was imported"):
        importing.import_files("staging", paths, staging, [exports / "railway.env"], keep=lambda entry: True,
                               strict=True)
    assert (paths.encrypted("staging").read_bytes(), paths.schema.read_bytes()) == before


def test_check_plans_and_writes_nothing(paths, staging, exports):
    before = (paths.encrypted("staging").read_bytes(), paths.schema.read_bytes())
    result = importing.import_files("staging", paths, staging, [exports / "railway.env"], keep=lambda entry: True,
                                    check=True)
    assert "JWT_SECRET" in result.plan.imported
    assert (paths.encrypted("staging").read_bytes(), paths.schema.read_bytes()) == before


@pytest.mark.parametrize("text, message", [
    ("JWT_SECRET=abc\nthis line is pasted junk\n", "line 2 is not a KEY=value line"),
    ("JWT_SECRET=first-value-0123456789012345678\nJWT_SECRET=second-value-012345678901234567\n",
     "line 2: JWT_SECRET is given twice"),
    ('JWT_SECRET="two\nlines-0123456789012345678901234"\n', "line 1: the value of JWT_SECRET contains a line break"),
    ('JWT_SECRET="escaped\\nnewline-012345678901234567"\n', "line 1: the value of JWT_SECRET contains a line break"),
    ("jwt_secret=lower-case-key-0123456789012345\n", "line 1: not a valid key"),
    ('{"JWT_SECRET": 12345}', "the value of JWT_SECRET is not a string"),
    ('{"JWT_SECRET": "x",', "not valid JSON (line 1)"),
])
def test_a_bad_export_is_refused_by_line_and_key_never_by_value(paths, staging, tmp_path, text, message):
    export = tmp_path / "bad.env"
    export.write_text(text)
    before = paths.encrypted("staging").read_bytes()
    with pytest.raises(SecretsError) as error:
        importing.import_files("staging", paths, staging, [export], keep=lambda entry: True)
    assert message in error.value.message and "bad.env" in error.value.message
    for value in ("first-value", "second-value", "lines-0123", "newline-0123", "lower-case", "junk", "12345"):
        assert value not in error.value.message
    assert paths.encrypted("staging").read_bytes() == before


def test_one_key_with_two_values_in_two_files_is_refused(paths, staging, tmp_path):
    (tmp_path / "a.env").write_text(f"JWT_SECRET={JWT}\n")
    (tmp_path / "b.env").write_text(f"JWT_SECRET={JWT_REFRESH}\n")
    with pytest.raises(SecretsError, match=r"JWT_SECRET: \S*/a\.env and \S*/b\.env give it different values"):
        importing.import_files("staging", paths, staging, [tmp_path / "a.env", tmp_path / "b.env"],
                               keep=lambda entry: True)


def test_an_imported_value_the_schema_refuses_names_the_key_and_imports_nothing(paths, staging, tmp_path):
    (tmp_path / "short.env").write_text("JWT_SECRET=too-short\n")
    before = paths.encrypted("staging").read_bytes()
    with pytest.raises(SecretsError, match="JWT_SECRET: must be at least 32 characters.*nothing was imported"):
        importing.import_files("staging", paths, staging, [tmp_path / "short.env"], keep=lambda entry: True)
    assert paths.encrypted("staging").read_bytes() == before


@pytest.mark.parametrize("files, key", [
    ([".env.local"], "DATABASE_URL_UNPOOLED"),  # Neon's direct host, not its PgBouncer
    (["railway.env"], "DATABASE_PUBLIC_URL"),  # Railway's proxy, not its private network
    (["neon.txt"], "DATABASE_URL"),
])
def test_the_source_database_is_read_through_a_direct_reachable_url(exports, files, key):
    entries = importing.merge([importing.read_export(exports / name) for name in files])
    assert importing.source_database_url(entries, "export")[1] == key


def test_without_a_new_domain_the_paas_address_is_kept_and_said(paths, exports):
    schema = load_schema(paths)
    init_env("bare", paths, schema, "unit test")
    result = importing.import_files("bare", paths, schema, [exports / "railway.env"], keep=lambda entry: False)
    assert load("bare", paths)["FRONTEND_URL"] == "https://together-pray.vercel.app"
    assert "FRONTEND_URL: the PaaS's address kept, as the env has no domain yet: give --domain" in (
        importing.describe(result.plan))
