"""SSH key pairs derived from one secret of the env, so both ends of a host-to-host login know each
other's key from the secrets alone, and provisioning needs no round trip between hosts.

A key is ECDSA P-256 written as PEM (OpenSSH reads it): unlike OpenSSH's own format, whose check
bytes are random, the same secret always gives the same bytes, so a second run changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vigil.core.commands import Secret

# The order of P-256's group: a private scalar is 1..N-1.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class DerivedKey:
    private_pem: Secret
    public_line: str  # "ecdsa-sha2-nistp256 AAAA... COMMENT"


def derive_ssh_key(seed: Secret, purpose: str) -> DerivedKey:
    """The key pair for `purpose` (one per direction of a login) from `seed`; another purpose gives an
    unrelated key, and no key reveals the seed.

    Example: derive_ssh_key(vars.secret("PGBACKREST_SSH_SEED"), "pgbackrest repository to database")
    """
    material = HKDF(algorithm=hashes.SHA256(), length=48, salt=b"vigil ssh key", info=purpose.encode()).derive(
        seed.value.encode())
    key = ec.derive_private_key(int.from_bytes(material, "big") % (P256_ORDER - 1) + 1, ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return DerivedKey(Secret(pem), f"{public.decode()} vigil {purpose}")
