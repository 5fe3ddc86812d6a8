"""The schema (secrets/schema.yml): each key's rules and which services get it, and where the app's
services run. Every problem it finds names the key, never the value."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from vigil.core import validation
from vigil.core.errors import ConfigError
from vigil.core.inventory import Inventory
from vigil.core.paths import rel
from vigil.core.roles import role_path
from vigil.core.topology import Topology
from vigil.core.yaml_loader import load_yaml
from vigil.vault.env_files import KEY_PATTERN
from vigil.vault.masking import split_url
from vigil.vault.paths import SANDBOX, SecretsError, SecretsPaths


@dataclass(frozen=True)
class Previous:
    """Where secrets.rotate keeps the value it replaces (`key`), and until when the app accepts what that value
    signed (`until`: an ISO 8601 UTC time, `grace_seconds` after the rotation)."""

    key: str
    until: str
    grace_seconds: int


@dataclass
class KeyRule:
    """What one key must be: who gets it, where it is required, and the checks its value must pass."""

    key: str
    services: list[str]
    description: str = ""
    required: bool | list[str] = True
    min_length: int = 0
    distinct_from: list[str] = field(default_factory=list)
    one_of: list[str] = field(default_factory=list)
    url_schemes: list[str] = field(default_factory=list)
    https_outside_sandbox: bool = False
    sslmode_require_remote: bool = False
    password_from: str = ""  # the URL's password must be this key's value (DATABASE_URL from DB_PASSWORD)
    generate: int = 0  # random bytes, encoded base64url; 0: not generatable
    sandbox: str | None = None  # the sandbox's value; ${OTHER} is replaced by OTHER's value
    # Left unset, vigil writes the value per host when pushing ("postgresql": DATABASE_URL; "errors": the env's
    # Bugsink's DSN; see derive_values).
    derive: str = ""
    # A role that puts the value in place on its hosts (DB_PASSWORD: postgresql sets the role's password);
    # secrets.rotate applies it there before any service gets the new value.
    applied_by: str = ""
    # False only for values that are public by nature (NODE_ENV, a site's URL): masking
    # "production" would mask the env's own name in every line vigil prints.
    secret: bool = True
    # What a preview of the env gets (vigil/previews/values.py): "shared" (the env's value), "fresh" (a new
    # random one), "site" (the env's URL moved to the preview's address), "database" (its own database's
    # URL); "" for the default: fresh when generated, database when derived, shared when public, else none.
    preview: str = ""
    # Rotated, the old value is kept for a grace period (JWT_SECRET: tokens it signed stay valid, so a
    # rotation logs nobody out); None: the old value is gone at once.
    previous: Previous | None = None

    def required_in(self, env: str) -> bool:
        return self.required if isinstance(self.required, bool) else env in self.required


URL_RULE_KEYS = {"schemes", "https_outside_sandbox", "sslmode_require_remote", "password_from"}
RULE_KEYS = {"services", "description", "required", "min_length", "distinct_from", "one_of", "url",
             "generate", "sandbox", "secret", "derive", "applied_by", "preview", "previous"}
PREVIOUS_KEYS = {"key", "until", "grace_seconds"}
PREVIEW_VALUES = ("shared", "fresh", "site", "database")
# What `derive:` may name, and the keys each derivation reads.
DERIVATIONS = {"postgresql": ("DB_PASSWORD",), "errors": ("BUGSINK_SECRET_KEY",)}


@dataclass
class Service:
    """An app service: the inventory group that runs it, its env file and the units that read it."""

    name: str
    hosts: str
    env_file: str
    units: list[str]


@dataclass
class Schema:
    path: Path
    app_user: str
    config_dir: str
    services: dict[str, Service]
    keys: dict[str, KeyRule]

    def problems(self, env: str, values: dict[str, str]) -> list[str]:
        """Every way `values` break the schema, each naming the key, never the value."""
        found = []
        for key in values:
            if key not in self.keys:
                found.append(f"{key}: not in {rel(self.path)} (add it there first)")
        for key, rule in self.keys.items():
            value = values.get(key)
            if value is None:
                if rule.required_in(env):
                    found.append(f"{key}: missing (required in {env})")
                continue
            found += [f"{key}: {problem}" for problem in check_rule(rule, env, value, values)]
        return found

    def for_service(self, service: str, values: dict[str, str]) -> dict[str, str]:
        return {key: values[key] for key, rule in self.keys.items() if service in rule.services and key in values}

    def topology(self, inventory: Inventory) -> Topology:
        """Which hosts of `inventory` run which role (playbooks/onboard.yml) and which of these services."""
        return Topology.read(
            inventory, {name: service.hosts for name, service in self.services.items()}, rel(self.path)
        )

    def services_using(self, key: str, values: dict[str, str] | None = None) -> list[str]:
        """Services whose env file holds `key`, or a value derived from it (DATABASE_URL from DB_PASSWORD)."""
        services = list(self.keys[key].services)
        for rule in self.keys.values():
            if rule.derive and key in DERIVATIONS[rule.derive] and rule.key not in (values or {}):
                services += [service for service in rule.services if service not in services]
        return services


def check_rule(rule: KeyRule, env: str, value: str, values: dict[str, str]) -> list[str]:
    """What is wrong with `value` for `rule` (pure; messages never contain the value)."""
    problems = []
    if len(value) < rule.min_length:
        problems.append(f"must be at least {rule.min_length} characters (has {len(value)})")
    for other in rule.distinct_from:
        if values.get(other) == value:
            problems.append(f"must differ from {other}")
    if rule.one_of and value not in rule.one_of:
        problems.append(f"must be one of {', '.join(rule.one_of)}")
    if rule.url_schemes:
        problems += check_url(rule, env, value)
    if rule.password_from:
        parsed = split_url(value)
        password = urllib.parse.unquote(parsed.password or "") if parsed else ""
        if password != values.get(rule.password_from, password):
            problems.append(f"its password must be {rule.password_from}'s value")
    return problems


def check_url(rule: KeyRule, env: str, value: str) -> list[str]:
    """URL rules: scheme, a host, https outside the sandbox, sslmode when any host it names is remote."""
    shape = f"must be a URL with scheme {' or '.join(rule.url_schemes)} and a host"
    if re.search(r"\s", value):
        return [f"{shape}, without spaces"]
    parsed = split_url(value)
    if parsed is None:
        return [f"{shape} (it does not parse)"]
    query = urllib.parse.parse_qs(parsed.query)
    # libpq and node-postgres let ?host= and ?hostaddr= override the host in the URL.
    hosts = [h for h in [parsed.hostname, *query.get("host", []), *query.get("hostaddr", [])] if h]
    if parsed.scheme not in rule.url_schemes or not hosts:
        return [shape]
    problems = []
    if rule.https_outside_sandbox and env != SANDBOX and parsed.scheme != "https":
        problems.append("must use https outside the sandbox")
    if rule.sslmode_require_remote and not all(_is_local(host) for host in hosts):
        if query.get("sslmode", [""])[-1] not in ("require", "verify-ca", "verify-full"):
            problems.append("must set sslmode=require (or verify-full) for a database on another host")
    return problems


def _is_local(hostname: str) -> bool:
    return hostname in ("localhost", "127.0.0.1", "::1") or hostname.startswith("/")


def _previous(spec, at: str) -> Previous | None:
    if spec is None:
        return None
    grace = spec.get("grace_seconds") if isinstance(spec, dict) else None
    if (not isinstance(spec, dict) or set(spec) != PREVIOUS_KEYS or not all(isinstance(spec[k], str) for k in
            ("key", "until")) or isinstance(grace, bool) or not isinstance(grace, int) or grace < 0):
        raise SecretsError(f"{at}.previous: expected {{key: KEY, until: KEY, grace_seconds: seconds (0 or more)}}")
    return Previous(spec["key"], spec["until"], grace)


def _check_previous(previous: Previous, keys: dict[str, KeyRule], at: str) -> None:
    """The keys a rotation writes exist, are never required (an env that was never rotated has neither), and
    the time is public (it is no secret, and masking a date would mask it in every line)."""
    for name in (previous.key, previous.until):
        if name not in keys:
            raise SecretsError(f"{at}: unknown key {name!r}")
        if keys[name].required is not False:
            raise SecretsError(f"{at}: {name} must be required: false (it is set by secrets.rotate)")
    if keys[previous.until].secret:
        raise SecretsError(f"{at}: {previous.until} must be secret: false (a time, shown as it is)")


def load_schema(paths: SecretsPaths | None = None) -> Schema:
    """Read and validate secrets/schema.yml."""
    paths = paths or SecretsPaths.default()
    where = rel(paths.schema)
    data = load_yaml(paths.schema)
    if not isinstance(data, dict) or not {"app", "services", "keys"} <= set(data):
        raise SecretsError(f"{where}: needs the sections app, services and keys")
    app = data["app"] or {}
    app_user = validation.user(app.get("user"), f"{where}: app.user")
    config_dir = validation.absolute_path(app.get("config_dir"), f"{where}: app.config_dir")
    services = {}
    for name, spec in (data["services"] or {}).items():
        validation.name(name, f"{where}: services")
        if not isinstance(spec, dict) or not isinstance(spec.get("hosts"), str):
            raise SecretsError(f"{where}: services.{name}: needs hosts (an inventory group)")
        units = spec.get("units") or []
        for unit in units:
            if not isinstance(unit, str) or not re.match(r"^[A-Za-z0-9:_.@*-]+\.service$", unit):
                raise SecretsError(f"{where}: services.{name}.units: {unit!r} is not a service unit name or pattern")
        services[name] = Service(name, spec["hosts"], f"{config_dir}/{name}.env", units)
    keys = {}
    for key, spec in (data["keys"] or {}).items():
        at = f"{where}: keys.{key}"
        if not KEY_PATTERN.match(str(key)):
            raise SecretsError(f"{at}: not a valid key name")
        if not isinstance(spec, dict):
            raise SecretsError(f"{at}: expected a mapping")
        unknown = set(spec) - RULE_KEYS
        if unknown:
            raise SecretsError(
                f"{at}.{sorted(unknown)[0]}: unknown rule (expected one of {', '.join(sorted(RULE_KEYS))})"
            )
        for service in spec.get("services") or []:
            if service not in services:
                raise SecretsError(f"{at}.services: unknown service {service!r}")
        url = spec.get("url") or {}
        if not isinstance(url, dict) or set(url) - URL_RULE_KEYS:
            raise SecretsError(f"{at}.url: expected a mapping of {', '.join(sorted(URL_RULE_KEYS))}")
        required = spec.get("required", True)
        if not isinstance(required, bool) and not (
            isinstance(required, list) and all(isinstance(e, str) for e in required)
        ):
            raise SecretsError(f"{at}.required: expected true, false or a list of envs")
        preview = spec.get("preview") or ""
        if preview and preview not in PREVIEW_VALUES or preview == "fresh" and not spec.get("generate"):
            raise SecretsError(f"{at}.preview: expected one of {', '.join(PREVIEW_VALUES)} (fresh only for a key "
                               "with generate:)")
        derive = spec.get("derive") or ""
        if derive and (derive not in DERIVATIONS or required is not False):
            raise SecretsError(f"{at}.derive: expected one of {', '.join(DERIVATIONS)}, with required: false "
                               "(set, the value wins; unset, vigil derives it)")
        keys[key] = KeyRule(
            key=key,
            services=list(spec.get("services") or []),
            description=str(spec.get("description", "")),
            required=required,
            min_length=int(spec.get("min_length", 0)),
            distinct_from=list(spec.get("distinct_from") or []),
            one_of=[str(v) for v in spec.get("one_of") or []],
            url_schemes=list(url.get("schemes") or []),
            https_outside_sandbox=bool(url.get("https_outside_sandbox", False)),
            sslmode_require_remote=bool(url.get("sslmode_require_remote", False)),
            password_from=str(url.get("password_from", "")),
            generate=int(spec.get("generate", 0)),
            sandbox=None if spec.get("sandbox") is None else str(spec["sandbox"]),
            secret=spec.get("secret", True) is not False,
            derive=derive,
            applied_by=str(spec.get("applied_by") or ""),
            preview=preview,
            previous=_previous(spec.get("previous"), at),
        )
    for rule in keys.values():
        if rule.password_from and rule.password_from not in keys:
            raise SecretsError(f"{where}: keys.{rule.key}.url.password_from: unknown key {rule.password_from!r}")
        for other in rule.distinct_from:
            if other not in keys:
                raise SecretsError(f"{where}: keys.{rule.key}.distinct_from: unknown key {other!r}")
        if rule.applied_by:
            try:
                role_path(rule.applied_by)
            except ConfigError:
                raise SecretsError(
                    f"{where}: keys.{rule.key}.applied_by: no role {rule.applied_by!r} in roles/"
                ) from None
        if rule.previous:
            _check_previous(rule.previous, keys, f"{where}: keys.{rule.key}.previous")
        for source in DERIVATIONS.get(rule.derive, ()):
            if source not in keys:
                raise SecretsError(f"{where}: keys.{rule.key}.derive: {rule.derive} needs key {source} in the schema")
    return Schema(paths.schema, app_user, config_dir, services, keys)
