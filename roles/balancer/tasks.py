"""The balancer role: HAProxy on the hosts of group lb, in front of the web hosts (see defaults.yml);
nothing elsewhere, nor in an env without an lb group."""

from __future__ import annotations

from vigil.core.commands import cmd, script
from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.core.roles import load_role
from vigil.core.topology import BALANCER_GROUP
from vigil.deploy.certificates import trusted_acme_ca
from vigil.deploy.edge import site_name
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.guarded import Guarded
from vigil.operations.systemd import DaemonReload, ServiceAction, SystemdUnit
from vigil.sandbox import ca as sandbox_ca

CONFIG = "/etc/haproxy/haproxy.cfg"
CERTIFICATE = "/etc/haproxy/certs/site.pem"
WEB_CA = "/etc/haproxy/tls/web-hosts-ca.crt"
STATE_FILE = "/var/lib/haproxy/server-state"
ADMIN_SOCKET = "/run/haproxy/admin.sock"
DROPIN = "/etc/systemd/system/haproxy.service.d/vigil-server-state.conf"
# certbot answers HTTP-01 challenges here, behind HAProxy's port 80.
ACME_PORT = 8402
DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/vigil-haproxy-certificate"
DURATION = r"[0-9]+(ms|s|m|h)?"
CHECK = ("haproxy", "-c", "-q", "-f", CONFIG)
# A reload first saves each server's state (a drained web host stays drained), then checks the new
# configuration and hands over to it; Debian's own two steps after the first.
SERVER_STATE_DROPIN = f"""# Managed by vigil (roles/balancer): keep drained web hosts drained across a reload.
[Service]
ExecReload=
ExecReload=/bin/sh -c 'echo "show servers state" | socat stdio {ADMIN_SOCKET} > {STATE_FILE}.new \\
    && mv -f {STATE_FILE}.new {STATE_FILE} || true'
ExecReload=/usr/sbin/haproxy -Ws -f $CONFIG -c $EXTRAOPTS
ExecReload=/bin/kill -USR2 $MAINPID
"""
# HAProxy needs a certificate to start: a self-signed one stands in until certbot's first one.
PLACEHOLDER = r"""
set -eu
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$2.key" -out "$2.crt" 2>/dev/null
cat "$2.crt" "$2.key" > "$2"
rm -f "$2.crt" "$2.key"
"""
# certbot's renewals (and its first issue) become HAProxy's one-file certificate, then a reload.
BUNDLE = r"""#!/bin/sh
# Managed by vigil (roles/balancer): HAProxy reads a certificate and its key from one file.
set -eu
live=/etc/letsencrypt/live/__NAME__
umask 077
cat "$live/fullchain.pem" "$live/privkey.pem" > __CERTIFICATE__.new
mv -f __CERTIFICATE__.new __CERTIFICATE__
haproxy -c -q -f __CONFIG__ && systemctl reload haproxy.service
"""


def runs_here(vars) -> bool:
    return vars.inventory is not None and BALANCER_GROUP in vars.host.groups


def tasks(role, vars):
    """The balancer role's operations for one host: nothing off group lb."""
    if not runs_here(vars):
        return []
    inventory = vars.inventory
    if "web" in vars.host.groups:
        raise ConfigError(f"{vars.host.name}: a host of group {BALANCER_GROUP} cannot also be a web host (both "
                          "serve ports 80 and 443): give the balancer a host of its own")
    web_names = inventory.groups.get("web") or []
    if not web_names:
        raise ConfigError(f"{vars.host.name}: group {BALANCER_GROUP} balances the web hosts, and the inventory has "
                          "none (group web)")
    nginx = load_role("nginx")
    own = vars.for_roles([nginx])
    server_name = site_name(own)
    web_hosts = [{"name": name, "address": vars.address_of(name),
                  "server_name": site_name(vars.for_roles([nginx], inventory.hosts[name]))} for name in web_names]
    tls = own.string("nginx_tls", "local-ca|certbot")
    certificate_ops, issue, web_ca = certificate(own, server_name, tls)
    config = render_template(role.template("haproxy.cfg.j2"), {
        "server_name": server_name, "web_hosts": web_hosts, "certificate": CERTIFICATE, "ca": web_ca,
        "state_file": STATE_FILE, "acme_port": ACME_PORT if tls == "certbot" else None,
        "interval": vars.integer("balancer_check_interval_seconds", minimum=1),
        "fall": vars.integer("balancer_check_fall", minimum=1), "rise": vars.integer("balancer_check_rise", minimum=1),
        "retries": vars.integer("balancer_retries", minimum=0),
        "client_timeout": vars.string("balancer_client_timeout", DURATION),
        "server_timeout": vars.string("balancer_server_timeout", DURATION)})
    reload = ("reload haproxy",)
    return [
        AptPackages(["haproxy", "socat"], name="Ensure HAProxy and socat (its runtime API) are installed."),
        Directory("/etc/haproxy/certs", mode="0700"),
        Directory("/etc/haproxy/tls", mode="0755"),
        *certificate_ops,
        Directory(DROPIN.rsplit("/", 1)[0], mode="0755"),
        File(DROPIN, SERVER_STATE_DROPIN, notify=("reload systemd",),
             name="Ensure a reload keeps drained web hosts drained (HAProxy's server-state file)."),
        File(CONFIG, config, notify=reload, validate=("haproxy", "-c", "-q", "-f"),
             name=f"Ensure HAProxy serves {server_name} over HTTPS from {', '.join(web_names)}."),
        SystemdUnit("haproxy.service", enabled=True, running=True),
        *issue,
    ]


