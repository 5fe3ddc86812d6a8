"""The site as a visitor reaches it: each web host's server name and certificate as roles/nginx sets
them up, and what a request to each app service must get back over HTTPS."""

from __future__ import annotations

from vigil.core.inventory import HostVars
from vigil.incident.services import APP_SERVICES
from vigil.incident.status_rules import FAIL, OK, Check
from vigil.sandbox.paths import CA_DIR


def site_of(vars: HostVars) -> tuple[str, str, str | bool]:
    """(server name, certificate path on the host, what verifies it from here) as roles/nginx sets them up."""
    server_name = vars.get("nginx_server_name") or vars.host.address
    if vars["nginx_tls"] == "certbot":
        return server_name, f"/etc/letsencrypt/live/{server_name}/fullchain.pem", True
    return server_name, f"/etc/ssl/vigil/{server_name}.crt", str(CA_DIR / "ca.crt")


# What a visitor's request must get back from each app service, through nginx over HTTPS.
HTTP_ENDPOINTS = {"backend": ("backend health (https)", "/api/health", '"status":"ok"'),
                  "frontend": ("frontend page (https)", "/", "</html>")}


def https_checks(server_name: str, verify: str | bool, get=None,
                 services: tuple[str, ...] | list[str] = APP_SERVICES) -> list[Check]:
    """The backend's health and the frontend's page, as a visitor reaches them (nginx, TLS, the app)."""
    # requests on first use: every task imports this module, few ask a site anything (CLI start-up).
    import requests  # noqa: PLC0415

    get = get or requests.get
    checks = []
    for name, path, expect in (HTTP_ENDPOINTS[service] for service in services):
        try:
            response = get(f"https://{server_name}{path}", verify=verify, timeout=10)
            good = response.status_code == 200 and expect in response.text
            checks.append(Check(name, OK if good else FAIL, f"HTTP {response.status_code} in "
                                                            f"{response.elapsed.total_seconds() * 1000:.0f} ms"))
        except requests.RequestException as error:
            checks.append(Check(name, FAIL, type(error).__name__))
    return checks
