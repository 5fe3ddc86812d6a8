"""Secrets: per-environment dotenv files encrypted with age, validated by a schema, never printed.

`secrets/<env>.env.age` holds the dotenv text encrypted to every recipient in
`secrets/recipients/<env>.txt`; the standard `age` tool reads and writes the
same files. Every value that is decrypted is registered with the redactor, in
the forms it is likely to appear in (raw, URL-encoded, base64, the password
inside a database URL), before anything else can print it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import os
import re
import secrets as random
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage
import yaml
from dotenv.parser import parse_stream
from pyrage import x25519

from vigil import validate
from vigil.commands import REDACTOR, Command, Redactor
from vigil.config import REPO_ROOT, Host, Inventory, load_playbook, load_role, load_yaml, rel
from vigil.errors import ConfigError, VigilError
from vigil.operations import Directory, File, ServiceAction, User
from vigil.postgresql import SERVER_CERTIFICATE
from vigil.runner import HostPlan

KEY_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
RECIPIENT_PATTERN = re.compile(r"^age1[0-9a-z]{58}$")
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
# Characters that need no quoting in a dotenv file, systemd's EnvironmentFile or Node's dotenv alike.
PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:@%+=,~-]*$")
SANDBOX = "sandbox"


class SecretsError(VigilError):
    """A secrets problem with a one-line message that names the env, file or key, never a value."""

    exit_code = ConfigError.exit_code


# --- where things are ------------------------------------------------------


@dataclass(frozen=True)
class SecretsPaths:
    """secrets/ and the local state beside it; $VIGIL_SECRETS points tests at a scratch copy."""

    root: Path

    @classmethod
    def default(cls) -> "SecretsPaths":
        return cls(Path(os.environ.get("VIGIL_SECRETS") or REPO_ROOT / "secrets"))

    def encrypted(self, env: str) -> Path:
        return self.root / f"{env}.env.age"

    def recipients(self, env: str) -> Path:
        return self.root / "recipients" / f"{env}.txt"

    @property
    def schema(self) -> Path:
        return self.root / "schema.yml"

    def identity_file(self, env: str) -> Path:
        """Where this machine keeps its private key for `env` (never inside secrets/)."""
        if os.environ.get("VIGIL_AGE_IDENTITY_FILE"):
            return Path(os.environ["VIGIL_AGE_IDENTITY_FILE"])
        if env == SANDBOX:
            return self.root.parent / ".vigil" / "age" / "sandbox.key"
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return config_home / "vigil" / "age" / f"{env}.key"


def check_env(env: str) -> str:
    return validate.name(env, "--env")


# --- keys and recipients -----------------------------------------------------


def parse_identities(text: str, where: str) -> list[x25519.Identity]:
    """Every `AGE-SECRET-KEY-1...` line of an identity file (comments and blanks skipped)."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(x25519.Identity.from_str(line))
        except Exception:
            raise SecretsError(f"{where}: line {number} is not an age identity (AGE-SECRET-KEY-1...)") from None
    if not found:
        raise SecretsError(f"{where}: holds no age identity")
    return found


def load_identities(env: str, paths: SecretsPaths) -> list[x25519.Identity]:
    """This machine's identities for `env`: $VIGIL_AGE_IDENTITY (CI), else the identity file."""
    if os.environ.get("VIGIL_AGE_IDENTITY"):
        return parse_identities(os.environ["VIGIL_AGE_IDENTITY"], "$VIGIL_AGE_IDENTITY")
    path = paths.identity_file(env)
    if not path.exists():
        raise SecretsError(
            f"no age identity for env {env!r}: set VIGIL_AGE_IDENTITY, or create {path} "
            f"with `invoke secrets.init --env={env}` (or copy it from a teammate's password manager)"
        )
    return parse_identities(path.read_text(), str(path))


