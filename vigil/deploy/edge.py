"""The inside of an app's HTTPS server block in nginx, one for the env's site (roles/nginx) and each of its
previews (vigil/previews): TLS, the security headers, the proxy headers, maintenance mode, the API's rate
limit and CORS, the routes to the backend and the frontend. One template (roles/nginx's app-server.conf.j2),
so a preview is served as the site is in all of this.
"""

from __future__ import annotations

import ipaddress

from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.core.roles import load_role


def trusted_proxies(vars) -> list[str]:
    """nginx_trusted_proxies as networks nginx accepts (10.0.0.5, 10.0.0.0/24, 2001:db8::/32)."""
    proxies = vars["nginx_trusted_proxies"]
    if not isinstance(proxies, list):
        raise ConfigError(f"{vars.where('nginx_trusted_proxies')}: expected a list of addresses or networks")
    networks = []
    for proxy in proxies:
        try:
            networks.append(str(ipaddress.ip_network(str(proxy), strict=False)))
        except ValueError:
            raise ConfigError(
                f"{vars.where('nginx_trusted_proxies')}: {proxy!r} is not an address or network like 10.0.0.0/24"
            ) from None
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
    """nginx_content_security_policy, checked: it is written between double quotes in nginx's configuration."""
    return vars.string("nginx_content_security_policy", r"[^\"\n\\]+")
