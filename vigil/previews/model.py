"""What a preview is on its host, and the choices made before any host is changed: which host, which ports,
whether the host has room, and when a preview expires.

A preview's record (PreviewRecord) is a JSON file on its host, <state dir>/<slug>.json, written last when it
is created and removed first when it goes: the host's list of previews is the files there. Everything else
it owns is named from its slug, so `preview.down` finds it all from the name alone:

  units       <app>-preview-<service>@<slug>.service, capped by MemoryMax= and CPUQuota=
  files       <app_root>/previews/<slug>/<service>/, its env files in <config_dir>/previews/<slug>/
  site        nginx's <app>-preview-<slug>.conf, at https://<slug>.<domain>
  database    preview_<slug> (and a role of the same name) on the env's database server
  ports       two per slot on loopback: backend port_base + 2 * slot, frontend the next one
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from vigil.core.errors import ConfigError
from vigil.previews.slug import is_slug

DAY = 86400
# Where a preview host keeps its previews' records: root's alone.
RECORDS = "/var/lib/vigil/previews"
SERVICES = ("backend", "frontend")


@dataclass(frozen=True)
class PreviewRecord:
    slug: str
    branch: str
    host: str
    slot: int
    database: str
    created: float
    expires: float
    pr: int | None = None
    commit: str = ""
    releases: dict[str, str] = field(default_factory=dict)  # service -> release id

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, host: str) -> PreviewRecord:
        """A record as a host keeps it; one whose name is not a slug is refused (it names files and units)."""
        if not isinstance(data, dict) or not is_slug(str(data.get("slug", ""))):
            raise ConfigError(f"{host}: a preview record without a valid name: {str(data)[:120]}")
        return cls(data["slug"], str(data.get("branch", "")), host, int(data.get("slot", -1)),
                   str(data.get("database", "")), float(data.get("created", 0)), float(data.get("expires", 0)),
                   data.get("pr"), str(data.get("commit", "")), dict(data.get("releases") or {}))


@dataclass(frozen=True)
class Limits:
    max_per_host: int
    ttl_seconds: float
    port_base: int


def database_of(slug: str) -> str:
    """The preview's database and role: a PostgreSQL name (a slug's hyphens are underscores)."""
    return "preview_" + slug.replace("-", "_")


def ports_of(slot: int, port_base: int) -> dict[str, int]:
    return {"backend": port_base + 2 * slot, "frontend": port_base + 2 * slot + 1}


def place(slug: str, branch: str, hosts: dict[str, list[PreviewRecord]], limits: Limits) -> tuple[str, int]:
    """(host, slot) for the preview `slug` of `branch`: where it already runs, else the host with the fewest
    previews (the first in inventory order on a tie) at its lowest free slot. Refused when the slug belongs
    to another branch, or when every host is full (naming what could be removed)."""
    for host, records in hosts.items():
        for record in records:
            if record.slug == slug:
                if record.branch != branch:
                    raise ConfigError(f"the preview {slug} on {host} is the branch {record.branch!r}, not {branch!r}: "
                                      "remove it first (invoke preview.down) or use another branch name")
                return host, record.slot
    if not hosts:
        raise ConfigError("no host to run previews on: add a `preview` group (or `web` hosts) to the inventory")
    host = min(hosts, key=lambda name: (len(hosts[name]), list(hosts).index(name)))
    taken = {record.slot for record in hosts[host]}
    free = [slot for slot in range(limits.max_per_host) if slot not in taken]
    if not free:
        running = sorted((record for records in hosts.values() for record in records), key=lambda r: r.expires)
        listed = "; ".join(f"{r.slug} ({r.branch}, on {r.host}, expires {describe_time(r.expires)})"
                           for r in running)
        raise ConfigError(f"every preview host runs its most previews ({limits.max_per_host} each, "
                          f"previews_max_per_host): remove one first with invoke preview.down NAME: {listed}")
    return host, free[0]


def expired(hosts: dict[str, list[PreviewRecord]], now: float | None = None) -> list[PreviewRecord]:
    now = time.time() if now is None else now
    return [record for records in hosts.values() for record in records if record.expires <= now]


def describe_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def preview_settings(vars) -> dict:
    """roles/previews's settings for one host's vars, checked: what the role installs and preview.up uses."""
    label = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    domain = vars.string("previews_domain", rf"|{label}(\.{label})+")
    name = vars.string("app_name", r"[a-z][a-z0-9-]{0,30}")
    return {
        "domain": domain,
        "app": name,
        "root": f"{vars.path('app_root')}/previews",
        "config_dir": f"{vars.path('app_config_dir')}/previews",
        "user": vars.user("app_group"),
        "max_per_host": vars.integer("previews_max_per_host", minimum=1),
        "ttl_days": vars.integer("previews_ttl_days", minimum=1),
        "memory_max": vars.string("previews_memory_max", r"[1-9][0-9]*[KMG]?"),
        "cpu_quota": vars.string("previews_cpu_quota", r"[1-9][0-9]{0,3}%"),
        "port_base": vars.integer("previews_port_base", minimum=1025),
        "api_rate": vars.integer("previews_api_rate_per_second", minimum=1),
        "certificates": vars.string("previews_certificates", "wildcard|per-name"),
        "zone": name.replace("-", "_") + "_previews",
        "units": {service: f"{name}-preview-{service}@.service" for service in SERVICES},
        "migrate_unit": f"{name}-preview-migrate@.service",
    }
