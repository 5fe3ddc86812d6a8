"""The inside of an app's HTTPS server block in nginx, one for the env's site (roles/nginx) and each of its
previews (vigil/previews): TLS, the security headers, the proxy headers, maintenance mode, the API's rate
limit and CORS, the routes to the backend and the frontend. One template (roles/nginx's app-server.conf.j2),
so a preview is served as the site is in all of this.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from vigil.core.errors import ConfigError, MissingSecretError
from vigil.core.operations import render_template
from vigil.core.roles import load_role
from vigil.core.topology import BALANCER_GROUP
from vigil.core.validation import address
from vigil.vault.error_tracking import errors_site

# An origin nginx may write into the policy: a scheme, a host name or IPv4 address, a port.
ORIGIN = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?"


def site_name(vars) -> str:
    """The site's name as a host's nginx vars give it (nginx_server_name), else the host's own address."""
    return address(vars.get("nginx_server_name") or vars.host.address, vars.where("nginx_server_name"))


def trusted_proxies(vars) -> list[str]:
    """nginx_trusted_proxies as networks nginx accepts (10.0.0.5, 10.0.0.0/24, 2001:db8::/32), and the env's
    balancers' private addresses (group lb, roles/balancer), whose X-Forwarded-For carries the client's."""
    proxies = vars["nginx_trusted_proxies"]
    if not isinstance(proxies, list):
        raise ConfigError(f"{vars.where('nginx_trusted_proxies')}: expected a list of addresses or networks")
    balancers = (vars.inventory.groups.get(BALANCER_GROUP) or []) if vars.inventory is not None else []
    proxies = [*proxies, *(vars.address_of(name) for name in balancers if name != vars.host.name)]
    networks = []
    for proxy in proxies:
        try:
            network = str(ipaddress.ip_network(str(proxy), strict=False))
        except ValueError:
            raise ConfigError(
                f"{vars.where('nginx_trusted_proxies')}: {proxy!r} is not an address or network like 10.0.0.0/24"
            ) from None
        if network not in networks:
            networks.append(network)
    return networks


def app_server(vars, certificate: str, key: str, api_zone: str, cors: str, backend: str, frontend: str) -> str:
    """The server block's inside, for a host's nginx vars. api_zone: its limit_req zone; cors: the prefix of
    its $<cors>_origin and $<cors>_credentials maps; backend, frontend: what proxy_pass names (an upstream,
    or a loopback address)."""
    return render_template(load_role("nginx").template("app-server.conf.j2"), {
        "certificate": certificate, "certificate_key": key, "api_burst": vars.integer("nginx_api_burst", minimum=0),
        "trusted_proxies": trusted_proxies(vars), "api_zone": api_zone, "cors": cors, "backend": backend,
        "frontend": frontend, "csp": content_security_policy(vars)})


def content_security_policy(vars) -> str:
    """nginx_content_security_policy, checked (it is written between double quotes in nginx's configuration),
    with the error tracker's origin added to connect-src: the browser SDK posts its events there."""
    policy = vars.string("nginx_content_security_policy", r"[^\"\n\\]+")
    origin = error_tracker_origin(vars)
    return with_connect_source(policy, origin) if origin else policy


def error_tracker_origin(vars) -> str | None:
    """Where the frontend's browser SDK sends events: NEXT_PUBLIC_SENTRY_DSN's origin where the env sets it
    (sentry.io, a tracker vigil does not run), else the env's own Bugsink (roles/errors), else none."""
    try:
        dsn = vars.secret("NEXT_PUBLIC_SENTRY_DSN").value
    except MissingSecretError:
        site = errors_site(vars.inventory)
        return site.origin if site else None
    parts = urllib.parse.urlsplit(dsn)
    origin = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    if not re.fullmatch(ORIGIN, origin):
        raise ConfigError(f"NEXT_PUBLIC_SENTRY_DSN: its origin {origin!r} is not one like https://errors.example.org")
    return origin


def with_connect_source(policy: str, origin: str) -> str:
    """`policy` that also lets pages connect to `origin` (appended to connect-src, or a connect-src that
    keeps what default-src allowed: 'self')."""
    directives = [directive.strip() for directive in policy.split(";") if directive.strip()]
    for index, directive in enumerate(directives):
        if directive.split()[0] == "connect-src":
            if origin not in directive.split()[1:]:
                directives[index] = f"{directive} {origin}"
            return "; ".join(directives)
    return "; ".join([*directives, f"connect-src 'self' {origin}"])