def parse_recipients(text: str, where: str) -> list[tuple[str, str]]:
    """(public key, label) per line `age1... # who` of a recipients file."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        key, _, label = line.partition("#")
        key = key.strip()
        if not key:
            continue
        try:
            if not RECIPIENT_PATTERN.match(key):
                raise ValueError(key)
            x25519.Recipient.from_str(key)
        except Exception:
            raise SecretsError(f"{where}:{number}: not an age recipient (age1..., 62 characters, valid checksum)") from None
        if FORBIDDEN_CHARACTERS.search(label):
            raise SecretsError(f"{where}:{number}: the label contains a control character")
        found.append((key, label.strip()))
    return found


def load_recipients(env: str, paths: SecretsPaths) -> list[tuple[str, str]]:
    path = paths.recipients(env)
    if not path.exists():
        raise SecretsError(f"{rel(path)}: no recipients for env {env!r}; run `invoke secrets.init --env={env}`")
    found = parse_recipients(path.read_text(), rel(path))
    if not found:
        raise SecretsError(f"{rel(path)}: lists no recipient; nobody could decrypt {env}'s secrets")
    return found


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically, readable only by its owner from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(env: str, paths: SecretsPaths):
    """Hold `env`'s secrets for one load -> save, so two vigil processes never overwrite each other's change."""
    paths.root.mkdir(parents=True, exist_ok=True)
    lock_path = paths.root / f".{env}.lock"
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SecretsError(f"the secrets of {env} are being changed by another vigil process (secrets.edit?); "
                               "try again when it is done") from None
        yield


def create_identity(env: str, paths: SecretsPaths) -> tuple[x25519.Identity, Path]:
    """A new key pair for `env`, its private half saved 0600 in the identity file (never overwritten)."""
    path = paths.identity_file(env)
    if path.exists():
        return parse_identities(path.read_text(), str(path))[0], path
    identity = x25519.Identity.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, f"# vigil age identity for env {env}\n{identity}\n".encode())
    return identity, path


# --- dotenv ------------------------------------------------------------------


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
        check_value(binding.key, binding.value, where)
        result[binding.key] = binding.value
    return result


# Line breaks for some reader (systemd, Node, a log viewer) and controls systemd refuses to pass on.
FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def check_value(key: str, value: str, where: str) -> None:
    """Refuse values that would break a line-based env file (a newline could smuggle in `OTHER=`)."""
    if FORBIDDEN_CHARACTERS.search(value):
        raise SecretsError(f"{where}: the value of {key} contains a line break or control character; values must be one plain line")
    if not PLAIN_VALUE.match(value) and ("'" in value or "\\" in value):
        raise SecretsError(f"{where}: the value of {key} needs quoting but contains ' or \\, which env files cannot carry safely")


def render_dotenv(values: dict[str, str], order: list[str] | None = None) -> str:
    """Dotenv text that python-dotenv, systemd's EnvironmentFile and Node's dotenv all read back exactly."""
    keys = [k for k in (order or []) if k in values] + sorted(k for k in values if k not in (order or []))
    lines = []
    for key in keys:
        value = values[key]
        check_value(key, value, "render")
        lines.append(f"{key}={value}" if PLAIN_VALUE.match(value) else f"{key}='{value}'")
    return "\n".join(lines) + ("\n" if lines else "")


# --- redaction ---------------------------------------------------------------


def _split_url(value: str) -> urllib.parse.SplitResult | None:
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
    parsed = _split_url(value)
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
    """The spellings in which `value` is likely to leak: raw, URL-encoded, base64, a URL's password."""
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value), urllib.parse.quote_plus(value)}
    forms |= {form.lower() for form in list(forms) if "%" in form}  # lowercase percent-escapes
    forms |= password_forms(value) | _base64_cores(value.encode())
    # Encodings of short values are shorter still: below 8 characters they only mask noise.
    return {form for form in forms if form == value or len(form) >= 8}


