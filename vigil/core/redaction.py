"""Redaction: every secret value vigil has seen, masked in whatever it prints, logs or records.

One process-wide `REDACTOR` holds the values (a `Secret` registers itself; the vault registers every
value it decrypts, in each spelling it may take). Text from hosts (logs, errors) is masked further by
shape: a URL's password, a value whose name says it is secret, HTTP credentials.
"""

from __future__ import annotations

import re
import threading

MASK = "***"


class Redactor:
    """Masks every registered secret value in text; one process-wide instance, thread safe."""

    # Shorter values would mask ordinary words; Secret refuses them.
    MIN_LENGTH = 4

    def __init__(self):
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Register a secret, and each line of a multi-line one (a diff or a log shows them apart)."""
        parts = [value] + [line.strip() for line in value.splitlines()]
        with self._lock:
            self._values.update(part for part in parts if len(part) >= self.MIN_LENGTH)

    def contains(self, text: str) -> bool:
        with self._lock:
            return any(value in text for value in self._values)

    def redact_data(self, data):
        """`data` (JSON-like: dicts, lists, strings) with every string redacted, before it is serialised."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {key: self.redact_data(value) for key, value in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.redact_data(value) for value in data]
        return data

    def redact(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            text = text.replace(value, MASK)
        return text


REDACTOR = Redactor()

URL_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s]+@")
# NAME=value and "name": "value" pairs whose name says they hold a secret (a dumped environment, a config),
# and HTTP credentials: the value is masked whole, quoted or not.
SECRET_NAME = r"\w*(?:password|passwd|passphrase|secret|token|dsn|credential|key)\w*"
SECRET_ASSIGNMENT = re.compile(rf"""(?i)\b({SECRET_NAME}["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s"';]+)""")
HTTP_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}")


def mask_url_passwords(text: str) -> str:
    """A URL's password masked (a DATABASE_URL in an error message), even where vigil never saw the value."""
    return URL_CREDENTIALS.sub(rf"\1{MASK}@", text)


def mask_log_line(text: str) -> str:
    """A log line as it may be shown: registered secrets, any URL's password, values named as secrets, and
    HTTP credentials masked.

    Example: mask_log_line("DB_PASSWORD='x1' url=postgresql://u:pw@db/app") -> "DB_PASSWORD='***' url=postgresql://u:***@db/app"
    """

    def assignment(match: re.Match) -> str:
        value = match.group(2)
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{match.group(1)}{quote}{MASK}{quote}"

    masked = SECRET_ASSIGNMENT.sub(assignment, REDACTOR.redact(mask_url_passwords(text)))
    return HTTP_CREDENTIALS.sub(rf"\1 {MASK}", masked)
