"""The firewall role: ufw with only SSH (rate-limited) and the web ports open, and fail2ban for sshd."""

from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.core.topology import (
    BALANCER_GROUP,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    MONITOR_GROUP,
    PATRONI_REST_PORT,
    database_cluster,
)
from vigil.operations.apt import AptPackages
from vigil.operations.files import File
from vigil.operations.systemd import ServiceAction, SystemdUnit
from vigil.operations.ufw import Firewall, ufw_source

DURATION = r"[0-9]+[smhdw]?"


def tasks(role, vars):
    """The firewall role's operations for one host, in order."""
    ssh_port = vars.integer("firewall_ssh_port", minimum=1)
    ports = vars["firewall_allowed_tcp_ports"]
    if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        raise ConfigError(f"{vars.where('firewall_allowed_tcp_ports')}: expected a list of TCP port numbers")
    if ssh_port != vars.host.port:
        raise ConfigError(f"{vars.where('firewall_ssh_port')}: {ssh_port} is not the port vigil logs in on "
                          f"({vars.host.port}); a firewall without it would lock everyone out")
    trusted = [ufw_source(source, vars.where("firewall_ssh_trusted_sources"))
               for source in vars.string_list("firewall_ssh_trusted_sources")]
    trusted += [source for source in ssh_peers(vars) if source not in trusted]
    behind = balanced_sources(vars)
    public = [port for port in ports if port != ssh_port and not (behind and port in WEB_PORTS)]
    rules = ([f"allow from {source} to any port {ssh_port} proto tcp" for source in trusted]
             + [f"limit {ssh_port}/tcp"] + [f"allow {port}/tcp" for port in public]
             + [f"allow from {source} to any port {port} proto tcp" for port in ports if port in WEB_PORTS
                for source in behind]
             + [f"allow from {source} to any port {port} proto tcp" for port, source in group_sources(vars)])
    jail = render_template(role.template("jail.local.j2"), {
        "ssh_port": ssh_port,
        "trusted": trusted,
        "maxretry": vars.integer("firewall_fail2ban_maxretry", minimum=1),
        "findtime": vars.string("firewall_fail2ban_findtime", DURATION),
        "bantime": vars.string("firewall_fail2ban_bantime", DURATION),
    })
    return [
        AptPackages(["ufw", "fail2ban", "python3-systemd"], name="Ensure ufw and fail2ban are installed."),
        Firewall(rules, incoming=vars.string("firewall_default_incoming", "deny|reject"),
                 outgoing=vars.string("firewall_default_outgoing", "allow|deny|reject"),
                 name=f"Ensure the firewall allows only {', '.join(rules)}."),
        File("/etc/fail2ban/jail.d/vigil.local", jail, notify=("restart fail2ban",),
             name="Ensure fail2ban watches sshd."),
        SystemdUnit("fail2ban.service", enabled=True, running=True),
    ]


def group_entries(vars, key: str, shape: str, valid) -> list[tuple[int, dict]]:
    """The entries of `key`, a list of mappings that name inventory groups, each checked by `valid`;
    (index, entry) pairs. `shape` says what one looks like, for the error."""
    where, entries = vars.where(key), vars[key]
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a list of {shape}")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not valid(entry):
            raise ConfigError(f"{where}[{index}]: expected {shape}, got {entry!r}")
    return list(enumerate(entries))


def ssh_peers(vars) -> list[str]:
    """Addresses of the inventory hosts firewall_ssh_peer_groups lets log in here without the rate limit."""
    where = vars.where("firewall_ssh_peer_groups")
    groups = vars.inventory.groups if vars.inventory is not None else {}
    sources = []
    for index, pair in group_entries(vars, "firewall_ssh_peer_groups", "{hosts: GROUP, from: GROUP}",
                                     lambda pair: set(pair) == {"hosts", "from"}
                                     and all(isinstance(pair[key], str) for key in pair)):
        if pair["hosts"] not in (*vars.host.groups, "all") or pair["from"] not in groups:
            continue
        sources += [ufw_source(peer, where) for peer in vars.peer_addresses(pair["from"], f"{where}[{index}].from")]
    return list(dict.fromkeys(sources))


CLUSTER_PORTS = (ETCD_CLIENT_PORT, ETCD_PEER_PORT, PATRONI_REST_PORT)
WEB_PORTS = (80, 443)


def balanced_sources(vars) -> list[str]:
    """On a web host behind balancers (group lb): the only addresses its web ports take traffic from, the
    balancers' and the monitor host's (its probes); [] for a host that serves the public itself."""
    groups = vars.inventory.groups if vars.inventory is not None else {}
    if not groups.get(BALANCER_GROUP) or "web" not in vars.host.groups or BALANCER_GROUP in vars.host.groups:
        return []
    where = vars.where("firewall_allowed_tcp_ports")
    names = [*groups[BALANCER_GROUP], *(groups.get(MONITOR_GROUP) or [])]
    return list(dict.fromkeys(ufw_source(vars.address_of(name), where) for name in names if name != vars.host.name))


def group_sources(vars) -> list[tuple[int, str]]:
    """(port, source address) pairs that firewall_group_rules open on this host."""
    where = vars.where("firewall_group_rules")
    pairs = []
    for index, rule in group_entries(vars, "firewall_group_rules", "{hosts: GROUP, port: PORT, from: GROUP}",
                                     lambda rule: set(rule) == {"hosts", "port", "from"}
                                     and all(isinstance(rule[key], str) for key in ("hosts", "from"))
                                     and not isinstance(rule["port"], bool) and isinstance(rule["port"], int)
                                     and 0 < rule["port"] < 65536):
        # The monitor host's rules hold in every env; one without a monitor host has nothing to open.
        if MONITOR_GROUP in (rule["hosts"], rule["from"]) and (
                vars.inventory is None or MONITOR_GROUP not in vars.inventory.groups):
            continue
        # So do the database cluster's: with fewer than three database hosts nothing listens on its ports.
        if rule["port"] in CLUSTER_PORTS and not database_cluster(vars.inventory):
            continue
        if vars.inventory is not None and rule["hosts"] not in (*vars.inventory.groups, "all"):
            raise ConfigError(f"{where}[{index}].hosts: no group {rule['hosts']!r} in the inventory")
        if rule["hosts"] != "all" and rule["hosts"] not in vars.host.groups:
            continue
        if rule["from"] == "all":
            others = (name for name in vars.inventory.hosts if name != vars.host.name)
            peers = list(dict.fromkeys(vars.address_of(name) for name in others))
        else:
            peers = vars.peer_addresses(rule["from"], f"{where}[{index}].from")
        pairs += [(rule["port"], ufw_source(peer, where)) for peer in peers]
    return pairs


def handlers(role, vars):
    return {"restart fail2ban": ServiceAction("fail2ban.service", "restart")}
