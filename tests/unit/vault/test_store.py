"""The encrypted store: age interop both ways, tampering and wrong keys, saving only what is valid, recipients,
one writer at a time, and the draft directory an edit uses."""

import re
import stat
import subprocess

import pytest
from pyrage import x25519

from tests.support.locks import turns
from vigil.core.paths import REPO_ROOT
from vigil.vault.editing import private_draft_directory
from vigil.vault.env_files import parse_dotenv, render_dotenv
from vigil.vault.generate import generate_missing
from vigil.vault.keys import load_recipients, parse_recipients
from vigil.vault.paths import SecretsError
from vigil.vault.store import decrypt, init_env, load, locked, reencrypt, save

REPO = REPO_ROOT


# --- age interop -----------------------------------------------------------------


def test_vigil_file_opens_with_the_age_tool(initialised):
    identity = initialised.identity_file("sandbox")
    out = subprocess.run(["age", "-d", "-i", str(identity), str(initialised.encrypted("sandbox"))],
                         capture_output=True, check=True).stdout.decode()
    assert parse_dotenv(out, "age output") == load("sandbox", initialised)


def test_age_tool_file_opens_in_vigil(initialised, schema):
    (recipient, _), = load_recipients("sandbox", initialised)
    values = load("sandbox", initialised)
    values["JWT_SECRET"] = "z" * 48
    subprocess.run(["age", "-r", recipient, "-o", str(initialised.encrypted("sandbox"))],
                   input=render_dotenv(values).encode(), check=True)
    assert load("sandbox", initialised)["JWT_SECRET"] == "z" * 48


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-20], "corrupt, truncated or was tampered"),
    (lambda data: data[:-5] + bytes([data[-5] ^ 1]) + data[-4:], "corrupt, truncated or was tampered"),
    (lambda data: b"not an age file at all", "corrupt, truncated or was tampered"),
])
def test_tampering_is_detected(initialised, damage, message):
    path = initialised.encrypted("sandbox")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SecretsError, match=message):
        load("sandbox", initialised)


def test_wrong_identity_is_a_clear_error(initialised, monkeypatch):
    monkeypatch.setenv("VIGIL_AGE_IDENTITY", str(x25519.Identity.generate()))
    with pytest.raises(SecretsError, match="none of your age identities can open it"):
        load("sandbox", initialised)


def test_missing_identity_names_where_to_put_one(paths, schema):
    init_env("staging", paths, schema, "x")
    paths.identity_file("staging").unlink()
    with pytest.raises(SecretsError, match=r"no age identity for env 'staging': set VIGIL_AGE_IDENTITY"):
        load("staging", paths)


def test_an_invalid_save_leaves_the_file_unchanged(initialised, schema):
    before = initialised.encrypted("sandbox").read_bytes()
    values = load("sandbox", initialised)
    with pytest.raises(SecretsError, match="JWT_SECRET: must be at least 32") as raised:
        save("sandbox", {**values, "JWT_SECRET": "tooshort"}, schema, initialised)
    assert "tooshort" not in str(raised.value)
    assert initialised.encrypted("sandbox").read_bytes() == before


def test_reencrypting_to_a_new_recipient_lets_them_decrypt(initialised, tmp_path):
    bob = x25519.Identity.generate()
    recipients = [key for key, _ in load_recipients("sandbox", initialised)] + [str(bob.to_public())]
    reencrypt("sandbox", initialised, recipients)
    data = initialised.encrypted("sandbox").read_bytes()
    assert "JWT_SECRET=" in decrypt(data, [bob], "x")


def test_a_second_writer_is_refused_once_its_wait_ends_while_the_first_holds_the_env(paths):
    with locked("sandbox", paths):
        with pytest.raises(SecretsError, match="being changed by another vigil process .* not free within 0.3 s"):
            with locked("sandbox", paths, wait=0.3):
                pass
    with locked("sandbox", paths, wait=0):  # released
        pass


def test_a_second_writer_waits_its_turn_while_the_first_finishes(paths):
    order = turns(lambda: locked("sandbox", paths), lambda: locked("sandbox", paths, wait=10))
    assert order == ["first holds", "first done", "second holds"]


def test_generated_sandbox_secrets_leave_the_database_url_to_be_derived(schema):
    values = {}
    generate_missing(schema, values, "sandbox")
    assert "DATABASE_URL" not in values and len(values["DB_PASSWORD"]) >= 24
    assert schema.problems("sandbox", values) == []


def test_a_label_cannot_break_the_recipients_file(paths, schema):
    with pytest.raises(SecretsError, match="--label"):
        init_env("staging", paths, schema, "x\nnot-a-key")
    assert not paths.recipients("staging").exists()


def test_the_draft_directory_goes_with_everything_an_editor_left_in_it():
    with private_draft_directory() as directory:
        (directory / "sandbox.env").write_text("JWT_SECRET=x\n")
        (directory / "sandbox.env~").write_text("JWT_SECRET=x\n")  # an editor's backup
        assert oct(directory.stat().st_mode & 0o777) == "0o700"
    assert not directory.exists()


@pytest.mark.parametrize("line, message", [
    ("age1" + "q" * 58, "not an age recipient"),  # right shape, bad checksum
    ("AGE-SECRET-KEY-1ABC", "not an age recipient"),
])
def test_bad_recipient_lines_name_file_and_line(line, message):
    with pytest.raises(SecretsError, match=f"recipients/prod.txt:2: {message}"):
        parse_recipients(f"# team\n{line}\n", "recipients/prod.txt")


@pytest.mark.parametrize("mode, message", [
    (0o644, "permissions 0644 are too open: an age identity must be readable by its owner only"),
    (0o640, "permissions 0640 are too open"),
    (0o604, "run `chmod 600 "),
])
def test_an_identity_file_others_may_read_is_refused_and_left_as_it_is(initialised, mode, message):
    path = initialised.identity_file("sandbox")
    path.chmod(mode)
    with pytest.raises(SecretsError, match=re.escape(message)) as raised:
        load("sandbox", initialised)
    assert str(path) in str(raised.value) and "AGE-SECRET-KEY" not in str(raised.value)
    assert stat.S_IMODE(path.stat().st_mode) == mode  # vigil does not chmod behind the operator's back
    path.chmod(0o600)
    assert load("sandbox", initialised)
