"""An env's private certificate authority, derived from one secret of the env: the CA and every host's
certificate come out the same from the secrets alone, on any control machine, with no CA key file to
keep or share, and a second run changes nothing (the keys are derived, the validity fixed, the serial a
hash, the ECDSA signatures deterministic, RFC 6979).

For traffic between the env's own hosts only (the journal shipped to the monitor host): no browser
sees these certificates. A new seed makes a new CA, and every certificate follows on the next
provision.server.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vigil.core.commands import Secret
from vigil.vault.derived_keys import P256_ORDER

# Fixed, so the same seed always gives the same bytes; a seed is rotated well before the end.
NOT_BEFORE = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2036, 1, 1, tzinfo=datetime.timezone.utc)


@dataclass(frozen=True)
class Issued:
    """A certificate (PEM) and its private key (PEM, a Secret: masked wherever it could show)."""

    certificate: str
    key: Secret


def _key(seed: Secret, purpose: str) -> ec.EllipticCurvePrivateKey:
    material = HKDF(algorithm=hashes.SHA256(), length=48, salt=b"vigil private ca", info=purpose.encode()).derive(
        seed.value.encode())
    return ec.derive_private_key(int.from_bytes(material, "big") % (P256_ORDER - 1) + 1, ec.SECP256R1())


def _serial(seed: Secret, purpose: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{purpose}\0{seed.value}".encode()).digest()[:16], "big") >> 1


def _pem(key: ec.EllipticCurvePrivateKey) -> Secret:
    return Secret(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode())


def _name(common_name: str, env: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"vigil {env}")])


def derive_ca(seed: Secret, env: str, authority: str = "private CA") -> Issued:
    """The env's CA: its certificate and key. `authority` names it (each seed's CA its own name, so a host
    that trusts two of them never takes one for the other).

    Example: derive_ca(vars.secret("MONITORING_TLS_SEED"), "production").certificate
    """
    key = _key(seed, f"{env} ca")
    name = _name(f"vigil {env} {authority}", env)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(_serial(seed, f"{env} ca")).not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return Issued(certificate.public_bytes(serialization.Encoding.PEM).decode(), _pem(key))


def derive_certificate(seed: Secret, env: str, host: str, addresses: list[str] = (),
                       authority: str = "private CA", names: list[str] = ()) -> Issued:
    """Inventory host `host`'s certificate from the env's CA, for TLS as a server (at `addresses`, its IPs)
    and as a client (its common name is the host's inventory name, which the peer reads); `names`: more DNS
    names it answers for.

    Example: derive_certificate(seed, "production", "web1", ["10.0.0.11"])
    """
    ca = derive_ca(seed, env, authority)
    ca_key = _key(seed, f"{env} ca")
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate.encode())
    key = _key(seed, f"{env} host {host}")
    names = ([x509.DNSName(name) for name in (host, *names)]
             + [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses])
    certificate = (
        x509.CertificateBuilder().subject_name(_name(host, env)).issuer_name(ca_certificate.subject)
        .public_key(key.public_key()).serial_number(_serial(seed, f"{env} host {host}"))
        .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return Issued(certificate.public_bytes(serialization.Encoding.PEM).decode(), _pem(key))
