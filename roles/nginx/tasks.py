"""The nginx role: the app's HTTPS site with Mozilla intermediate TLS, Helmet's headers, rate limits and CORS."""

import re
import urllib.parse

from vigil.core.audit_log import RECORD_ACTION
from vigil.core.commands import cmd
from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.deploy.certificates import ACME_ROOT, site_certificate
from vigil.deploy.edge import app_server, content_security_policy, site_name
from vigil.operations.apt import AptPackages
from vigil.operations.files import Absent, Directory, File, Symlink
from vigil.operations.systemd import ServiceAction, SystemdUnit

SITE = "together-pray"
SWITCH_HELPER = "/usr/local/sbin/vigil-switch-upstream"
WEB_ROOT = "/var/www/together-pray"
ORIGIN = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?"


def _cors_origins(vars) -> list[str]:
    origins = vars["nginx_cors_origins"]
    if not origins:
        url = urllib.parse.urlsplit(vars.secret("FRONTEND_URL").value)
        origins = [f"{url.scheme}://{url.netloc}"]
    if not isinstance(origins, list):
        raise ConfigError(f"{vars.where('nginx_cors_origins')}: expected a list of origins like https://app.example")
    for origin in origins:
        if not isinstance(origin, str) or not re.fullmatch(ORIGIN, origin):
            raise ConfigError(f"{vars.where('nginx_cors_origins')}: {origin!r} is not an origin like https://app.example")
    return origins


def tasks(role, vars):
    """The nginx role's operations for one host, in order."""
    server_name = site_name(vars)
    ports = {kind: vars[f"nginx_{kind}_ports"] for kind in ("backend", "frontend")}
    for kind, colors in ports.items():
        if not isinstance(colors, dict) or set(colors) != {"blue", "green"} or not all(
                isinstance(port, int) and 1024 < port < 65536 for port in colors.values()):
            raise ConfigError(f"{vars.where(f'nginx_{kind}_ports')}: expected {{blue: PORT, green: PORT}} above 1024")
    certificate_ops, certificate, key = site_certificate(vars, server_name, "site")
    headers = render_template(role.template("security-headers.conf.j2"), {
        "hsts_max_age": vars.integer("nginx_hsts_max_age", minimum=0),
    })
    site = render_template(role.template("site.conf.j2"), {
        "server_name": server_name, "acme_root": ACME_ROOT,
        "api_rate": vars.integer("nginx_api_rate_per_second", minimum=1),
        "cors_origins": _cors_origins(vars),
        "internal_port": vars.integer("nginx_internal_api_port", minimum=1025),
        "redirect_host": f"[{server_name}]" if ":" in server_name else server_name,
        "server_body": app_server(vars, certificate, key, api_zone="together_pray_api",
                                  cors="together_pray_cors", backend="http://together_pray_backend/",
                                  frontend="http://together_pray_frontend"),
    })
    upstreams = render_template(role.template("upstreams.conf.j2"), {
        "backend_port": ports["backend"]["blue"], "frontend_port": ports["frontend"]["blue"]})
    reload = ("reload nginx",)
    return [
        AptPackages(["nginx", "ssl-cert"], name="Ensure nginx is installed."),
        Directory(WEB_ROOT, mode="0755"),
        File(f"{WEB_ROOT}/maintenance.html", role.file("maintenance.html"), name="Ensure the maintenance page exists."),
        *certificate_ops,
        File("/etc/nginx/snippets/vigil-security-headers.conf", headers, notify=reload,
             name="Ensure the security headers snippet is managed."),
        File("/etc/nginx/conf.d/vigil-content-security-policy.conf",
             render_template(role.template("content-security-policy.conf.j2"), {"csp": content_security_policy(vars)}),
             notify=reload, name="Ensure the Content-Security-Policy is set in one place."),
        File(f"/etc/nginx/conf.d/{SITE}-upstreams.conf", upstreams, replace=False, notify=reload,
             name="Ensure the app upstreams exist (deploys switch their colors)."),
        File(SWITCH_HELPER, render_template(role.template("vigil-switch-upstream.j2"), {
            "ports": ports, "upstreams": f"/etc/nginx/conf.d/{SITE}-upstreams.conf", "prefix": SITE.replace("-", "_"),
            "record": RECORD_ACTION}),
             mode="0755", name=f"Ensure {SWITCH_HELPER} switches an upstream's color, checked."),
        File(f"/etc/nginx/sites-available/{SITE}.conf", site, notify=reload, name="Ensure the app's site is managed."),
        Symlink(f"/etc/nginx/sites-enabled/{SITE}.conf", f"/etc/nginx/sites-available/{SITE}.conf", notify=reload,
                name="Ensure the app's site is enabled."),
        Absent("/etc/nginx/sites-enabled/default", notify=reload, name="Ensure Debian's default site is disabled."),
        SystemdUnit("nginx.service", enabled=True, running=True),
    ]


def handlers(role, vars):
    return {"reload nginx": ServiceAction("nginx.service", "reload", check=cmd("nginx", "-t", "-q"),
                                          name="Reload nginx after `nginx -t` accepts the configuration.")}
