"""The env file format: values read back exactly, injection refused naming the key, nothing expanded."""

import io
import re

import pytest
from dotenv import dotenv_values

from vigil.core.paths import REPO_ROOT
from vigil.vault.env_files import parse_dotenv, render_dotenv
from vigil.vault.paths import SecretsError

REPO = REPO_ROOT


# --- dotenv --------------------------------------------------------------------

ROUND_TRIP = ["plain", "with space", "dollar$HOME", "hash # not a comment", 'double"quote', "", "ünïcode",
              "postgresql://u:p%40ss@db:5432/x?sslmode=require"]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_rendered_env_file_reads_back_exactly(value):
    text = render_dotenv({"KEY": value, "OTHER": "x"})
    assert dotenv_values(stream=io.StringIO(text)) == {"KEY": value, "OTHER": "x"}
    assert parse_dotenv(text, "t") == {"KEY": value, "OTHER": "x"}


@pytest.mark.parametrize("value, message", [
    ("abc\nJWT_SECRET=stolen", "contains a line break"),
    ("abc\rdef", "contains a line break"),
    ("it's quoted", "contains ' or \\"),
    ("back\\slash here", "contains ' or \\"),
])
def test_values_that_could_inject_a_key_are_refused_naming_the_key(value, message):
    with pytest.raises(SecretsError, match=re.escape(message)) as raised:
        render_dotenv({"JWT_SECRET": value})
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
    with pytest.raises(SecretsError, match=re.escape(message)) as raised:
        parse_dotenv(text, "secrets/x.env.age")
    assert (
        "development" not in str(raised.value)
        and "ghp_" not in str(raised.value)
        and "unclosed" not in str(raised.value)
    )


def test_values_are_taken_literally_never_expanded(monkeypatch):
    monkeypatch.setenv("VIGIL_AGE_IDENTITY", "AGE-SECRET-KEY-1XYZ")
    text = "A=Xk9${HOME}Lq2\nB='${VIGIL_AGE_IDENTITY}'\nC=\"$PATH\"\n"
    assert parse_dotenv(text, "t") == {"A": "Xk9${HOME}Lq2", "B": "${VIGIL_AGE_IDENTITY}", "C": "$PATH"}
