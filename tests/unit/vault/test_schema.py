"""The schema's rules: each key's checks, the env it is required in, and a bad schema named by its rule."""

import re

import pytest

from vigil.core import roles
from vigil.core.paths import REPO_ROOT
from vigil.vault.generate import generate_missing
from vigil.vault.schema import check_rule, load_schema

REPO = REPO_ROOT


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
    (
        "DATABASE_URL",
        "production",
        "postgresql://u:p@localhost/app?host=db.remote.example",
        {},
        "must set sslmode=require",
    ),
    (
        "DATABASE_URL",
        "production",
        "postgresql://u:p@localhost/app?hostaddr=203.0.113.9",
        {},
        "must set sslmode=require",
    ),
    ("DATABASE_URL", "production", "postgresql:///app?host=/var/run/postgresql", {}, None),
    ("FRONTEND_URL", "production", "http\ts://together-pray.app", {}, "without spaces"),
    ("FRONTEND_URL", "production", "https://exa mple.com", {}, "without spaces"),
    ("DATABASE_URL", "sandbox", "postgresql://u:S3cr[etPass@127.0.0.1/app", {}, "does not parse"),
    (
        "DATABASE_URL",
        "sandbox",
        "postgresql://tp:right@127.0.0.1/app",
        {"DB_PASSWORD": "wrong"},
        "its password must be DB_PASSWORD's value",
    ),
    ("DATABASE_URL", "sandbox", "postgresql://tp:ri%40ght@127.0.0.1/app", {"DB_PASSWORD": "ri@ght"}, None),
]


@pytest.mark.parametrize("key, env, value, others, problem", RULES)
def test_schema_rule(schema, key, env, value, others, problem):
    problems = check_rule(schema.keys[key], env, value, {key: value, **others})
    assert problems == ([problem] if problem else []) or (problem and any(problem in p for p in problems))
    assert len(value) < 8 or all(value not in p for p in problems)


def test_the_repositorys_sandbox_values_need_nothing_more(schema):
    values = {}
    generate_missing(schema, values, "sandbox")
    assert schema.problems("sandbox", values) == []


def test_required_keys_depend_on_the_env(paths):
    paths.schema.write_text("app: {user: tp, config_dir: /etc/tp}\nservices: {}\n"
                            "keys: {PAGER_KEY: {required: [production]}}\n")
    schema = load_schema(paths)
    assert schema.problems("sandbox", {}) == []
    assert "PAGER_KEY: missing (required in production)" in schema.problems("production", {})


def test_unknown_key_is_named(schema):
    values = {}
    generate_missing(schema, values, "sandbox")
    values["STRIPE_KEY"] = "sk_test_abc"
    assert any(p.startswith("STRIPE_KEY: not in") for p in schema.problems("sandbox", values))


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {A_KEY: {min_lenght: 3}}\n",
            "keys.A_KEY.min_lenght: unknown rule",
        ),
        (
            "app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {A_KEY: {services: [api]}}\n",
            "keys.A_KEY.services: unknown service 'api'",
        ),
        ("app: {user: 'tp;id', config_dir: /etc/tp}\nservices: {}\nkeys: {}\n", "app.user"),
        ("app: {user: tp, config_dir: /etc/../tp}\nservices: {}\nkeys: {}\n", "app.config_dir"),
        ("keys: {}\n", "needs the sections app, services and keys"),
        (
            "app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {U: {url: {https_outside_sanbox: true}}}\n",
            "keys.U.url: expected a mapping of",
        ),
        (
            "app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {U: {url: https}}\n",
            "keys.U.url: expected a mapping of",
        ),
        (
            "app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {U: {required: production}}\n",
            "keys.U.required: expected true, false or a list",
        ),
        (
            "app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {U: {required: false, applied_by: nginks}}\n",
            "keys.U.applied_by: no role 'nginks' in roles/",
        ),
        (
            "app: {user: tp, config_dir: /etc/tp}\nservices: {}\nkeys: {U: {required: false, applied_by: ../x}}\n",
            "keys.U.applied_by: no role '../x' in roles/",
        ),
    ],
)
def test_bad_schema_names_the_rule(paths, text, message):
    paths.schema.write_text(text)
    with pytest.raises(Exception, match=re.escape(message)):
        load_schema(paths)


def test_a_role_a_key_names_is_checked_without_loading_it(paths, monkeypatch):
    """Every task reads the schema: a key's applied_by names a role by its directory, and its tasks.py is not
    executed for it (the roles' modules, and what they import, are onboarding's cost)."""
    loaded = []
    monkeypatch.setattr(roles.importlib.util, "spec_from_file_location", lambda *a, **k: loaded.append(a))
    assert any(rule.applied_by for rule in load_schema(paths).keys.values())
    assert loaded == []
