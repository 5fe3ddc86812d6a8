"""`preview.up`, `preview.down`, `preview.list` and `preview.prune`: a branch served beside its env.

up, in order, each step only once the one before held:
  1. its name (vigil/previews/slug.py), every preview host's records read (one visit each), its place
     (the host it runs on, else the one with the most room; refused when the hosts are full)
  2. its artifacts: built from the branch once, as deploys build (or, in CI, the build job's, shipped)
  3. its database and role on the env's database server (vigil/previews/database.py: a new one branched
     from the env's at a moment by the backup host, else copied live; a preview already up keeps its data;
     its password new every time)
  4. its secrets, derived from the env's (vigil/previews/values.py), its site from the env's own site
     settings (the same server block: vigil/deploy/edge.py)
  5. its archives put on its host, then the host's program (vigil/previews/host_program.py) installs it:
     releases, env files, migrations, units, the health gate, its certificate, the site, the record
A new preview that fails on the way leaves nothing: the host removes what it put there, and its
database and role are dropped. down removes all of it from the name alone; prune removes the expired.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from vigil.core.commands import Command, checked_upload
from vigil.core.errors import ConfigError
from vigil.core.fanout import connect
from vigil.core.inventory import Host, HostVars, Inventory, load_inventory
from vigil.core.operations import render_template
from vigil.core.output import Reporter
from vigil.core.redaction import REDACTOR
from vigil.core.roles import load_role
from vigil.core.topology import preview_hosts
from vigil.deploy.build import REF_PATTERN, build
from vigil.deploy.edge import app_server
from vigil.deploy.rollout import services_of
from vigil.previews import database as previews_database
from vigil.previews.database import PreviewError, Seed, server_certificate
from vigil.previews.model import (
    DAY,
    RECORDS,
    SERVICES,
    Limits,
    PreviewRecord,
    database_of,
    expired,
    place,
    ports_of,
    preview_settings,
)
from vigil.previews.slug import is_slug, slug_of
from vigil.previews.values import preview_secrets
from vigil.vault.derive import database_url
from vigil.vault.env_files import render_dotenv
from vigil.vault.masking import register
from vigil.vault.schema import load_schema
from vigil.vault.store import load

HOST_PROGRAM = (Path(__file__).parent / "host_program.py").read_text()
ROLES = ("app", "nginx", "previews")
# Beside a preview's env files: the database server's certificate, where it runs on another host.
DB_CERTIFICATE = "database-server.crt"
# Where certbot's HTTP-01 challenges are served from, as for the env's own site (roles/nginx).
ACME_ROOT = "/var/www/html"


@dataclass
class Context:
    env: str
    inventory: Inventory
    hosts: list[Host]
    settings: dict  # roles/previews settings: the first preview host's limits and paths, used for every host
    vars: object  # that host's vars for app, nginx and previews
    domains: dict[str, str]  # each preview host's previews_domain

    @classmethod
    def of(cls, env: str) -> Context:
        inventory = load_inventory(env)
        hosts = preview_hosts(inventory)
        if not hosts:
            raise ConfigError(f"inventory/{env}.yml: no host to run previews on (group preview, else web)")
        strays = [host.name for host in hosts if host.name not in inventory.groups.get("web", [])]
        if strays:
            # Onboarding gives only web hosts the apps' runtime, the database's certificate and its firewall opening.
            raise ConfigError(f"inventory/{env}.yml: groups.preview: {', '.join(strays)} not in group web: "
                              "previews run on web hosts (docs/previews.md)")
        settings = {host.name: preview_settings(inventory.vars_for(host, [load_role(name) for name in ROLES]))
                    for host in hosts}
        domains = {name: chosen["domain"] for name, chosen in settings.items()}
        unset = [name for name, domain in domains.items() if not domain]
        if unset:
            raise ConfigError(f"inventory/{env}.yml: previews_domain is not set for {', '.join(unset)}: previews "
                              "are served at https://<name>.<previews_domain> (docs/previews.md)")
        if len(set(domains.values())) < len(domains):
            # One wildcard record for several hosts would send a name to a host that does not run it.
            raise ConfigError(f"inventory/{env}.yml: the preview hosts {', '.join(domains)} share a previews_domain: "
                              "give each its own (hosts.NAME.vars) and each its own wildcard DNS record "
                              "(docs/previews.md)")
        first = hosts[0]
        return cls(env, inventory, hosts, settings[first.name],
                   inventory.vars_for(first, [load_role(name) for name in ROLES]), domains)

    @property
    def limits(self) -> Limits:
        return Limits(self.settings["max_per_host"], self.settings["ttl_days"] * DAY, self.settings["port_base"])

    def name_of(self, slug: str, host: str) -> str:
        """The preview's host name: under its preview host's domain."""
        return f"{slug}.{self.domains[host]}"

    def program_config(self, **extra) -> dict:
        chosen = self.settings
        return {"root": chosen["root"], "config_dir": chosen["config_dir"], "records": RECORDS,
                "user": chosen["user"], "app": chosen["app"], "units": chosen["units"],
                "migrate_unit": chosen["migrate_unit"], **extra}

    def certificate(self, slug: str, host: str) -> dict | None:
        """How `host` gets the preview's own certificate (previews_certificates: per-name, with certbot);
        None where a wildcard one serves every preview."""
        if self.vars.string("nginx_tls", "local-ca|certbot") != "certbot" or \
                self.settings["certificates"] != "per-name":
            return None
        return {"name": self.name_of(slug, host), "acme_root": ACME_ROOT,
                "email": self.vars.string("nginx_certbot_email", r"[^@\s]+@[^@\s]+"),
                "server": self.vars.string("nginx_certbot_server",
                                           r"|https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")}


def ask(transport, host: Host, action: str, config: dict) -> dict:
    """The host program's `action`, its configuration on stdin; its answer, or a PreviewError naming why."""
    done = transport.run(Command(("python3", "-I", "-c", HOST_PROGRAM, action), sudo=True,
                                 stdin=json.dumps(config).encode()), timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.ok and lines:
        return json.loads(lines[-1])
    problem = next((json.loads(line) for line in reversed(done.stderr.splitlines()) if line.startswith("{")), {})
    raise PreviewError(REDACTOR.redact(f"{host.name}: {problem.get('error') or action} failed: "
                                       f"{problem.get('detail') or done.stderr.strip()[-300:]}"))


def list_previews(context: Context) -> dict[str, list[dict]]:
    """Every preview host's previews (their records and the memory their units use), one visit each."""
    found = {}
    for host in context.hosts:
        with connect(context.inventory, host) as transport:
            found[host.name] = ask(transport, host, "list", context.program_config())["previews"]
    return found


def records_of(listed: dict[str, list[dict]]) -> dict[str, list[PreviewRecord]]:
    return {host: [PreviewRecord.from_json(data, host) for data in previews] for host, previews in listed.items()}


def database_host(context: Context) -> tuple[Host, HostVars]:
    """The env's database host and its postgresql vars (the preview's database is copied from the app's)."""
    db_names = context.inventory.groups.get("db") or []
    if not db_names:
        raise ConfigError(f"inventory/{context.env}.yml: no db host to put the previews' databases on")
    host = context.inventory.hosts[db_names[0]]
    return host, context.inventory.vars_for(host, [load_role("postgresql")])


def up(env: str, branch: str, pr: int | None = None, ref: str | None = None, reporter: Reporter | None = None,
       worktree: bool = False, source: tuple[str, str] | None = None, at: str = "latest") -> dict:
    """Put the preview of `branch` up (or update it), by the steps of this module's docstring. Built from `ref`
    (default: the branch), or with `worktree` as deploy.build builds without --ref; `source`: (service, a
    directory or git URL) to build that service from instead, as deploy.build --source; `at`: the moment of
    the env's data a new preview starts from (backup.branch's --at; needs a backup host)."""
    reporter = reporter or Reporter.quiet()
    started = time.monotonic()
    context = Context.of(env)
    slug = slug_of(branch)
    records = records_of(list_previews(context))
    host_name, slot = place(slug, branch, records, context.limits)
    host = context.inventory.hosts[host_name]
    existing = next((r for r in records[host_name] if r.slug == slug), None)
    db_host, db_vars = database_host(context)
    env_database = db_vars.string("postgresql_database", r"[a-z_][a-z0-9_]{0,62}")
    if existing is not None and at != "latest":
        raise ConfigError(f"--at {at}: the preview {slug} is up, and keeps its data through updates: take it down "
                          "first (invoke preview.down) to start it again from another moment")
    seed = Seed.of(context.inventory, env_database, at)
    build_ref = None if worktree else ref or branch
    if build_ref is not None and not REF_PATTERN.match(build_ref):
        raise ConfigError(f"--branch {branch!r} is not a ref vigil builds from (letters, digits, . _ / -): give "
                          "its commit with --ref (CI gives $GITHUB_SHA); the preview keeps the branch's name")
    reporter.line(f"preview {slug} of {branch!r} on {host.name}, slot {slot}")
    artifacts = {service: build(source, echo=reporter.line) for service, source in
                 services_of(env, ref=build_ref, source=source).items() if service in SERVICES}
    built = time.monotonic()
    database, password = database_of(slug), secrets.token_urlsafe(32)
    register({"PREVIEW_DATABASE_PASSWORD": password})
    with connect(context.inventory, db_host) as db_transport:
        # From another host the preview verifies the server as the env's backend does: with its certificate.
        certificate = server_certificate(db_transport, db_host) if db_host.name != host.name else ""
        made = previews_database.prepare(
            db_transport, db_host, database, password, fill=existing is None, env_database=env_database,
            branch=(lambda name: seed.branch(context.inventory, name)) if seed.repository else None)
        copied = time.monotonic()
        try:
            answer = install(context, host, slug, branch, slot, pr, artifacts, database, password, db_vars,
                             certificate, existing, reporter)
        except BaseException:
            if made:
                previews_database.drop(db_transport, db_host, database)
            raise
    return {"slug": slug, "url": f"https://{context.name_of(slug, host.name)}", "host": host.name,
            "database": database, "steps": answer["steps"], "created": existing is None,
            "data": seed.describe(made),
            "seconds": {"build": round(built - started, 1), "database": round(copied - built, 1),
                        "deploy": round(time.monotonic() - copied, 1)}}


def install(context: Context, host: Host, slug: str, branch: str, slot: int, pr: int | None, artifacts: dict,
            database: str, password: str, db_vars: HostVars, db_certificate: str, existing: PreviewRecord | None,
            reporter: Reporter) -> dict:
    chosen, vars = context.settings, context.inventory.vars_for(host, [load_role(name) for name in ROLES])
    ports = ports_of(slot, chosen["port_base"])
    origin = f"https://{context.name_of(slug, host.name)}"
    schema = load_schema()
    # From another host: over TLS, the server verified with the certificate secrets.push gave the web hosts.
    url = database_url(db_vars, host, database, password, database, f"{chosen['config_dir']}/{slug}/{DB_CERTIFICATE}")
    derived = preview_secrets(schema, load(context.env), origin, url)
    for note in derived.left_out:
        reporter.line(f"  left out: {note}")
    env_files = {}
    for service in SERVICES:
        values = {**derived.values.get(service, {}), "PORT": str(ports[service]), "HOST": "127.0.0.1",
                  # The preview's own backend, whose routes have no /api (nginx strips it for browsers).
                  "HOSTNAME": "127.0.0.1", "API_INTERNAL_URL": f"http://127.0.0.1:{ports['backend']}",
                  "RELEASE_ID": artifacts[service].id}
        env_files[service] = render_dotenv(values)
    tls, own = vars.string("nginx_tls", "local-ca|certbot"), context.certificate(slug, host.name)
    live = f"/etc/letsencrypt/live/{own['name'] if own else context.domains[host.name]}"
    certificate, key = (("/etc/ssl/vigil/previews.crt", "/etc/ssl/vigil/previews.key") if tls == "local-ca" else
                        (f"{live}/fullchain.pem", f"{live}/privkey.pem"))
    cors = f"preview{slot}_cors"  # one slot per preview on a host; a short name (nginx hashes its variables)
    site = render_template(load_role("previews").template("site.conf.j2"), {
        "slug": slug, "cors": cors, "origin": origin, "server_name": context.name_of(slug, host.name),
        "acme_root": ACME_ROOT,
        "server_body": app_server(vars, certificate, key, api_zone=chosen["zone"], cors=cors,
                                  backend=f"http://127.0.0.1:{ports['backend']}/",
                                  frontend=f"http://127.0.0.1:{ports['frontend']}")})
    health = vars["app_health"]
    now = time.time()
    record = PreviewRecord(slug, branch, host.name, slot, database, existing.created if existing else now,
                           now + context.limits.ttl_seconds, pr, artifacts["backend"].ref,
                           {service: artifact.id for service, artifact in artifacts.items()})
    with connect(context.inventory, host) as transport:
        for service, artifact in artifacts.items():
            incoming = f"{chosen['root']}/.incoming"
            put = transport.run(checked_upload(artifact.path, f"{incoming}/{slug}-{service}.tar.gz"), timeout=1800)
            if not put.ok:
                raise PreviewError(f"{host.name}: putting the {service} release there failed: "
                                   f"{put.stderr.strip()[-300:]}")
        config = context.program_config(
            slug=slug, releases={service: {"id": artifact.id} for service, artifact in artifacts.items()},
            env_files=env_files, database_certificate=db_certificate, migrate=True, site=site,
            health={service: {"port": ports[service], "path": health[service]["path"],
                              "contains": f'"release":"{artifacts[service].id}"' if health[service].get("release")
                              else ""} for service in SERVICES},
            health_timeout=vars.integer("app_health_timeout", minimum=1), record=record.to_json(),
            certificate=own, served={"name": context.name_of(slug, host.name), "certificate": certificate})
        reporter.line(f"  installing on {host.name}: releases, env files, migrations, units, health gate, site")
        return ask(transport, host, "install", config)


def find(context: Context, name: str | None, branch: str | None) -> tuple[str, str]:
    """(slug, its host's name or "") of the preview named by NAME or --branch."""
    if bool(name) == bool(branch):
        raise ConfigError("preview.down: give the preview's NAME (preview.list) or --branch")
    slug = name or slug_of(branch)
    if not is_slug(slug):
        raise ConfigError(f"{slug!r} is not a preview's name (preview.list shows them)")
    for host, records in records_of(list_previews(context)).items():
        if any(record.slug == slug for record in records):
            return slug, host
    return slug, ""


def down(env: str, name: str | None = None, branch: str | None = None, missing_ok: bool = False) -> dict:
    """Remove the preview from its host (units, site, files, env files, record) and its database and role.
    Its records gone, it is still looked for on every preview host, so a half-made one goes too."""
    context = Context.of(env)
    slug, host_name = find(context, name, branch)
    removed: dict[str, list[str]] = {}
    for host in context.hosts:
        with connect(context.inventory, host) as transport:
            # Its certificate named whatever previews_certificates says now: one obtained before goes too.
            config = context.program_config(slug=slug, certificate={"name": context.name_of(slug, host.name)})
            gone = ask(transport, host, "remove", config)["removed"]
        if gone:
            removed[host.name] = gone
    db_host, _ = database_host(context)
    with connect(context.inventory, db_host) as transport:
        if previews_database.drop(transport, db_host, database_of(slug)):
            removed.setdefault(db_host.name, []).append("database and role")
    if not removed and not missing_ok:
        raise ConfigError(f"no preview {slug} in {env} (preview.list shows them); nothing was changed")
    return {"slug": slug, "host": host_name, "removed": removed}


def prune(env: str, now: float | None = None) -> list[dict]:
    """Every preview past its expiry, removed."""
    context = Context.of(env)
    return [down(env, name=record.slug, missing_ok=True)
            for record in expired(records_of(list_previews(context)), now)]


def logs(env: str, name: str, lines: int = 100) -> str:
    context = Context.of(env)
    slug, host_name = find(context, name, None)
    if not host_name:
        raise ConfigError(f"no preview {slug} in {env} (preview.list shows them)")
    host = context.inventory.hosts[host_name]
    units = [unit.replace("@.service", f"@{slug}.service") for unit in context.settings["units"].values()]
    with connect(context.inventory, host) as transport:
        done = transport.run(Command(("journalctl", "--no-pager", "-n", str(int(lines)),
                                      *[item for unit in units for item in ("-u", unit)]), sudo=True))
    return done.stdout