def certificate(vars, server_name: str, tls: str) -> tuple[list, list, str]:
    """The site's certificate as HAProxy reads it (certificate and key in one file): the operations before
    HAProxy starts, those once it runs (certbot's challenge goes through it), and the CA file the web hosts'
    certificates are checked against: the sandbox's CA, or the system's with certbot."""
    if tls == "local-ca":
        issued = sandbox_ca.host_certificate(vars.host.name, [server_name])
        authority = issued.chain[issued.chain.rindex(b"-----BEGIN CERTIFICATE-----"):]
        return [
            File(CERTIFICATE, issued.chain + issued.key, mode="0600", secret=True, notify=("reload haproxy",),
                 name="Ensure the site's certificate (sandbox CA) and key are HAProxy's."),
            File(WEB_CA, authority, notify=("reload haproxy",),
                 name="Ensure HAProxy checks the web hosts' certificates against the sandbox's CA."),
        ], [], WEB_CA
    email = vars.string("nginx_certbot_email", r"[^@\s]+@[^@\s]+")
    server = vars.string("nginx_certbot_server", r"|https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
    hook = BUNDLE.replace("__NAME__", server_name).replace("__CERTIFICATE__", CERTIFICATE).replace("__CONFIG__",
                                                                                                   CONFIG)
    live = f"/etc/letsencrypt/live/{server_name}/fullchain.pem"
    return [
        AptPackages(["certbot"], name="Ensure certbot is installed."),
        *trusted_acme_ca(vars),
        Guarded([script(PLACEHOLDER, server_name, CERTIFICATE)], creates=CERTIFICATE,
                name="Ensure HAProxy has a certificate to start with (self-signed, until certbot's)."),
    ], [
        Directory(DEPLOY_HOOK.rsplit("/", 1)[0], mode="0755"),
        File(DEPLOY_HOOK, hook, mode="0755", name="Ensure certbot's certificates become HAProxy's, and reload it."),
        # The challenge reaches certbot only through this run's configuration, and the reload it notified
        # comes at the end of the run: a balancer moving from the sandbox's CA to certbot would still be
        # redirecting port 80 to HTTPS. Before the first certificate only, so a later run reloads nothing.
        Guarded([cmd(*CHECK), cmd("systemctl", "reload", "haproxy.service")], creates=live,
                name="Ensure HAProxy sends ACME challenges to certbot before its first certificate."),
        Guarded([cmd("certbot", "certonly", "--non-interactive", "--agree-tos", "--email", email, "--standalone",
                     "--http-01-address", "127.0.0.1", "--http-01-port", str(ACME_PORT), "-d", server_name,
                     "--deploy-hook", DEPLOY_HOOK, *(["--server", server] if server else []))],
                creates=live, name=f"Ensure {server or 'Let’s Encrypt'} issued a certificate for {server_name}."),
        SystemdUnit("certbot.timer", enabled=True, running=True, name="Ensure certificates renew automatically."),
    ], "@system-ca"


def handlers(role, vars):
    if not runs_here(vars):
        return {}
    return {"reload haproxy": ServiceAction("haproxy.service", "reload", check=cmd(*CHECK),
                                            name="Reload HAProxy once `haproxy -c` accepts its configuration."),
            "reload systemd": DaemonReload()}
