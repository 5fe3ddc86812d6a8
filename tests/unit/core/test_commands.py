"""Command rendering, quoting, sudo prefixes and secret masking."""

import json
import os
import subprocess

import pytest

from vigil.core.commands import Command, Secret, checked_upload, cmd, script
from vigil.core.redaction import REDACTOR

HOSTILE = ["web1; rm -rf /", "$(id)", "`id`", "a'b", 'a"b', "x\ny", "*", "~root", "a b"]


@pytest.mark.parametrize(
    "command, login_user, rendered",
    [
        (cmd("systemctl", "reload", "nginx"), "root", "systemctl reload nginx"),
        (cmd("systemctl", "reload", "nginx"), "deploy", "sudo -n -H -- systemctl reload nginx"),
        (cmd("whoami", sudo=False), "deploy", "whoami"),
        (cmd("npm", "ci", as_user="app"), "deploy", "sudo -n -H -u app -- npm ci"),
        (cmd("npm", "ci", as_user="app"), "root", "sudo -n -H -u app -- npm ci"),
        (cmd("ls", "/srv/my app"), "root", "ls '/srv/my app'"),
        (cmd("echo", "$(id)"), "root", "echo '$(id)'"),
        (script('test -e "$1"', "/etc/x"), "root", "sh -c 'test -e \"$1\"' vigil /etc/x"),
    ],
)
def test_render(command, login_user, rendered):
    assert command.render(login_user) == rendered


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_reach_the_program_unchanged(value):
    """Rendered through a real shell, each token arrives as exactly one argument."""
    command = cmd("printf", "%s\\0", value, "second", sudo=False)
    out = subprocess.run(["sh", "-c", command.render()], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [value.encode(), b"second"]


@pytest.mark.parametrize("value", HOSTILE)
def test_script_arguments_are_data_not_code(value):
    command = script('printf "%s" "$1"', value, sudo=False)
    out = subprocess.run(["sh", "-c", command.render()], capture_output=True, check=True).stdout
    assert out == value.encode()


def test_secret_is_masked_in_display_but_sent_in_render():
    command = cmd("set-password", Secret("s3cr3t-value-1"))
    assert command.display() == "set-password ***"
    assert "s3cr3t-value-1" not in str(command) and "s3cr3t-value-1" not in repr(command)
    assert command.render() == "set-password s3cr3t-value-1"


def test_stdin_is_never_displayed():
    command = cmd("tee", "/etc/app.env", stdin=b"JWT_SECRET=abc123")
    assert "abc123" not in command.display() and "abc123" not in repr(command)


def test_redactor_masks_registered_secrets_anywhere():
    Secret("pw-4f9c2d")
    assert REDACTOR.redact("error: login with pw-4f9c2d failed") == "error: login with *** failed"


def test_secrets_too_short_to_mask_are_refused():
    with pytest.raises(ValueError, match="at least 4 characters"):
        Secret("ab")
    assert REDACTOR.redact("about") == "about"


def test_each_line_of_a_multi_line_secret_is_masked_on_its_own():
    Secret("-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0\n-----END KEY-----")
    assert REDACTOR.redact("+MIIEvQIBADANBgkqhkiG9w0") == "+***"


def test_redact_data_masks_before_json_escaping():
    Secret('pa"ss\\wörd9')
    text = json.dumps(REDACTOR.redact_data({"error": ['login with pa"ss\\wörd9 failed']}))
    assert "ss" not in text.replace("***", "") and "***" in text


def test_command_rejects_non_string_tokens():
    with pytest.raises(TypeError):
        cmd("sleep", 5)
    with pytest.raises(ValueError):
        Command(())


@pytest.mark.parametrize("timeout", [0, -5])
def test_a_command_whose_own_timeout_is_not_positive_is_refused(timeout):
    with pytest.raises(ValueError, match=f"timeout must be positive seconds, got {timeout}"):
        script("sleep 1", timeout=timeout)


# --- a local file put on a host, checked on arrival ------------------------------------------------------------

@pytest.mark.parametrize("sent, free_needed, code, said", [
    (b"the archive", 0, 0, ""),
    (b"the archive, damaged on the way", 0, 65, "arrived damaged (its SHA-256 is "),
    (b"the arch", 0, 65, "arrived damaged"),  # cut short
    (b"the archive", 10**18, 66, "bytes free in "),  # checked before a byte is written
])
def test_an_upload_is_renamed_into_place_only_whole_and_checked(tmp_path, sent, free_needed, code, said):
    source = tmp_path / "archive"
    source.write_bytes(b"the archive")
    owner = f"{os.getuid()}:{os.getgid()}"
    command = checked_upload(source, str(tmp_path / "uploads" / "archive.dump"), owner, free_needed)
    assert command.argv[-1] == owner and command.stdin == source  # streamed from the file
    done = subprocess.run(command.argv, input=sent, capture_output=True, timeout=30)
    assert (done.returncode, said in done.stderr.decode()) == (code, True), done.stderr
    arrived = sorted(path.name for path in (tmp_path / "uploads").iterdir())
    assert arrived == (["archive.dump"] if code == 0 else [])
    if code == 0:
        assert (tmp_path / "uploads" / "archive.dump").read_bytes() == b"the archive"
        assert oct((tmp_path / "uploads" / "archive.dump").stat().st_mode & 0o777) == "0o600"
        assert oct((tmp_path / "uploads").stat().st_mode & 0o777) == "0o700"
