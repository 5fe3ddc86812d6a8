"""`secrets.import`: the variables a team exports from its PaaS, mapped onto the schema of a new env.

Reads what the platforms write: `vercel env pull` (.env.local, KEY="value"), Railway's `railway variables
--kv` (KEY=value) or `--json` ({"KEY": "value"}), and a Neon connection string (a file holding the URL).
Each key is then, by the rules below in order:

  platform   set by the PaaS for itself (VERCEL_*, RAILWAY_*, TURBO_*, NX_*): dropped
  database   the PaaS's database (DATABASE_URL, POSTGRES_*, PG*): dropped; vigil writes the new database's
             URL for each host, and `backup.import --from-env-file` reads the old one from the same file
  site       FRONTEND_URL and NEXT_PUBLIC_API_URL: the new domain's, shown beside the old (public values)
  schema     a key of secrets/schema.yml: imported (JWT secrets kept keep users logged in)
  unknown    anything else: kept only when a person says so (added to secrets/schema.yml for the services
             the file was for), or refused with --strict

Nothing is written until the whole plan holds; no value is printed but the site's public ones.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vigil.core.paths import rel
from vigil.vault.env_files import KEY_PATTERN, check_value, parse_dotenv
from vigil.vault.masking import register
from vigil.vault.paths import SecretsError, SecretsPaths
from vigil.vault.schema import Schema, load_schema
from vigil.vault.store import diff_values, load, locked, save

PLATFORM = re.compile(r"^(VERCEL|RAILWAY|TURBO|NX)(_[A-Z0-9_]*)?$")
# DATABASE_URL, DATABASE_URL_UNPOOLED, DATABASE_PUBLIC_URL..., not the app's own DATABASE_POOL_SIZE.
DATABASE = re.compile(r"^(DATABASE_([A-Z0-9_]+_)?URL(_[A-Z0-9_]+)?|POSTGRES_[A-Z0-9_]+|PG[A-Z0-9_]+)$")
# The new domain decides these two (env.new wrote them from --domain).
SITE_KEYS = ("FRONTEND_URL", "NEXT_PUBLIC_API_URL")
VERCEL_HEADER = "# Created by Vercel CLI"
POSTGRES_URL = re.compile(r"^postgres(ql)?://\S+$")
# The URL a copy of the PaaS's database is best read through, most preferred first: a direct connection
# (pg_dump through PgBouncer's transaction pooling fails), and Railway's public proxy rather than its
# private network, which only its own services reach.
DATABASE_URL_PREFERENCE = ("DATABASE_URL_UNPOOLED", "POSTGRES_URL_NON_POOLING", "DATABASE_PUBLIC_URL", "DATABASE_URL",
                           "POSTGRES_URL")


@dataclass(frozen=True)
class Imported:
    """One key read from an export: where it came from and which services that file was for."""

    key: str
    value: str
    where: str
    services: tuple[str, ...]


@dataclass
class ImportPlan:
    """What the import does with each key; `values` is the env's file as it will be written."""

    values: dict[str, str]
    imported: list[str] = field(default_factory=list)
    replaced_site: list[tuple[str, str, str]] = field(default_factory=list)  # key, PaaS value, new value
    dropped: list[tuple[str, str]] = field(default_factory=list)  # key, why
    unknown: list[Imported] = field(default_factory=list)
    kept_unknown: list[Imported] = field(default_factory=list)


