"""An HTTPS site's certificate on a host, as its nginx vars say: issued by the sandbox's CA, or by an
ACME server through certbot (Let's Encrypt, or a private one whose CA the host then trusts). The app's
site (roles/nginx) and the error tracker's (roles/errors) get theirs the same way."""

from __future__ import annotations

from cryptography import x509

from vigil.core.commands import cmd, script
from vigil.core.errors import ConfigError
from vigil.core.paths import REPO_ROOT, rel
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.guarded import Guarded
from vigil.operations.systemd import SystemdUnit
from vigil.sandbox import ca as sandbox_ca

# Debian's stock site serves this directory on port 80 before ours exists, so certbot's first
# HTTP-01 challenge works there, and our sites keep serving challenges from it for renewals.
ACME_ROOT = "/var/www/html"
ACME_SERVER = r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?"
# A private ACME server's CA, trusted system-wide so certbot's runs and its renewal timer reach it.
ACME_CA = "/usr/local/share/ca-certificates/vigil-acme-ca.crt"
ACME_CA_INSTALLED = "/var/lib/vigil/acme-ca.crt"
RELOAD_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/vigil-reload-nginx"


def site_certificate(vars, server_name: str, what: str):
    """(operations, certificate path, key path) of an HTTPS site's certificate on vars' host, as its
    nginx vars say (nginx_tls: the sandbox's CA, or certbot over HTTP-01 through ACME_ROOT). `what` names
    the site in the operations' names ("site", "error tracker's site"). Each change notifies
    "reload nginx".

    Example: site_certificate(nginx_vars, "errors.example.org", "error tracker's site")
    """
    mode = vars.string("nginx_tls", "local-ca|certbot")
    if mode == "local-ca":
        issued = sandbox_ca.host_certificate(vars.host.name, [server_name])
        certificate, key = f"/etc/ssl/vigil/{server_name}.crt", f"/etc/ssl/vigil/{server_name}.key"
        return (
            [
                Directory("/etc/ssl/vigil", mode="0755"),
                File(
                    certificate,
                    issued.chain,
                    notify=("reload nginx",),
                    name=f"Ensure the {what}'s certificate (sandbox CA) is installed.",
                ),
                File(
                    key,
                    issued.key,
                    mode="0600",
                    secret=True,
                    notify=("reload nginx",),
                    name=f"Ensure the {what}'s private key is installed.",
                ),
            ],
            certificate,
            key,
        )
    live = f"/etc/letsencrypt/live/{server_name}"
    email = vars.string("nginx_certbot_email", r"[^@\s]+@[^@\s]+")
    server = vars.string("nginx_certbot_server", f"|{ACME_SERVER}")
    operations = [AptPackages(["certbot"], name="Ensure certbot is installed.")]
    operations += trusted_acme_ca(vars)
    issuer = server or "Let's Encrypt"
    return [
        *operations,
        Guarded([cmd("certbot", "certonly", "--non-interactive", "--agree-tos", "--email", email, "--webroot",
                     "-w", ACME_ROOT, "-d", server_name, *(["--server", server] if server else []))],
                creates=f"{live}/fullchain.pem",
                name=f"Ensure {issuer} issued a certificate for {server_name}."),
        # certbot's webroot renewals leave nginx serving the old certificate until something reloads it.
        Directory(RELOAD_HOOK.rsplit("/", 1)[0], mode="0755"),
        File(RELOAD_HOOK, "#!/bin/sh\n# Managed by vigil (roles/nginx): serve a renewed certificate.\n"
                          "nginx -t -q && systemctl reload nginx.service\n", mode="0755",
             name="Ensure a renewed certificate reloads nginx."),
        SystemdUnit("certbot.timer", enabled=True, running=True, name="Ensure certificates renew automatically."),
    ], f"{live}/fullchain.pem", f"{live}/privkey.pem"


def trusted_acme_ca(vars) -> list:
    """Trust the CA of a private ACME server (nginx_certbot_ca_certificate), if one is set."""
    source = vars.string("nginx_certbot_ca_certificate")
    if not source:
        return []
    path = (REPO_ROOT / source).resolve()
    try:
        pem = path.read_text()
    except OSError as error:
        raise ConfigError(
            f"{vars.where('nginx_certbot_ca_certificate')}: cannot read {source}: {error.strerror}"
        ) from None
    try:
        # Exactly certificates: a file that also holds a private key must not land world-readable on hosts.
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        certificates = []
    if not certificates or "PRIVATE KEY" in pem:
        raise ConfigError(
            f"{rel(path)}: not a PEM certificate, or it holds more than certificates (nginx_certbot_ca_certificate)"
        )
    return system_trust(pem, ACME_CA, ACME_CA_INSTALLED, "the ACME server's CA")


def system_trust(pem: str | bytes, path: str, installed: str, what: str) -> list:
    """A CA certificate trusted system-wide: written to `path` (Debian's local CA directory), the trust store
    rebuilt only when it differs from the copy last added (`installed`).

    Example: system_trust(pem, ACME_CA, ACME_CA_INSTALLED, "the ACME server's CA")
    """
    return [
        File(path, pem, name=f"Ensure {what}'s certificate is installed."),
        Guarded([cmd("update-ca-certificates"), cmd("install", "-D", "-m", "0644", path, installed)],
                unless=script('cmp -s -- "$1" "$2"', path, installed),
                name=f"Ensure the system trusts {what}."),
    ]
