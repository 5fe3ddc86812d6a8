"""`env.check`: what must hold before an env's first onboarding, one line per item.

Each host is asked once (SSH as the user onboarding will log in as, then its release, free disk and
memory in one command); the web hosts' ports 80 and 443 are tried from this machine; the site's domain
is looked up (through a chosen DNS server with --resolver, as the world sees it rather than this
machine's cache); the env's secrets are checked against the schema.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dns.resolver

from vigil.core.commands import script
from vigil.core.connectors import Transport
from vigil.core.errors import ConfigError
from vigil.core.fanout import Unreachable, connect, on_hosts
from vigil.core.inventory import Host, Inventory
from vigil.vault.paths import SecretsError
from vigil.vault.schema import Schema
from vigil.vault.store import load

KINDS = ("ssh", "os", "disk", "memory", "ports", "dns", "secrets")
# What vigil's roles are written for: the sandbox tests Debian 12 and 13 on every change.
SUPPORTED_RELEASES = {("debian", "12"): "Debian 12", ("debian", "13"): "Debian 13",
                      ("ubuntu", "22.04"): "Ubuntu 22.04 LTS", ("ubuntu", "24.04"): "Ubuntu 24.04 LTS"}
# Free space on / for packages, releases (five kept), logs and the database's first months.
MIN_FREE_DISK_BYTES = 5 * 1024**3
# MemTotal (a "1 GB" VPS reports a little less): the apps or PostgreSQL alone, or both on one server.
MIN_MEMORY_BYTES = {"one": 900 * 1024**2, "both": 1800 * 1024**2}
PORT_TIMEOUT = 3.0

# Read in one command on each host, as whoever onboarding logs in as (no sudo needed).
HOST_FACTS = r"""
. /etc/os-release && printf 'os %s %s\n' "$ID" "$VERSION_ID"
printf 'disk %s\n' "$(df -B1 --output=avail / | tail -n 1 | tr -d ' ')"
awk '/^MemTotal:/ { printf "memory %d\n", $2 * 1024 }' /proc/meminfo
"""


@dataclass(frozen=True)
class Item:
    kind: str  # one of KINDS
    subject: str  # the host, domain or env it is about
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.kind:<7}  {self.subject}: {self.detail}"

    def as_json(self) -> dict:
        return asdict(self)


def parse_host_facts(text: str) -> dict[str, str]:
    """`HOST_FACTS`'s output: {"os": "debian 13", "disk": "123", "memory": "456"}."""
    facts = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("os", "disk", "memory") and value.strip():
            facts[name] = value.strip()
    return facts


def host_items(host: Host, login: str, facts: dict[str, str], runs_both: bool) -> list[Item]:
    """The os, disk and memory items of one host from its facts (pure)."""
    items = [Item("ssh", host.name, True, f"logged in as {login}")]
    release = tuple(facts.get("os", "unknown ?").split(" ", 1))
    name = SUPPORTED_RELEASES.get(release)  # type: ignore[arg-type]
    items.append(Item("os", host.name, name is not None, f"{name} (supported)" if name else
                      f"{' '.join(release)} is not supported (choose one of {', '.join(SUPPORTED_RELEASES.values())})"))
    free = int(facts.get("disk", "0") or 0)
    items.append(Item("disk", host.name, free >= MIN_FREE_DISK_BYTES,
                      f"{gib(free)} free on / (at least {gib(MIN_FREE_DISK_BYTES)})"))
    memory, need = int(facts.get("memory", "0") or 0), MIN_MEMORY_BYTES["both" if runs_both else "one"]
    items.append(Item("memory", host.name, memory >= need, f"{gib(memory)} (at least {gib(need)}"
                      f"{' for the app and its database on one server' if runs_both else ''})"))
    return items


def gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


def port_item(host: Host, port: int, connect_to: Callable[[str, int], str]) -> Item:
    """Port `port` of a web host from this machine: open or refused means the world reaches it."""
    state = connect_to(host.address, port)
    if state == "open":
        return Item("ports", host.name, True, f"{port} answers from here")
    if state == "refused":
        return Item("ports", host.name, True, f"{port} reachable from here (nothing listens yet: onboarding adds "
                                              "nginx)")
    return Item("ports", host.name, False, f"{port} gives no answer from here ({state}): open 80 and 443 to the "
                                           "world in the provider's firewall")


def tcp_state(address: str, port: int) -> str:
    try:
        socket.create_connection((address, port), timeout=PORT_TIMEOUT).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, socket.timeout):
        return "timed out"
    except OSError as error:
        return error.strerror or str(error)