def register(values: dict[str, str], schema: "Schema | None" = None) -> None:
    """Mask every secret value (in every likely spelling) in everything vigil prints from now on.

    Every key is secret unless the schema says `secret: false`; a URL's password always is.
    """
    for key, value in values.items():
        rule = schema.keys.get(key) if schema else None
        forms = forms_of(value) if rule is None or rule.secret else password_forms(value)
        for form in forms:
            if len(form) >= Redactor.MIN_LENGTH:
                REDACTOR.add(form)


# --- the encrypted file ------------------------------------------------------


def encrypt(text: str, recipients: list[str]) -> bytes:
    return pyrage.encrypt(text.encode(), [x25519.Recipient.from_str(key) for key in recipients])


def decrypt(data: bytes, identities: list[x25519.Identity], where: str) -> str:
    try:
        return pyrage.decrypt(data, identities).decode()
    except pyrage.DecryptError as error:
        if "No matching keys" in str(error):
            raise SecretsError(f"{where}: none of your age identities can open it (not a recipient, or the wrong key)") from None
        raise SecretsError(f"{where}: cannot decrypt: the file is corrupt, truncated or was tampered with") from None
    except UnicodeDecodeError:
        raise SecretsError(f"{where}: decrypted content is not UTF-8 text") from None


def load(env: str, paths: SecretsPaths | None = None, schema: "Schema | None" = None) -> dict[str, str]:
    """Decrypt and parse `secrets/<env>.env.age`; every secret value is registered with the redactor first."""
    paths = paths or SecretsPaths.default()
    check_env(env)
    schema = schema or load_schema(paths)
    if env == SANDBOX:
        ensure_sandbox(paths, schema)
    path = paths.encrypted(env)
    if not path.exists():
        hint = "" if env != SANDBOX else " (sandbox secrets are generated on first use)"
        raise SecretsError(f"{rel(path)}: no secrets for env {env!r}; run `invoke secrets.init --env={env}`{hint}")
    text = decrypt(path.read_bytes(), load_identities(env, paths), rel(path))
    values = parse_dotenv(text, rel(path))  # its errors name keys, never values
    register(values, schema)
    return values


def save(env: str, values: dict[str, str], schema: "Schema", paths: SecretsPaths | None = None,
         validate: bool = True) -> Path:
    """Validate `values` against the schema, then encrypt them to the env's recipients, atomically.

    Nothing is written when anything is wrong: the existing file stays as it was.
    validate: False only for a new env's first file, whose other values a person still has to choose.
    """
    paths = paths or SecretsPaths.default()
    register(values, schema)
    problems = schema.problems(env, values) if validate else []
    if problems:
        raise SecretsError(f"{env}: " + "; ".join(problems))
    recipients = [key for key, _ in load_recipients(env, paths)]
    text = render_dotenv(values, list(schema.keys))
    data = encrypt(text, recipients)
    write_private(paths.encrypted(env), data, 0o644)
    return paths.encrypted(env)


# --- the schema ----------------------------------------------------------------


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
    # Left unset, vigil writes the value per host when pushing ("postgresql": DATABASE_URL, see derive_values).
    derive: str = ""
    # A role that puts the value in place on its hosts (DB_PASSWORD: postgresql sets the role's password);
    # secrets.rotate applies it there before any service gets the new value.
    applied_by: str = ""
    # False only for values that are public by nature (NODE_ENV, a site's URL): masking
    # "production" would mask the env's own name in every line vigil prints.
    secret: bool = True

    def required_in(self, env: str) -> bool:
        return self.required if isinstance(self.required, bool) else env in self.required


URL_RULE_KEYS = {"schemes", "https_outside_sandbox", "sslmode_require_remote", "password_from"}
RULE_KEYS = {"services", "description", "required", "min_length", "distinct_from", "one_of", "url",
             "generate", "sandbox", "secret", "derive", "applied_by"}
# What `derive:` may name, and the keys each derivation reads.
DERIVATIONS = {"postgresql": ("DB_PASSWORD",)}


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
        parsed = _split_url(value)
        password = urllib.parse.unquote(parsed.password or "") if parsed else ""
        if password != values.get(rule.password_from, password):
            problems.append(f"its password must be {rule.password_from}'s value")
    return problems