def read_export(path: Path) -> list[Imported]:
    """The keys and values of one export file, whatever platform wrote it. Errors name the file and line
    (or key), never a value."""
    where = rel(path) if path.is_absolute() else str(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SecretsError(f"{where}: cannot read it: {error.strerror}") from None
    except UnicodeDecodeError:
        raise SecretsError(f"{where}: not UTF-8 text") from None
    stripped = text.strip()
    if stripped.startswith("{"):
        values = _json_export(stripped, where)
    elif POSTGRES_URL.match(stripped):
        # A connection string alone (Neon's console, a password manager): the PaaS's database.
        values = {"DATABASE_URL": stripped}
    else:
        values = parse_dotenv(text, where)
    # Vercel pulls what its frontend project sees; anything else here is for the backend's service.
    services = ("frontend",) if stripped.startswith(VERCEL_HEADER) else ("backend",)
    return [Imported(key, value, where, services) for key, value in values.items()]


def _json_export(text: str, where: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise SecretsError(f"{where}: not valid JSON (line {error.lineno}); expected `railway variables --json`") \
            from None
    if not isinstance(data, dict):
        raise SecretsError(f"{where}: expected one JSON object of KEY: value")
    for key, value in data.items():
        if not KEY_PATTERN.match(str(key)):
            raise SecretsError(f"{where}: {str(key)[:64]!r} is not a valid key (A-Z, 0-9, _; starting with a letter)")
        if not isinstance(value, str):
            raise SecretsError(f"{where}: the value of {key} is not a string")
        check_value(key, value, where)
    return data


def merge(exports: list[list[Imported]]) -> list[Imported]:
    """Every key once: the same key in two files must carry the same value (which to keep is a person's call),
    unless the import drops it anyway (each platform's own variables, its database's URL)."""
    seen: dict[str, Imported] = {}
    for entry in (entry for export in exports for entry in export):
        first = seen.get(entry.key)
        if first is None:
            seen[entry.key] = entry
        elif first.value != entry.value and not (PLATFORM.match(entry.key) or DATABASE.match(entry.key)):
            raise SecretsError(f"{entry.key}: {first.where} and {entry.where} give it different values; remove it "
                               "from the one that is wrong")
        else:
            seen[entry.key] = Imported(entry.key, entry.value, first.where,
                                       tuple(dict.fromkeys(first.services + entry.services)))
    return list(seen.values())


def plan_import(entries: list[Imported], current: dict[str, str], schema: Schema,
                site: dict[str, str]) -> ImportPlan:
    """Where each imported key goes, by the rules of this module's docstring.

    current: the env's values now. site: the new domain's FRONTEND_URL and NEXT_PUBLIC_API_URL ({}: none
    known, the imported ones are kept).
    """
    plan = ImportPlan(values=dict(current))
    for entry in entries:
        if PLATFORM.match(entry.key):
            plan.dropped.append((entry.key, "set by the PaaS for itself"))
        elif DATABASE.match(entry.key):
            plan.dropped.append((entry.key, "the PaaS's database: vigil writes the new one's URL; "
                                            "backup.import --from-env-file copies the data"))
        elif entry.key in SITE_KEYS and site.get(entry.key):
            plan.replaced_site.append((entry.key, entry.value, site[entry.key]))
            plan.values[entry.key] = site[entry.key]
        elif entry.key in schema.keys:
            plan.imported.append(entry.key)
            plan.values[entry.key] = entry.value
        else:
            plan.unknown.append(entry)
    return plan


def keep_unknown(plan: ImportPlan, keep: list[Imported]) -> None:
    """Import these unknown keys too (their schema entries are added by `add_to_schema`)."""
    for entry in keep:
        plan.kept_unknown.append(entry)
        plan.values[entry.key] = entry.value


def services_of(entry: Imported) -> list[str]:
    """A browser's variable (NEXT_PUBLIC_*) is the frontend's; any other goes where its file was for."""
    return ["frontend"] if entry.key.startswith("NEXT_PUBLIC_") else list(entry.services)


def schema_entries(entries: list[Imported]) -> str:
    """secrets/schema.yml lines for kept unknown keys, appended under `keys:` (its last section)."""
    lines = []
    for entry in entries:
        lines += [f"  {entry.key}:",
                  f"    description: Imported from {entry.where} by secrets.import; say what it is for.",
                  f"    services: [{', '.join(services_of(entry))}]",
                  "    required: false"]
        if entry.key.startswith("NEXT_PUBLIC_"):
            lines.append("    secret: false   # shipped to every browser")
    return "\n".join(lines) + "\n"


def add_to_schema(schema_path: Path, entries: list[Imported]) -> str:
    """Append `entries` to the schema and check that it loads; returns the schema's old text (to put back)."""
    before = schema_path.read_text()
    keys_section = re.search(r"^keys:[ \t]*$", before, re.M)
    if keys_section is None or re.search(r"^[A-Za-z_]", before[keys_section.end():], re.M):
        raise SecretsError(f"{rel(schema_path)}: `keys:` must be its last section to add imported keys; add "
                           f"{', '.join(entry.key for entry in entries)} there by hand")
    schema_path.write_text(before.rstrip("\n") + "\n" + schema_entries(entries))
    return before


def site_values(current: dict[str, str], domain: str | None) -> dict[str, str]:
    """The new domain's FRONTEND_URL and NEXT_PUBLIC_API_URL: the env's own (env.new --domain), else from
    its inventory's nginx_server_name."""
    if domain:
        return {"FRONTEND_URL": f"https://{domain}", "NEXT_PUBLIC_API_URL": f"https://{domain}/api"}
    return {key: current[key] for key in SITE_KEYS if key in current}


def source_database_url(entries: list[Imported], where: str) -> tuple[str, str]:
    """The PaaS's database URL in an export, the best one to copy from (DATABASE_URL_PREFERENCE), and its key."""
    found = {entry.key: entry.value for entry in entries}
    for key in DATABASE_URL_PREFERENCE:
        if key in found and POSTGRES_URL.match(found[key]):
            return found[key], key
    raise SecretsError(f"{where}: no database URL in it (looked for {', '.join(DATABASE_URL_PREFERENCE)})")


def describe(plan: ImportPlan) -> list[str]:
    """The plan for a person: key names, why each is dropped, and the site's public values old and new."""
    lines = []
    if plan.imported or plan.kept_unknown:
        lines.append("import: " + ", ".join(plan.imported + [entry.key for entry in plan.kept_unknown]))
    for key, old, new in plan.replaced_site:
        lines.append(f"{key}: {_public(old)} -> {new} (the new domain's)" if old != new else f"{key}: {new} (same)")
    for why in dict.fromkeys(why for _, why in plan.dropped):
        lines.append(f"drop {', '.join(key for key, reason in plan.dropped if reason == why)} ({why})")
    for entry in plan.kept_unknown:
        lines.append(f"new in the schema: {entry.key} (for {', '.join(services_of(entry))}; from {entry.where})")
    for key in (key for key in SITE_KEYS if key in plan.imported):
        lines.append(f"{key}: the PaaS's address kept, as the env has no domain yet: give --domain")
    return lines


def _public(value: str) -> str:
    """A site URL as shown: its origin and path only (a URL may still carry credentials)."""
    parsed = urllib.parse.urlsplit(value)
    host = parsed.hostname or "?"
    return f"{parsed.scheme}://{host}{':' + str(parsed.port) if parsed.port else ''}{parsed.path}"


def reload_schema(schema: Schema) -> Schema:
    return load_schema(SecretsPaths(schema.path.parent))


def problems_of_imported(plan: ImportPlan, schema: Schema, env: str) -> list[str]:
    """What the schema finds wrong with the imported values (keys still missing are for later, not here;
    kept unknown keys have no rules yet, and read_export already refused a value no env file can carry)."""
    touched = {*plan.imported, *(key for key, _, _ in plan.replaced_site)}
    return [problem for problem in schema.problems(env, plan.values) if problem.split(":", 1)[0] in touched]


@dataclass
class ImportResult:
    plan: ImportPlan
    changes: dict[str, list[str]]  # key names added, removed, changed
    missing: list[str]  # what the env still needs, as the schema says it


def import_files(env: str, paths: SecretsPaths, schema: Schema, files: list[Path], keep: Callable[[Imported], bool],
                 strict: bool = False, domain: str | None = None, check: bool = False) -> ImportResult:
    """Import `files` into `env`'s secrets: read, map, ask `keep` about each unknown key, check, then save.

    strict: refuse unknown keys (nothing is imported). check: plan only, nothing written.
    Example: import_files("staging", paths, schema, [Path(".env.local")], keep=lambda entry: False)
    """
    if not files:
        raise SecretsError("secrets.import: give at least one --file=EXPORT")
    entries = merge([read_export(path) for path in files])
    # From here on, whatever vigil prints masks them, even an error that quotes one by accident. Not the
    # platform's own (never printed, and RAILWAY_ENVIRONMENT_NAME=production would mask every "production").
    register({entry.key: entry.value for entry in entries if not PLATFORM.match(entry.key)}, schema)
    with locked(env, paths):
        current = load(env, paths, schema)
        plan = plan_import(entries, current, schema, site_values(current, domain))
        if plan.unknown and strict:
            raise SecretsError(f"--strict: not in {rel(schema.path)}: {', '.join(e.key for e in plan.unknown)}; "
                               "nothing was imported")
        keep_unknown(plan, [entry for entry in plan.unknown if keep(entry)])
        problems = problems_of_imported(plan, schema, env)
        if problems:
            raise SecretsError(f"{env}: " + "; ".join(problems) + "; nothing was imported")
        if not check:
            old_schema = add_to_schema(schema.path, plan.kept_unknown) if plan.kept_unknown else None
            try:
                save(env, plan.values, reload_schema(schema) if old_schema else schema, paths, validate=False)
            except BaseException:
                if old_schema is not None:
                    schema.path.write_text(old_schema)
                raise
    missing = [problem for problem in schema.problems(env, plan.values) if problem.endswith(f"(required in {env})")]
    return ImportResult(plan, diff_values(current, plan.values), missing)
