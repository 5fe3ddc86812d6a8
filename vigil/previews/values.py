"""A preview's secrets, derived from its env's by the schema's `preview:` rule (secrets/schema.yml): never
the env's database, never its signing keys, the address its own.

  shared    the env's value (a Sentry DSN, NODE_ENV)
  fresh     a new random value, as secrets.generate makes one (JWT_SECRET, JWT_REFRESH_SECRET)
  site      the env's URL with the preview's origin in place of its own, the path kept
            (FRONTEND_URL, NEXT_PUBLIC_API_URL: https://<slug>.<domain>/api)
  database  the preview's own database's URL (DATABASE_URL)

Left unmarked: fresh when generated, database when derived, shared when public (secret: false), and
otherwise the preview goes without it (a secret is not handed to a branch's code unless the schema says so).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from vigil.vault.generate import generate_value
from vigil.vault.masking import register
from vigil.vault.schema import KeyRule, Schema


@dataclass
class PreviewSecrets:
    """Each service's values, and the keys the preview goes without (with why)."""

    values: dict[str, dict[str, str]]
    left_out: list[str] = field(default_factory=list)


def kind_of(rule: KeyRule) -> str:
    if rule.preview:
        return rule.preview
    if rule.generate:
        return "fresh"
    if rule.derive:
        return "database"
    return "" if rule.secret else "shared"


def moved_to(url: str, origin: str) -> str:
    """`url` with `origin` (scheme://host[:port]) in place of its own; its path, query and fragment kept."""
    parts = urllib.parse.urlsplit(url)
    new = urllib.parse.urlsplit(origin)
    return urllib.parse.urlunsplit((new.scheme, new.netloc, parts.path, parts.query, parts.fragment))


def preview_secrets(schema: Schema, env_values: dict[str, str], origin: str, database_url: str,
                    generate: Callable[[KeyRule], str] = generate_value) -> PreviewSecrets:
    """Every app service's env values for one preview at `origin`, its database at `database_url`."""
    chosen: dict[str, str] = {}
    left_out = []
    for key, rule in schema.keys.items():
        if not rule.services:
            continue
        kind = kind_of(rule)
        if kind == "fresh":
            chosen[key] = generate(rule)
        elif kind == "database":
            chosen[key] = database_url
        elif kind == "site" and key in env_values:
            chosen[key] = moved_to(env_values[key], origin)
        elif kind == "shared" and key in env_values:
            chosen[key] = env_values[key]
        elif not kind and key in env_values:
            left_out.append(f"{key} (a secret the schema does not share with previews: preview: shared)")
    register(chosen, schema)
    return PreviewSecrets({service: schema.for_service(service, chosen) for service in schema.services}, left_out)
