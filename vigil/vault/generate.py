"""Generated values: strong random ones for generatable keys, and the sandbox's defaults."""

from __future__ import annotations

import base64
import re
import secrets

from vigil.vault.masking import register
from vigil.vault.paths import SANDBOX, SecretsError
from vigil.vault.schema import KeyRule, Schema


def generate_value(rule: KeyRule) -> str:
    """A fresh random value for a generatable key: `generate` random bytes, base64url, no padding."""
    if not rule.generate:
        raise SecretsError(f"{rule.key}: not generatable (no `generate:` in the schema); set it with secrets.set")
    return base64.urlsafe_b64encode(secrets.token_bytes(rule.generate)).decode().rstrip("=")


TEMPLATE_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def generate_missing(schema: Schema, values: dict[str, str], env: str, regenerate: bool = False) -> list[str]:
    """Fill every generatable key (all of them with `regenerate`) and, in the sandbox, every sandbox default.

    Returns the keys it set. Sandbox defaults may reference other keys as ${KEY};
    they are recomputed when a key they reference was just generated.
    """
    changed = []
    for key, rule in schema.keys.items():
        if rule.generate and (regenerate or key not in values):
            values[key] = generate_value(rule)
            changed.append(key)
    if env == SANDBOX:
        changed += refresh_sandbox_defaults(schema, values, changed)
    register(values, schema)
    return changed


def refresh_sandbox_defaults(schema: Schema, values: dict[str, str], changed: list[str]) -> list[str]:
    """Set sandbox defaults that are missing or reference a key in `changed` (a URL after the password it holds)."""
    refreshed = []
    for key, rule in schema.keys.items():
        if rule.sandbox is None:
            continue
        references = TEMPLATE_REFERENCE.findall(rule.sandbox)
        if key not in values or any(reference in changed for reference in references):
            values[key] = TEMPLATE_REFERENCE.sub(lambda m: values.get(m.group(1), ""), rule.sandbox)
            refreshed.append(key)
    return refreshed
