"""monitor.analytics: each web host's visitor report (roles/analytics) built now and fetched here.

GoAccess writes latest.html and latest.json in its unit's state directory; the report covers what nginx's
analytics log still keeps. One command a host: the unit's own run (the same sandbox as the daily one), then
both files. Fetched, they land in .vigil/analytics/<env>/<host>.html and .json, 0600.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vigil.core.commands import script
from vigil.core.errors import ConfigError
from vigil.core.fanout import answered, on_hosts, unreachable
from vigil.core.inventory import load_inventory
from vigil.core.paths import REPO_ROOT

UNIT = "vigil-analytics"
STATE = "vigil-analytics"
STATE_DIRECTORY = f"/var/lib/{STATE}"
LOG = "/var/log/nginx/analytics.log"
REPORT_SCRIPT = "/usr/local/sbin/vigil-analytics-report"
# Built, then the JSON and the HTML separated by a NUL (neither holds one).
BUILD_AND_READ = 'systemctl start "$1" && cat -- "$2/latest.json" && printf "\\000" && cat -- "$2/latest.html"'


@dataclass
class Report:
    host: str
    html: Path
    figures: dict  # GoAccess's "general" section: requests, unique visitors, dates, bandwidth...
    top_pages: list[tuple[str, int]]


@dataclass
class Fetched:
    reports: list[Report]
    failed: dict[str, str]  # host -> why it has no report


def local_directory(env: str) -> Path:
    return REPO_ROOT / ".vigil" / "analytics" / env


def build_and_fetch(env: str, limit: str | None = None) -> Fetched:
    """Each web host's report (those in --limit), built now and fetched."""
    inventory = load_inventory(env)
    hosts = [host for host in inventory.select(limit) if "web" in host.groups]
    if not hosts:
        raise ConfigError(f"inventory/{env}.yml: no web host{' in --limit=' + limit if limit else ''}")
    answers = on_hosts(inventory, hosts, lambda transport, host: transport.run(
        script(BUILD_AND_READ, f"{UNIT}.service", STATE_DIRECTORY), timeout=900))
    directory = local_directory(env)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    reports, failed = [], unreachable(answers)
    for host, answer in answered(answers).items():
        if not answer.ok or "\0" not in answer.stdout:
            failed[host] = (f"the report was not built ({answer.stderr.strip()[-300:]}); is roles/analytics "
                            f"applied (invoke provision.server --limit={host})?")
            continue
        reports.append(save(directory, host, *answer.stdout.split("\0", 1)))
    return Fetched(reports, failed)


def save(directory: Path, host: str, json_text: str, html_text: str) -> Report:
    """The host's report written here (0600), and what the table shows of it."""
    for kind, text in (("json", json_text), ("html", html_text)):
        path = directory / f"{host}.{kind}"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(text)
    data = json.loads(json_text)
    pages = [(str(item.get("data", "")), int(item.get("hits", {}).get("count", 0)))
             for item in data.get("requests", {}).get("data", [])]
    return Report(host, directory / f"{host}.html", data.get("general", {}),
                  sorted(pages, key=lambda page: -page[1])[:5])
