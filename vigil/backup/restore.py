"""What a restore does around pgBackRest's (pitr.py), step by step as docs/runbooks/restore.md has it:
the confirmation, maintenance mode on every web host, then maintenance off and the backend's health
checked on every web host."""

from __future__ import annotations

import sys
from typing import Callable

from vigil.backup.access import BackupError, connect
from vigil.core.commands import script
from vigil.core.errors import ConfigError, VigilError
from vigil.core.inventory import Host, Inventory
from vigil.core.roles import load_role
from vigil.deploy.maintenance import set_maintenance
from vigil.deploy.settings import host_settings
from vigil.vault.schema import load_schema

Say = Callable[[str], None]


HEALTH = r"""
port=$1; current=$2
# A host with no backend release (a database host rebuilt after a loss, not deployed to yet) has nothing to wait for.
# (Asked as root: the releases are the deploy user's and the app's, not the admin's to read.)
sudo -n test -e "$current" || { echo "no backend release is deployed here" >&2; exit 1; }
end=$(( $(date +%s) + 60 ))
while [ "$(date +%s)" -lt "$end" ]; do
    if body=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/api/health" 2>&1) \
        && printf '%s' "$body" | grep -q '"database":"up"'; then
        echo "$body"; exit 0
    fi
    sleep 1
done
echo "not healthy within 60s: $body" >&2; exit 1
"""


def health(inventory: Inventory, host: Host, port: int) -> tuple[bool, str]:
    """The backend's /health through nginx's loopback listener on `host` (its pool reconnects after a restore)."""
    current = host_settings(inventory, host, ["backend"])[0].layout.current
    with connect(inventory, host) as transport:
        result = transport.run(script(HEALTH, str(port), current, sudo=False), timeout=120)
    return result.ok, (result.stdout or result.stderr).strip()[-300:]


def confirm(env: str, yes: bool, prompt: Callable[[str], str] = input) -> None:
    """A restore replaces the env's database: --yes, or the env's name typed at a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"restoring replaces the {env} database: pass --yes to confirm (no terminal to ask on)")
    if (
        prompt(
            f"Restoring replaces the {env} database (a safety point is kept first, to undo it). Type {env!r} to go on: "
        ).strip()
        != env
    ):
        raise ConfigError("not confirmed; nothing was changed")


def maintenance_on(env: str, inventory: Inventory, say: Say) -> list[Host]:
    """Maintenance mode on every web host before a restore; the web hosts. Where it cannot be turned on
    everywhere, it is turned off again and nothing is restored."""
    web = [web_host.as_admin() for web_host in load_schema().topology(inventory).app_hosts()]
    failed_on = maintenance(env, web, on=True)
    if failed_on:
        maintenance(env, [h for h in web if h.name not in failed_on], on=False)
        raise BackupError(f"maintenance mode could not be turned on on {', '.join(failed_on)}; nothing was restored")
    say(f"maintenance on: {', '.join(h.name for h in web)}")
    return web


def back_in_service(env: str, inventory: Inventory, web: list[Host], say: Say) -> dict[str, bool]:
    """After a restore: maintenance off, then the backend's health on every web host; {host: healthy}."""
    port = int(inventory.vars_for(web[0], [load_role("nginx")])["nginx_internal_api_port"]) if web else 0
    failed_off = maintenance_off(env, web, say)
    healthy = {}
    for web_host in web:
        ok, answer = health(inventory, web_host, port)
        healthy[web_host.name] = ok and web_host.name not in failed_off
        say(f"{web_host.name}: health {'ok' if ok else 'FAILED'}: {answer}")
    return healthy


def maintenance_off(env: str, hosts: list[Host], say: Say) -> list[str]:
    """Maintenance mode off on `hosts`, saying so (or where it is still on); the hosts where it failed."""
    failed = maintenance(env, hosts, on=False)
    if failed:
        say(f"maintenance mode is still on on {', '.join(failed)}: `invoke incident.maintenance off --env={env}`")
    elif hosts:
        say(f"maintenance off: {', '.join(host.name for host in hosts)}")
    return failed


def maintenance(env: str, hosts: list[Host], on: bool) -> list[str]:
    """Maintenance mode on or off on `hosts`, as incident.maintenance does it (planned, applied, audited);
    returns the hosts where it failed."""
    if not hosts:
        return []
    try:
        _, failed = set_maintenance(env, on, ",".join(host.name for host in hosts))
    except VigilError:
        return [host.name for host in hosts]
    return failed