def resolver_for(server: str | None) -> dns.resolver.Resolver:
    """This machine's resolver, or the DNS server `server` (IP or IP:PORT) alone."""
    # dnspython on first use: env.check alone needs it, and every task imports this module (CLI start-up).
    import dns.resolver  # noqa: PLC0415

    if not server:
        return dns.resolver.Resolver()
    address, port = server, 53
    if server.count(":") == 1:
        address, _, port_text = server.partition(":")
        if not port_text.isdigit():
            raise ConfigError(f"--resolver: {server!r}: expected IP or IP:PORT")
        port = int(port_text)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"--resolver: {server!r}: expected the DNS server's IP address (IP or IP:PORT)") from None
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = [address], port, 5.0
    return resolver


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False


def lookup(resolver: dns.resolver.Resolver, name: str) -> set[str]:
    """The A and AAAA addresses of `name` ({} if it has none)."""
    import dns.resolver  # noqa: PLC0415 (as in resolver_for)

    found: set[str] = set()
    for record in ("A", "AAAA"):
        try:
            found |= {answer.to_text() for answer in resolver.resolve(name, record)}
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
    return found


def dns_item(domain: str, web_addresses: set[str], resolve: Callable[[str], set[str]]) -> Item:
    """The domain points at the web hosts, and only at them."""
    import dns.exception  # noqa: PLC0415 (as in resolver_for)

    try:
        found = resolve(domain)
    except dns.exception.DNSException as error:
        return Item("dns", domain, False, f"cannot be looked up: {error}")
    if not found:
        return Item("dns", domain, False, f"has no A or AAAA record: point it at {', '.join(sorted(web_addresses))}")
    stray = found - web_addresses
    if stray:
        return Item("dns", domain, False, f"points at {', '.join(sorted(stray))}, not a web host of the env "
                                          f"({', '.join(sorted(web_addresses))}): switch it (docs/moving-in.md)")
    return Item("dns", domain, True, f"points at {', '.join(sorted(found))}")


def secrets_item(env: str, schema: Schema) -> Item:
    try:
        values = load(env)
    except SecretsError as error:
        return Item("secrets", env, False, error.message)
    problems = schema.problems(env, values)
    if problems:
        return Item("secrets", env, False, "; ".join(problems))
    return Item("secrets", env, True, f"{len(values)} keys, complete")


def check_env(inventory: Inventory, schema: Schema, skip: Iterable[str] = (), resolver: str | None = None,
              connect_to: Callable[[str, int], str] = tcp_state) -> list[Item]:
    """Every item of the preflight for `inventory`'s env, in a fixed order, minus the kinds in `skip`."""
    skip = set(skip)
    unknown = skip - set(KINDS)
    if unknown:
        raise ConfigError(f"--skip: unknown item {sorted(unknown)[0]!r}; choose from {', '.join(KINDS)}")
    hosts = list(inventory.hosts.values())
    web = [host for host in hosts if "web" in host.groups]
    items: list[Item] = []
    if not skip >= {"ssh", "os", "disk", "memory"}:
        def ask(transport: Transport, host: Host) -> tuple[str, dict[str, str]]:
            result = transport.run(script(HOST_FACTS, sudo=False))
            return transport.login_user, parse_host_facts(result.stdout)

        answers = on_hosts(inventory, hosts, ask, connector=lambda host: connect(inventory, host,
                                                                                 bootstrap_fallback=True))
        for host in hosts:
            answer = answers[host.name]
            if isinstance(answer, Unreachable):
                items.append(Item("ssh", host.name, False, answer.reason))
                continue
            runs_both = {"web", "db"} <= set(host.groups)
            items += [item for item in host_items(host, *answer, runs_both) if item.kind not in skip]
    if "ports" not in skip:
        items += [port_item(host, port, connect_to) for host in web for port in (80, 443)]
    if "dns" not in skip:
        domains = {inventory.vars_for(host).get("nginx_server_name") or "" for host in web} - {""}
        dns_resolver = resolver_for(resolver)
        addresses = set()
        for host in web:
            addresses |= {host.address} if is_ip(host.address) else lookup(dns_resolver, host.address)
        items += [dns_item(domain, addresses, lambda name: lookup(dns_resolver, name)) for domain in sorted(domains)]
    if "secrets" not in skip:
        items.append(secrets_item(inventory.env, schema))
    return items