def check_url(rule: KeyRule, env: str, value: str) -> list[str]:
    """URL rules: scheme, a host, https outside the sandbox, sslmode when any host it names is remote."""
    shape = f"must be a URL with scheme {' or '.join(rule.url_schemes)} and a host"
    if re.search(r"\s", value):
        return [f"{shape}, without spaces"]
    parsed = _split_url(value)
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


def load_schema(paths: SecretsPaths | None = None) -> Schema:
    """Read and validate secrets/schema.yml."""
    paths = paths or SecretsPaths.default()
    where = rel(paths.schema)
    data = load_yaml(paths.schema)
    if not isinstance(data, dict) or not {"app", "services", "keys"} <= set(data):
        raise SecretsError(f"{where}: needs the sections app, services and keys")
    app = data["app"] or {}
    app_user = validate.user(app.get("user"), f"{where}: app.user")
    config_dir = validate.absolute_path(app.get("config_dir"), f"{where}: app.config_dir")
    services = {}
    for name, spec in (data["services"] or {}).items():
        validate.name(name, f"{where}: services")
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
            raise SecretsError(f"{at}.{sorted(unknown)[0]}: unknown rule (expected one of {', '.join(sorted(RULE_KEYS))})")
        for service in spec.get("services") or []:
            if service not in services:
                raise SecretsError(f"{at}.services: unknown service {service!r}")
        url = spec.get("url") or {}
        if not isinstance(url, dict) or set(url) - URL_RULE_KEYS:
            raise SecretsError(f"{at}.url: expected a mapping of {', '.join(sorted(URL_RULE_KEYS))}")
        required = spec.get("required", True)
        if not isinstance(required, bool) and not (isinstance(required, list) and all(isinstance(e, str) for e in required)):
            raise SecretsError(f"{at}.required: expected true, false or a list of envs")
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
        )
    for rule in keys.values():
        if rule.password_from and rule.password_from not in keys:
            raise SecretsError(f"{where}: keys.{rule.key}.url.password_from: unknown key {rule.password_from!r}")
        for other in rule.distinct_from:
            if other not in keys:
                raise SecretsError(f"{where}: keys.{rule.key}.distinct_from: unknown key {other!r}")
        if rule.applied_by:
            try:
                load_role(rule.applied_by)
            except ConfigError:
                raise SecretsError(f"{where}: keys.{rule.key}.applied_by: no role {rule.applied_by!r} in roles/") from None
        for source in DERIVATIONS.get(rule.derive, ()):
            if source not in keys:
                raise SecretsError(f"{where}: keys.{rule.key}.derive: {rule.derive} needs key {source} in the schema")
    return Schema(paths.schema, app_user, config_dir, services, keys)


# --- generating values ---------------------------------------------------------


def generate_value(rule: KeyRule) -> str:
    """A fresh random value for a generatable key: `generate` random bytes, base64url, no padding."""
    if not rule.generate:
        raise SecretsError(f"{rule.key}: not generatable (no `generate:` in the schema); set it with secrets.set")
    return base64.urlsafe_b64encode(random.token_bytes(rule.generate)).decode().rstrip("=")


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


def init_env(env: str, paths: SecretsPaths, schema: Schema, label: str) -> dict[str, Any]:
    """Create `env`'s key pair (kept), recipients file and, if absent, its secrets file with generated values."""
    check_env(env)
    if FORBIDDEN_CHARACTERS.search(label) or "#" in label:
        raise SecretsError("--label: one line of text without '#' or control characters")
    identity, identity_path = create_identity(env, paths)
    public = str(identity.to_public())
    recipients_path = paths.recipients(env)
    existing = parse_recipients(recipients_path.read_text(), rel(recipients_path)) if recipients_path.exists() else []
    added = False
    if public not in [key for key, _ in existing]:
        recipients_path.parent.mkdir(parents=True, exist_ok=True)
        with open(recipients_path, "a") as handle:
            handle.write(f"{public}  # {label}\n")
        added = True
    created = False
    if not paths.encrypted(env).exists():
        values: dict[str, str] = {}
        generate_missing(schema, values, env)
        # The sandbox's generated values are complete; other envs need values a person must choose (URLs...).
        save(env, values, schema, paths, validate=env == SANDBOX)
        created = True
    return {"identity": identity_path, "public": public, "recipient_added": added, "secrets_created": created}


