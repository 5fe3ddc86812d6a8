"""Masking: every spelling in which a secret value may leak (raw, JSON-escaped, URL-encoded, base64, a URL's
password), registered with the redactor before anything can print it."""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any, Mapping, Protocol

from vigil.core.redaction import REDACTOR, Redactor


class KeyRules(Protocol):
    """What masking reads of the schema (vigil.vault.schema.Schema): each key's rule, whose `secret` says
    whether its value is secret."""

    keys: Mapping[str, Any]


def split_url(value: str) -> urllib.parse.SplitResult | None:
    """`value` as a URL, or None when it does not parse (a malformed port or bracketed host)."""
    try:
        parsed = urllib.parse.urlsplit(value)
        parsed.port  # noqa: B018 - raises on a malformed port or bracketed host
        return parsed
    except ValueError:
        return None


def password_forms(value: str) -> set[str]:
    """The passwords inside a URL value (`postgresql://user:PASSWORD@host/db`, `?password=`), raw and decoded."""
    if "://" not in value:
        return set()
    parsed = split_url(value)
    if parsed is None:
        return set()
    found = {parsed.password} if parsed.password else set()
    found |= set(urllib.parse.parse_qs(parsed.query).get("password", []))
    return found | {urllib.parse.unquote(password) for password in found}


def _base64_cores(raw: bytes) -> set[str]:
    # The part of the encoding that depends on `raw` alone, for each of the three ways
    # it can sit in a longer base64 text (after 0, 1 or 2 other bytes), in both alphabets.
    cores = set()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + raw).decode()
            start, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
            cores.add(encoded[start:end])
            if offset == 0:
                cores |= {encoded, encoded.rstrip("=")}
    return cores


def forms_of(value: str) -> set[str]:
    """The spellings in which `value` is likely to leak: raw, JSON-escaped (an app that logs JSON), URL-encoded,
    base64, a URL's password."""
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value), urllib.parse.quote_plus(value)}
    forms |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {form.lower() for form in list(forms) if "%" in form}  # lowercase percent-escapes
    forms |= password_forms(value) | _base64_cores(value.encode())
    # Encodings of short values are shorter still: below 8 characters they only mask noise.
    return {form for form in forms if form == value or len(form) >= 8}


def register(values: dict[str, str], schema: KeyRules | None = None) -> None:
    """Mask every secret value (in every likely spelling) in everything vigil prints from now on.

    Every key is secret unless the schema says `secret: false`; a URL's password always is.
    """
    for key, value in values.items():
        rule = schema.keys.get(key) if schema else None
        forms = forms_of(value) if rule is None or rule.secret else password_forms(value)
        for form in forms:
            if len(form) >= Redactor.MIN_LENGTH:
                REDACTOR.add(form)
