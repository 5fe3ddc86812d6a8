"""The env file format: dotenv text that python-dotenv, systemd's EnvironmentFile and Node's dotenv all
read the same way, and the values it can carry safely."""

from __future__ import annotations

import io
import re

from dotenv.parser import parse_stream

from vigil.vault.paths import SecretsError

KEY_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# Characters that need no quoting in a dotenv file, systemd's EnvironmentFile or Node's dotenv alike.
PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:@%+=,~-]*$")


def parse_dotenv(text: str, where: str) -> dict[str, str]:
    """Parse dotenv text with python-dotenv's parser: no ${VAR} expansion, every line accounted for.

    Errors name the line and never echo its text: a line that does not parse
    may be a pasted secret.
    """
    result: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            raise SecretsError(f"{where}: line {line} is not a KEY=value line (a quote left open?)")
        if binding.key is None:
            continue  # blank line or comment
        if not KEY_PATTERN.match(binding.key):
            raise SecretsError(f"{where}: line {line}: not a valid key (A-Z, 0-9, _; starting with a letter)")
        if binding.value is None:
            raise SecretsError(f"{where}: line {line}: a key without a value (write KEY=...)")
        if binding.key in result:
            raise SecretsError(f"{where}: line {line}: {binding.key} is given twice")
        check_value(binding.key, binding.value, f"{where}: line {line}")
        result[binding.key] = binding.value
    return result


# Line breaks for some reader (systemd, Node, a log viewer) and controls systemd refuses to pass on.
FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def check_value(key: str, value: str, where: str) -> None:
    """Refuse values that would break a line-based env file (a newline could smuggle in `OTHER=`)."""
    if FORBIDDEN_CHARACTERS.search(value):
        raise SecretsError(
            f"{where}: the value of {key} contains a line break or control character; values must be one plain line"
        )
    if not PLAIN_VALUE.match(value) and ("'" in value or "\\" in value):
        raise SecretsError(
            f"{where}: the value of {key} needs quoting but contains ' or \\, which env files cannot carry safely"
        )


def render_dotenv(values: dict[str, str], order: list[str] | None = None) -> str:
    """Dotenv text that python-dotenv, systemd's EnvironmentFile and Node's dotenv all read back exactly."""
    keys = [k for k in (order or []) if k in values] + sorted(k for k in values if k not in (order or []))
    lines = []
    for key in keys:
        value = values[key]
        check_value(key, value, "render")
        lines.append(f"{key}={value}" if PLAIN_VALUE.match(value) else f"{key}='{value}'")
    return "\n".join(lines) + ("\n" if lines else "")