def ensure_sandbox(paths: SecretsPaths, schema: Schema) -> None:
    """The sandbox needs no setup: create its key, recipients and generated secrets on first use."""
    if not paths.encrypted(SANDBOX).exists():
        init_env(SANDBOX, paths, schema, "sandbox (generated on this machine)")


def diff_values(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """Key names added, removed and changed between two sets of values; values never appear."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(key for key in set(before) & set(after) if before[key] != after[key]),
    }


def reencrypt(env: str, paths: SecretsPaths, recipients: list[str]) -> None:
    """Encrypt the env's current content to `recipients` (after adding or removing one)."""
    text = decrypt(paths.encrypted(env).read_bytes(), load_identities(env, paths), rel(paths.encrypted(env)))
    write_private(paths.encrypted(env), encrypt(text, recipients), 0o644)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


# --- values derived per host ---------------------------------------------------

POSTGRESQL_PORT = 5432


def hosts_running_role(inventory: Inventory, role: str) -> list[Host]:
    """The hosts onboarding applies `role` to (playbooks/onboard.yml), in inventory order."""
    names: set[str] = set()
    for play in load_playbook("onboard"):
        if any(candidate.name == role for candidate in play.roles):
            names |= inventory.hosts_in(play.hosts, where=f"playbooks/onboard.yml: {play.name!r} hosts")
    return [host for name, host in inventory.hosts.items() if name in names]


def database_host(inventory: Inventory) -> Host:
    """The one host onboarding installs PostgreSQL on (playbooks/onboard.yml's play with the postgresql role)."""
    hosts = hosts_running_role(inventory, "postgresql")
    if len(hosts) != 1:
        raise SecretsError(f"DATABASE_URL is unset and {rel(inventory.path)} has {len(hosts)} database hosts "
                           f"({', '.join(h.name for h in hosts) or 'none'}); vigil derives it for exactly one. "
                           "Set it with `invoke secrets.set DATABASE_URL`")
    return hosts[0]


def postgresql_url(inventory: Inventory, host: Host, password: str, root_certificate: str) -> str:
    """The app's DATABASE_URL as seen from `host`: over loopback on the database host itself, else to the
    database host's private address over TLS (its pg_hba.conf accepts only hostssl from web hosts), the
    server checked against `root_certificate` (a path on `host`) and the address it names."""
    db = database_host(inventory)
    db_vars = inventory.vars_for(db, [load_role("postgresql")])
    user = db_vars.string("postgresql_user", r"[a-z_][a-z0-9_]{0,62}")
    database = db_vars.string("postgresql_database", r"[a-z_][a-z0-9_]{0,62}")
    credentials = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
    if db.name == host.name:
        return f"postgresql://{credentials}@127.0.0.1:{POSTGRESQL_PORT}/{database}"
    address = db_vars.private_address()
    address = f"[{address}]" if ":" in address else address
    return (f"postgresql://{credentials}@{address}:{POSTGRESQL_PORT}/{database}"
            f"?sslmode=verify-full&sslrootcert={urllib.parse.quote(root_certificate)}")


def fetch_database_certificate(inventory: Inventory) -> str:
    """The database server's TLS certificate (public), read from the database host as the admin user."""
    from vigil.transport import SSHTransport  # only pushes to a separate database host need a connection

    db = database_host(inventory).as_admin()
    with SSHTransport(db, inventory.known_hosts, inventory.env) as transport:
        result = transport.run(Command(("cat", "--", SERVER_CERTIFICATE)))
    if not result.ok or not result.stdout.startswith("-----BEGIN CERTIFICATE-----"):
        raise SecretsError(f"{db.name}: no PostgreSQL certificate at {SERVER_CERTIFICATE} yet, which the web hosts "
                           f"verify the database with: run `invoke provision.server --env={inventory.env} --limit={db.name}` first")
    return result.stdout


def database_root_certificate(schema: Schema) -> str:
    """Where web hosts keep the database server's certificate to verify it (DATABASE_URL's sslrootcert)."""
    return f"{schema.config_dir}/database-server.crt"


def derive_values(schema: Schema, values: dict[str, str], inventory: Inventory, host: Host,
                  services: list[Service]) -> dict[str, str]:
    """The derived keys `host`'s services need and the env leaves unset, computed for that host."""
    derived = {}
    for key, rule in schema.keys.items():
        if not rule.derive or key in values or not any(service.name in rule.services for service in services):
            continue
        missing = [source for source in DERIVATIONS[rule.derive] if source not in values]
        if missing:
            raise SecretsError(f"{key} is derived from {', '.join(missing)}, which the secrets lack")
        derived[key] = postgresql_url(inventory, host, values["DB_PASSWORD"], database_root_certificate(schema))
    register(derived, schema)
    return derived


# --- pushing to hosts ----------------------------------------------------------


def push_plans(inventory: Inventory, schema: Schema, values: dict[str, str], env: str, limit: str | None,
               only_services: list[str] | None = None, database_certificate=None) -> list[HostPlan]:
    """Each host's operations for `secrets.push`: the app user, the config dir, one env file per service.

    An env file that changes notifies its service, which reloads or restarts
    (only if running) once at the end of the host's run.
    only_services: push just these services (secrets.rotate of a key only some services use).
    database_certificate: called (once, if at all) for the database server's certificate, which web
    hosts other than the database host get beside a derived DATABASE_URL.
    """
    certificate_cache: list[str] = []

    def certificate() -> str:
        if not certificate_cache:
            if database_certificate is None:
                raise SecretsError("a derived DATABASE_URL on another host needs the database server's certificate")
            certificate_cache.append(database_certificate())
        return certificate_cache[0]

    # The env files are root's to write: as the admin user, like provisioning.
    selected = [host.as_admin() for host in inventory.select(limit)]
    plans = []
    for host in selected:
        services = [
            service for service in schema.services.values()
            if (only_services is None or service.name in only_services)
            and host.name in inventory.hosts_in(service.hosts, where=f"{rel(schema.path)}: services.{service.name}.hosts")
        ]
        if not services:
            continue
        operations = [
            User(schema.app_user, shell="/usr/sbin/nologin", home=f"/var/lib/{schema.app_user}", system=True,
                 name=f"Ensure the app user {schema.app_user} exists."),
            Directory(schema.config_dir, owner="root", group=schema.app_user, mode="0750",
                      name=f"Ensure {schema.config_dir} is readable by the app only."),
        ]
        handlers = {}
        derived = derive_values(schema, values, inventory, host, services)
        host_values = {**values, **derived}
        if "sslrootcert=" in derived.get("DATABASE_URL", ""):
            operations.append(File(database_root_certificate(schema), certificate().encode(), owner="root",
                                   group=schema.app_user, mode="0644",
                                   name="Ensure the database server's certificate is here to verify it by."))
        for service in services:
            content = render_dotenv(schema.for_service(service.name, host_values), list(schema.keys))
            operations.append(File(
                service.env_file, content, owner=schema.app_user, group=schema.app_user, mode="0600",
                secret=True, env_file=True, notify=(f"restart {service.name}",) if service.units else (),
                name=f"Ensure {service.env_file} holds the {env} secrets of {service.name}.",
            ))
            if service.units:
                handlers[f"restart {service.name}"] = ServiceAction(
                    service.units, "try-reload-or-restart", name=f"Reload or restart {service.name} where it runs.")
        plans.append(HostPlan(host, operations, handlers))
    if not plans:
        raise SecretsError(f"no host in --limit {limit or 'all'} runs any service of {rel(schema.path)}")
    return plans


# --- scanning for leaks ----------------------------------------------------------

AGE_HEADER = b"age-encryption.org/v1\n"
TOKEN_PATTERNS = {
    "an age private key": re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{58}"),
    "a private key block": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "a GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    "a GitLab token": re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "a Slack token": re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    "a Slack webhook": re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/]{20,}"),
    "a Stripe key": re.compile(r"\b[sr]k_(?:live|test)_[0-9a-zA-Z]{24,}"),
    "an OpenAI key": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}"),
    "a JSON Web Token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}
