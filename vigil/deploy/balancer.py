"""A web host out of the balancers' rotation while a rolling deploy touches it (roles/balancer): drained
in HAProxy on every balancer first (no new requests; those in flight finish, for up to a wait), put back
once its deploy ended, whatever the outcome (a host whose gate failed still serves its old release)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from vigil.core.commands import script
from vigil.core.errors import VigilError
from vigil.core.fanout import on_hosts, unreachable
from vigil.core.inventory import Inventory
from vigil.core.topology import BALANCER_GROUP

ADMIN_SOCKET = "/run/haproxy/admin.sock"
# Drain server web/$1, then wait up to $2 seconds until no session is open on it (show stat's scur).
DRAIN = r"""
set -eu
echo "set server web/$1 state drain" | socat stdio "$3" >/dev/null
deadline=$(( $(date +%s) + $2 ))
while :; do
    open=$(echo "show stat" | socat stdio "$3" | awk -F, -v server="$1" '$1 == "web" && $2 == server {print $5}')
    if [ "${open:-0}" = 0 ] || [ "$(date +%s)" -ge "$deadline" ]; then break; fi
    sleep 0.5
done
"""
READY = 'echo "set server web/$1 state ready" | socat stdio "$2" >/dev/null'


class BalancerError(VigilError):
    """A balancer could not take a web host out of its rotation: the deploy does not touch the host."""


def balancers(inventory: Inventory) -> list:
    return [inventory.hosts[name] for name in inventory.groups.get(BALANCER_GROUP) or []]


@contextlib.contextmanager
def out_of_rotation(inventory: Inventory, host: str, wait_seconds: int) -> Iterator[None]:
    """`host` drained on every balancer for the block's length; nothing where the env has none."""
    found = balancers(inventory)
    if not found:
        yield
        return
    drained = on_hosts(inventory, found, lambda transport, lb: transport.run(
        script(DRAIN, host, str(wait_seconds), ADMIN_SOCKET), timeout=wait_seconds + 30).ok)
    refused = {name: "the runtime API refused" for name, ok in drained.items() if ok is False}
    failed = {**unreachable(drained), **refused}
    try:
        if failed:
            raise BalancerError(f"{host} could not be drained on " + "; ".join(f"{name}: {why}"
                                                                               for name, why in failed.items()))
        yield
    finally:
        on_hosts(inventory, found, lambda transport, lb: transport.run(script(READY, host, ADMIN_SOCKET), timeout=30))
