"""A local certificate authority for the sandbox: real HTTPS that tests and the demo verify.

No public CA can reach a VPS in a network namespace, so vigil plays one: a
root certificate kept on the control machine (`.vigil/sandbox/ca/`), and one
certificate per host, issued once and reused while it stays valid, so
re-running onboarding changes nothing on the hosts.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vigil.core.local_files import write_private
from vigil.sandbox.paths import CA_DIR

CA_DAYS = 3650
HOST_DAYS = 397  # the longest any browser accepts
RENEW_WITHIN_DAYS = 30


@dataclass(frozen=True)
class IssuedCertificate:
    """A host certificate chain (PEM, host then CA) and its private key (PEM)."""

    chain: bytes
    key: bytes


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def ensure_ca(directory: Path = CA_DIR) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The sandbox root CA, created on first use (key 0600, certificate ca.crt beside it)."""
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        return (x509.load_pem_x509_certificate(cert_path.read_bytes()),
                serialization.load_pem_private_key(key_path.read_bytes(), password=None))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vigil sandbox CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vigil sandbox (this machine only)")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate, key


def _names(certificate: x509.Certificate) -> set[str]:
    alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name) for name in alternative.get_values_for_type(x509.DNSName)} | {
        str(address) for address in alternative.get_values_for_type(x509.IPAddress)}


def host_certificate(host: str, names: list[str], directory: Path = CA_DIR) -> IssuedCertificate:
    """A certificate for `names` (DNS names or IP addresses) signed by the sandbox CA, reused while valid."""
    ca_certificate, ca_key = ensure_ca(directory)
    cert_path, key_path = directory / "hosts" / f"{host}.crt", directory / "hosts" / f"{host}.key"
    ca_pem = ca_certificate.public_bytes(serialization.Encoding.PEM)
    if cert_path.exists() and key_path.exists():
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        fresh = existing.not_valid_after_utc - _now() > datetime.timedelta(days=RENEW_WITHIN_DAYS)
        if fresh and _names(existing) == set(names) and existing.issuer == ca_certificate.subject:
            return IssuedCertificate(cert_path.read_bytes() + ca_pem, key_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    alternative = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=HOST_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / "hosts").mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(key_path, key_pem)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return IssuedCertificate(cert_path.read_bytes() + ca_pem, key_pem)