# Values this short are ordinary words; scanning for them would only cry wolf.
SCAN_MIN_LENGTH = 12


@dataclass(frozen=True)
class Finding:
    """A leak: where (path:line, and the commit for history) and what kind; never the value."""

    where: str
    what: str


def scan_text(text: str, where: str, forms: dict[str, str]) -> list[Finding]:
    """Findings in one text: known secret values ({spelling: 'env KEY'}) and token patterns, by line."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for form, label in forms.items():
            if form in line:
                found.append(Finding(f"{where}:{number}", f"the value of {label}"))
        for what, pattern in TOKEN_PATTERNS.items():
            if pattern.search(line):
                found.append(Finding(f"{where}:{number}", what))
    return found


def scan_forms(values_by_env: dict[str, dict[str, str]], schema: Schema) -> dict[str, str]:
    """{spelling: 'env KEY'} of every secret value worth scanning for."""
    forms = {}
    for env, values in values_by_env.items():
        for key, value in values.items():
            rule = schema.keys.get(key)
            spellings = forms_of(value) if rule is None or rule.secret else password_forms(value)
            for form in spellings:
                if len(form) >= SCAN_MIN_LENGTH:
                    forms[form] = f"{env} {key}"
    return forms


def child_environment() -> dict[str, str]:
    """This process's environment without the age identity: editors and git need not see it."""
    return {name: value for name, value in os.environ.items() if name != "VIGIL_AGE_IDENTITY"}


