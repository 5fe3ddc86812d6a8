"""Masking: every likely spelling of a value, a URL's password alone, public values left readable."""

import base64
import json
import urllib.parse

import pytest

from vigil.core.paths import REPO_ROOT
from vigil.core.redaction import REDACTOR
from vigil.vault.masking import register

REPO = REPO_ROOT


# --- redaction -----------------------------------------------------------------


def test_every_likely_spelling_of_a_value_is_masked(schema):
    value = "pa ss/wörd+42=="
    register({"JWT_SECRET": value}, schema)
    for form in (
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        base64.b64encode(value.encode()).decode(),
        base64.urlsafe_b64encode(value.encode()).decode().rstrip("="),
    ):
        assert REDACTOR.redact(f"before {form} after") == "before *** after", form


@pytest.mark.parametrize("value", ['sec"ret\\with-quotes', "tab\tand-wörd-42", "ümlaut-only-secret"])
def test_a_value_an_app_logs_as_json_is_masked_in_its_escaped_form(schema, value):
    register({"JWT_SECRET": value}, schema)
    for line in (json.dumps({"msg": "boot", "secret": value}), json.dumps({"secret": value}, ensure_ascii=False)):
        assert REDACTOR.redact(line).endswith('"secret": "***"}'), line


@pytest.mark.parametrize("spelling", [
    lambda v: urllib.parse.quote(v),  # Python's default keeps '/'
    lambda v: urllib.parse.quote(v, safe="").lower(),  # lowercase percent-escapes
    lambda v: base64.b64encode(b"user:" + v.encode()).decode(),  # HTTP Basic auth: the value after 5 bytes
    lambda v: base64.b64encode(b"ab" + v.encode() + b"!").decode(),
])
def test_misaligned_and_partial_encodings_are_masked(schema, spelling):
    value = "Tr0ub4dor/&3-horse+battery"
    register({"JWT_SECRET": value}, schema)
    leaked = spelling(value)
    masked = REDACTOR.redact(f"header: {leaked}")
    assert len(masked) < len(leaked) and "***" in masked


def test_database_url_password_is_masked_alone(schema):
    register({"DATABASE_URL": "postgresql://tp:Zx9%40secretpw@127.0.0.1:5432/tp"}, schema)
    assert REDACTOR.redact("PGPASSWORD=Zx9@secretpw") == "PGPASSWORD=***"
    assert REDACTOR.redact("password Zx9%40secretpw") == "password ***"


def test_query_password_is_masked(schema):
    register({"DATABASE_URL": "postgresql://127.0.0.1/tp?user=tp&password=qu3ryPassw0rd"}, schema)
    assert REDACTOR.redact("PGPASSWORD=qu3ryPassw0rd") == "PGPASSWORD=***"


def test_public_values_stay_readable(schema):
    register({"NODE_ENV": "production", "FRONTEND_URL": "https://together-pray.example"}, schema)
    assert REDACTOR.redact("provision.server on production") == "provision.server on production"
