"""Asking the monitor host's Prometheus and Alertmanager, which listen on its loopback only: every
question of a task travels in one SSH round trip, as a script that curls each API path there.

Example:
    answers = ask_monitor("production", [("api/v1/query", {"query": "up"})])
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Sequence

from vigil.core.commands import script
from vigil.core.errors import ConfigError, ExitCode, VigilError
from vigil.core.fanout import connect
from vigil.core.inventory import Host, Inventory, load_inventory
from vigil.core.paths import rel
from vigil.core.topology import MONITOR_GROUP, monitor_host

# Where roles/monitoring has them listen, on the monitor host's loopback.
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
PROMETHEUS = f"http://127.0.0.1:{PROMETHEUS_PORT}"
ALERTMANAGER = f"http://127.0.0.1:{ALERTMANAGER_PORT}"
ANSWER_BREAK = "@@vigil-answer"
# Each argument is a URL built here from urlencoded parts: curl gets it as one quoted word.
ASK = r"""
for url in "$@"; do
    printf '%s\n' '@@vigil-answer'
    curl -sS --max-time 60 "$url" || printf '{"status": "error", "error": "curl could not reach %s"}' "$url"
    printf '\n'
done
"""


class MonitorError(VigilError):
    exit_code = ExitCode.HOST_FAILED


def require_monitor(inventory: Inventory, task: str) -> Host:
    """The env's monitor host, or a ConfigError naming the inventory file and what `task` needs."""
    host = monitor_host(inventory)
    if host is None:
        raise ConfigError(f"{task} needs a monitor host: {rel(inventory.path)} has no host in group "
                          f"`{MONITOR_GROUP}` (docs/monitoring.md)")
    return host


def api_url(base: str, path: str, params: dict[str, str] | None = None) -> str:
    """`base`/`path`?params, every value urlencoded."""
    return f"{base}/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")


def parse_answers(stdout: str, count: int) -> list[dict]:
    """The JSON answers of the ASK script, in order; an answer that is not JSON becomes an error answer."""
    parts = stdout.split(ANSWER_BREAK + "\n")[1:]
    if len(parts) != count:
        raise MonitorError(f"the monitor host answered {len(parts)} of {count} questions")
    answers = []
    for part in parts:
        try:
            answers.append(json.loads(part))
        except json.JSONDecodeError:
            answers.append({"status": "error", "error": f"not JSON: {part.strip()[:200]!r}"})
    return answers


def ask(inventory: Inventory, host: Host, urls: Sequence[str]) -> list[dict]:
    """GET every URL on `host` (loopback URLs of its Prometheus or Alertmanager) in one round trip."""
    with connect(inventory, host, admin=False) as transport:
        result = transport.run(script(ASK, *urls, sudo=False), timeout=60 + 60 * len(urls))
    if not result.ok and ANSWER_BREAK not in result.stdout:
        raise MonitorError(f"{host.name}: asking Prometheus failed: {result.stderr.strip()[:300]}")
    return parse_answers(result.stdout, len(urls))


def ask_monitor(env: str, questions: Sequence[tuple[str, dict[str, str]]], task: str) -> list[dict]:
    """Prometheus's answers (the `data` of each) to (API path, params) questions, on `env`'s monitor host.

    A question Prometheus refuses raises MonitorError with its error.
    """
    inventory = load_inventory(env)
    host = require_monitor(inventory, task)
    answers = ask(inventory, host, [api_url(PROMETHEUS, path, params) for path, params in questions])
    for (path, params), answer in zip(questions, answers):
        if answer.get("status") != "success":
            raise MonitorError(f"{host.name}: Prometheus refused {path} {params.get('query', '')!r}: "
                               f"{answer.get('error', answer)}")
    return [answer["data"] for answer in answers]