def scan_repository(repo: Path, forms: dict[str, str], history: bool) -> list[Finding]:
    """Plaintext secrets and token patterns in the working tree and, with `history`, every commit's additions."""
    findings: list[Finding] = []
    git = ["git", "-c", "core.quotePath=false"]
    listing = subprocess.run([*git, "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True,
                             env=child_environment())
    if listing.returncode != 0:
        raise SecretsError(f"secrets.scan: {repo} is not a git work tree")
    listed = listing.stdout.decode().split("\0")
    for name in filter(None, listed):
        path = repo / name
        if not path.is_file() or path.stat().st_size > 1_000_000:
            continue
        data = path.read_bytes()
        if data.startswith(AGE_HEADER) or b"\0" in data:
            continue  # really encrypted (whatever its name), or binary
        findings += scan_text(data.decode(errors="replace"), name, forms)
    if history:
        # Merges too (first-parent diff); encrypted files show as "Binary files differ".
        log = subprocess.run([*git, "log", "--all", "-p", "--diff-merges=first-parent", "--no-color", "--no-ext-diff",
                              "-U0", "--format=@@commit %h"],
                             cwd=repo, capture_output=True, check=True, env=child_environment()).stdout.decode(errors="replace")
        commit, path = "", ""
        for line in log.splitlines():
            if line.startswith("@@commit "):
                commit = line.split()[1]
            elif line.startswith("+++ "):
                path = line[6:] if line.startswith("+++ b/") else line[4:]
            elif line.startswith("+") and not line.startswith("+++"):
                for finding in scan_text(line[1:], f"{commit}:{path}", forms):
                    findings.append(Finding(finding.where.rsplit(":", 1)[0] + " (history)", finding.what))
    return sorted(set(findings), key=lambda f: (f.where, f.what))
