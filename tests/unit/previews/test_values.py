"""A preview's secrets from its env's: fresh signing keys, its own database and address, the shared reused."""

import pytest

from vigil.previews.values import moved_to, preview_secrets
from vigil.vault.paths import SecretsError
from vigil.vault.schema import load_schema

STAGING = {
    "NODE_ENV": "production",
    "DB_PASSWORD": "staging-database-password-0123456789",
    "DATABASE_URL": "postgresql://together_pray:staging@10.0.0.5:5432/together_pray",
    "JWT_SECRET": "staging-access-secret-0123456789012345678901",
    "JWT_REFRESH_SECRET": "staging-refresh-secret-012345678901234567890",
    "FRONTEND_URL": "https://staging.together-pray.org",
    "NEXT_PUBLIC_API_URL": "https://staging.together-pray.org/api",
    "SENTRY_DSN": "https://public@sentry.example/1",
}
ORIGIN = "https://feature-login-0123abcd.preview.together-pray.org"
OWN_DATABASE = "postgresql://preview_feature_login_0123abcd:pw@10.0.0.5:5432/preview_feature_login_0123abcd"


@pytest.fixture
def derived(paths):
    fresh = iter(f"fresh-random-value-{n}-0123456789012345678901234" for n in range(10))
    return preview_secrets(load_schema(paths), STAGING, ORIGIN, OWN_DATABASE, generate=lambda rule: next(fresh))


@pytest.mark.parametrize("service, key, expected", [
    ("backend", "DATABASE_URL", OWN_DATABASE),
    ("backend", "FRONTEND_URL", ORIGIN),
    ("frontend", "NEXT_PUBLIC_API_URL", ORIGIN + "/api"),
    ("backend", "SENTRY_DSN", STAGING["SENTRY_DSN"]),
    ("frontend", "NODE_ENV", "production"),
])
def test_each_value_is_the_previews_own_or_the_shared_one(derived, service, key, expected):
    assert derived.values[service][key] == expected


def test_signing_keys_are_fresh_and_the_envs_database_and_password_never_reach_a_preview(derived):
    backend = derived.values["backend"]
    assert backend["JWT_SECRET"].startswith("fresh-") and backend["JWT_REFRESH_SECRET"].startswith("fresh-")
    assert backend["JWT_SECRET"] != backend["JWT_REFRESH_SECRET"]
    everything = "\n".join(v for values in derived.values.values() for v in values.values())
    for key in ("DB_PASSWORD", "DATABASE_URL", "JWT_SECRET", "JWT_REFRESH_SECRET"):
        assert STAGING[key] not in everything
    assert "DB_PASSWORD" not in backend  # vigil's own, for no service


def test_an_unmarked_secret_is_left_out_and_named(paths):
    schema = load_schema(paths)
    # As a key that is neither public, generated nor derived, nor marked for previews.
    rule = schema.keys["SENTRY_DSN"]
    rule.preview, rule.derive, rule.secret = "", "", True
    derived = preview_secrets(schema, STAGING, ORIGIN, OWN_DATABASE, generate=lambda rule: "x" * 64)
    assert "SENTRY_DSN" not in derived.values["backend"]
    assert derived.left_out == ["SENTRY_DSN (a secret the schema does not share with previews: preview: shared)"]


@pytest.mark.parametrize("url, moved", [
    ("https://staging.example/api", ORIGIN + "/api"),
    ("http://localhost:8080/api?v=1#x", ORIGIN + "/api?v=1#x"),
    ("https://staging.example", ORIGIN),
])
def test_a_sites_url_moves_to_the_previews_origin_keeping_its_path(url, moved):
    assert moved_to(url, ORIGIN) == moved


@pytest.mark.parametrize("rule, message", [
    ("preview: everywhere", "expected one of shared, fresh, site, database"),
    ("preview: fresh", r"expected one of shared, fresh, site, database \(fresh only for a key with generate:\)"),
])
def test_a_bad_preview_rule_is_refused_naming_the_key(paths, rule, message):
    schema_file = paths.schema
    schema_file.write_text(schema_file.read_text().replace("    preview: shared\n", f"    {rule}\n"))
    with pytest.raises(SecretsError, match=f"keys.SENTRY_DSN.preview: {message}"):
        load_schema(paths)
