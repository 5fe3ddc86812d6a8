"""The env's error tracker (roles/errors: Bugsink on the monitor host) as the rest of vigil needs to know it:
where it is served, and the values derived from its secret key that let the app and vigil reach it
without asking it first: the project's DSN (SENTRY_DSN, NEXT_PUBLIC_SENTRY_DSN, written per host by
secrets.push where the env leaves them unset) and the read-only API token of incident.status.

Derived, not read back: the role pins them in Bugsink, so a second run, a rebuilt monitor host or a
fresh clone all arrive at the same DSN, and nothing has to be written into the secrets file."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from vigil.core.errors import ConfigError
from vigil.core.inventory import Inventory
from vigil.core.paths import REPO_ROOT
from vigil.core.roles import load_role
from vigil.core.topology import monitor_host
from vigil.core.validation import address
from vigil.sandbox.paths import CA_DIR

# Bugsink's secret key: Django's, and the seed of the project's DSN key and vigil's API token.
SECRET_KEY = "BUGSINK_SECRET_KEY"
# One Bugsink per env, one project in it: its id is part of the DSN, so it is fixed.
PROJECT_ID = 1


@dataclass(frozen=True)
class ErrorsSite:
    """Where the env's Bugsink is served: its host, the name its certificate and DSN carry, and what
    verifies its certificate from this machine (a CA file, or True for the public ones)."""

    host: str
    server_name: str
    verify: str | bool

    @property
    def netloc(self) -> str:
        """The server name as a URL carries it (an IPv6 address in brackets)."""
        return f"[{self.server_name}]" if ":" in self.server_name else self.server_name

    @property
    def origin(self) -> str:
        return f"https://{self.netloc}"


def errors_site(inventory: Inventory | None) -> ErrorsSite | None:
    """The env's Bugsink, or None where the env has no monitor host or turns it off (errors_enabled)."""
    monitor = monitor_host(inventory) if inventory is not None else None
    if monitor is None:
        return None
    vars = inventory.vars_for(monitor, [load_role("nginx"), load_role("errors")])
    if not vars.boolean("errors_enabled"):
        return None
    server_name = address(vars.get("errors_server_name") or monitor.address, vars.where("errors_server_name"))
    tls = vars.string("nginx_tls", "local-ca|certbot")
    if tls == "local-ca":
        verify: str | bool = str(CA_DIR / "ca.crt")
    else:
        private_ca = vars.string("nginx_certbot_ca_certificate")
        verify = str(REPO_ROOT / private_ca) if private_ca else True
    return ErrorsSite(monitor.name, server_name, verify)


def ca_pem(site: ErrorsSite) -> bytes | None:
    """The private CA the site's certificate chains to (the sandbox's, made if need be, or the private ACME
    server's), for hosts that must trust it; None for a public CA."""
    if not isinstance(site.verify, str):
        return None
    if site.verify == str(CA_DIR / "ca.crt"):
        # On first use: the CLI starts without cryptography's x509 (tests/unit/test_startup.py).
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

        from vigil.sandbox import ca as sandbox_ca  # noqa: PLC0415

        certificate, _ = sandbox_ca.ensure_ca()
        return certificate.public_bytes(serialization.Encoding.PEM)
    try:
        return Path(site.verify).read_bytes()
    except OSError as error:
        raise ConfigError(f"{site.verify}: cannot read the error tracker's CA (nginx_certbot_ca_certificate): "
                          f"{error.strerror}") from None


def _derived(secret_key: str, purpose: str) -> str:
    if not secret_key:
        raise ConfigError(f"{SECRET_KEY} is empty: run `invoke secrets.generate`")
    return hmac.new(secret_key.encode(), f"vigil errors: {purpose}".encode(), hashlib.sha256).hexdigest()


def project_key(secret_key: str) -> str:
    """The project's public DSN key (32 hex digits, a UUID's): public by design, as browsers send it."""
    return _derived(secret_key, "project dsn key")[:32]


def api_token(secret_key: str) -> str:
    """vigil's API token (40 hex digits, Bugsink's format): reads issues and events, changes nothing."""
    return _derived(secret_key, "read-only api token")[:40]


def dsn(site: ErrorsSite, secret_key: str) -> str:
    """The project's DSN as the Sentry SDKs take it.

    Example: dsn(ErrorsSite("vps4", "errors.example.org", True), key) -> "https://0f3a...@errors.example.org/1"
    """
    return f"https://{project_key(secret_key)}@{site.netloc}/{PROJECT_ID}"
