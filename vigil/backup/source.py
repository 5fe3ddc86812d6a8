"""The PaaS's database as `backup.import` reads it: a connection string taken apart and checked before
anything is created, TLS always (verify-full when the PaaS's CA is given), the password never on a
command line.

The copy runs on the env's database host, so the string becomes a libpq service file and a password
file, both 0600 in a private directory there, fed through stdin; pg_dump and psql name only the service.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from vigil.core import validation
from vigil.core.errors import ConfigError
from vigil.vault.masking import register, split_url

# libpq's settings a service file may carry from the URL's query; anything else is refused, so a URL
# cannot point the copy at a local file or socket.
PASSED_PARAMETERS = {"connect_timeout", "channel_binding", "application_name", "options", "target_session_attrs"}
IGNORED_PARAMETERS = {"sslmode", "sslrootcert", "pgbouncer", "schema", "connection_limit", "pool_timeout"}
SERVICE_VALUE = re.compile(r"^[A-Za-z0-9._:@%+=,/ -]*$")
# Neon's pooled host goes through PgBouncer in transaction mode, which pg_dump cannot use.
NEON_POOLER = re.compile(r"^(ep-[a-z0-9-]+?)-pooler\.")


@dataclass(frozen=True)
class Source:
    """Where the PaaS's database is and how to trust it."""

    host: str
    port: int
    database: str
    user: str
    password: str
    # "verify-full" with `ca` (a PEM, or "system": the host's own CAs), else "require".
    sslmode: str
    ca: str | None
    parameters: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        """The source for a person: user, host, port and database; never the password."""
        return f"{self.user}@{self.host}:{self.port}/{self.database} (sslmode={self.sslmode})"

    def service_file(self) -> str:
        """A pg_service.conf section `paas` (the password stays in the password file)."""
        lines = ["[paas]", f"host={self.host}", f"port={self.port}", f"dbname={self.database}",
                 f"user={self.user}", f"sslmode={self.sslmode}"]
        lines += [f"{key}={value}" for key, value in self.parameters]
        return "\n".join(lines) + "\n"

    def password_file(self) -> str:
        """A .pgpass line for exactly this host, port, database and user."""
        def escaped(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        return ":".join(escaped(part) for part in (self.host, str(self.port), self.database, self.user,
                                                   self.password)) + "\n"


def parse_source(url: str, password: str | None, ca: str | None, where: str) -> Source:
    """A postgres:// URL (`where` says where it came from) and its password into a Source.

    password: the password when the URL has none (a prompt or stdin); a URL given on the command line
        must not carry one. ca: a PEM file's text, "system", or None (TLS without verifying who answers).
    Example: parse_source("postgresql://app@db.example.com/app", "secret", "system", "--from-url")
    """
    parsed = split_url(url.strip())
    if parsed is None or parsed.scheme not in ("postgres", "postgresql") or not parsed.hostname:
        raise ConfigError(f"{where}: not a postgres:// URL with a host (postgresql://USER@HOST:PORT/DATABASE)")
    in_url = urllib.parse.unquote(parsed.password) if parsed.password is not None else None
    if in_url is not None:
        register({"SOURCE_PASSWORD": in_url})  # masked in every spelling from here on
    if in_url and password and in_url != password:
        raise ConfigError(f"{where}: the URL carries a password and another was given; give one")
    secret = in_url or password
    if not secret:
        raise ConfigError(f"{where}: no password (none in the URL, none given on stdin or at the prompt)")
    register({"SOURCE_PASSWORD": secret})
    if any(ord(character) < 32 for character in secret):
        raise ConfigError(f"{where}: the password holds a line break or control character; vigil cannot pass it on")
    host = validation.address(parsed.hostname, f"{where}: host")
    notes = []
    pooler = NEON_POOLER.match(host)
    if pooler and host.endswith(".neon.tech"):
        host = host.replace(f"{pooler.group(1)}-pooler.", f"{pooler.group(1)}.", 1)
        notes.append(f"Neon's pooled host replaced by its direct host {host} (pg_dump cannot go through PgBouncer)")
    database = urllib.parse.unquote(parsed.path.lstrip("/")) or "postgres"
    user = urllib.parse.unquote(parsed.username or "")
    for name, value in (("database", database), ("user", user)):
        if not value or not SERVICE_VALUE.match(value) or "\n" in value:
            raise ConfigError(f"{where}: the URL's {name} is missing or has characters vigil does not pass on")
    parameters = []
    for key, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        if key in IGNORED_PARAMETERS:
            continue
        if key not in PASSED_PARAMETERS or not SERVICE_VALUE.match(value):
            raise ConfigError(f"{where}: the URL's parameter {key!r} is not one backup.import passes on "
                              f"({', '.join(sorted(PASSED_PARAMETERS))})")
        parameters.append((key, value))
    sslmode = "verify-full" if ca else "require"
    if not ca:
        notes.append("TLS without checking who answers (sslmode=require): give --ca=FILE, or --ca=system for a "
                     "certificate from a public CA (Neon), to verify it")
    return Source(host, parsed.port or 5432, database, user, secret, sslmode, ca, tuple(parameters), tuple(notes))


def read_ca(value: str | None) -> str | None:
    """--ca: "system", a PEM file's text, or None."""
    if value in (None, ""):
        return None
    if value == "system":
        return "system"
    path = Path(value).expanduser()
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"--ca: cannot read {value}: {error.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"--ca: {value} is not a PEM certificate")
    return text
