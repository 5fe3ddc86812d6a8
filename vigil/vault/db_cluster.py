"""The database cluster's secrets, all derived from one secret of the env, DB_CLUSTER_SEED: its CA and each
member's certificate (etcd between members and to Patroni, Patroni's REST API, PostgreSQL's TLS), and the
passwords Patroni logs in with (streaming replication, pg_rewind, its REST API's unsafe endpoints).

Derived, so a fresh clone, a rebuilt member and every other member compute the same values: nothing is
written back into the encrypted secrets file, and a new seed replaces everything on the next provision.server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from vigil.core.commands import Secret
from vigil.operations.files import Directory, File
from vigil.vault.derived_ca import Issued, derive_ca, derive_certificate

SEED = "DB_CLUSTER_SEED"
AUTHORITY = "database cluster CA"
# The PostgreSQL roles Patroni uses, besides the postgres superuser it reaches over the local socket.
REPLICATION_USER, REWIND_USER = "replicator", "rewinder"
# Patroni's REST API: anyone may read its health; switching the leader needs this user's password.
REST_USER = "patroni"


def cluster_ca(seed: Secret, env: str) -> Issued:
    """The cluster's CA: the members trust it, and the web hosts check the database server against it."""
    return derive_ca(seed, env, AUTHORITY)


def member_certificate(seed: Secret, env: str, member: str, address: str) -> Issued:
    """`member`'s certificate, for its private address and loopback (the app reaches the leader over its web
    host's loopback, through HAProxy, and checks the name it dialled; Patroni reaches its own PostgreSQL as
    `localhost`, checking it too)."""
    return derive_certificate(seed, env, member, [address, "127.0.0.1"], AUTHORITY, ["localhost"])


def cluster_password(seed: Secret, env: str, purpose: str) -> Secret:
    """A 43-character password for `purpose` (a role or the REST API), the same wherever it is derived."""
    digest = hmac.new(seed.value.encode(), f"vigil {env} database cluster {purpose}".encode(), hashlib.sha256)
    return Secret(base64.urlsafe_b64encode(digest.digest()).decode().rstrip("="))


@dataclass(frozen=True)
class ClusterSecrets:
    """Everything a member needs, derived once per host plan."""

    replication: Secret
    rewind: Secret
    rest: Secret

    @classmethod
    def derive(cls, seed: Secret, env: str) -> "ClusterSecrets":
        return cls(*(cluster_password(seed, env, purpose) for purpose in (REPLICATION_USER, REWIND_USER, REST_USER)))


def fixed_salt(seed: Secret, env: str, role: str) -> bytes:
    """The SCRAM salt of `role`'s verifier: derived, so the verifier is the same on every run and a check can
    compare it with the stored one without the password (the password itself is 256 random bits)."""
    return hmac.new(seed.value.encode(), f"vigil {env} scram salt {role}".encode(), hashlib.sha256).digest()[:16]


def member_tls_files(seed: Secret, env: str, member: str, address: str, directory: str, group: str,
                     notify: tuple[str, ...], program: str) -> list:
    """`directory` (root's, `group` may read) with the cluster's CA, `member`'s certificate and its key
    (ca.crt, member.crt, member.key), for `program` (etcd, Patroni) running as `group`."""
    issued = member_certificate(seed, env, member, address)
    return [
        Directory(directory, owner="root", group=group, mode="0750"),
        File(f"{directory}/ca.crt", cluster_ca(seed, env).certificate, group=group, mode="0640", notify=notify,
             name=f"Ensure the database cluster's CA is what {program} trusts."),
        File(f"{directory}/member.crt", issued.certificate, group=group, mode="0640", notify=notify,
             name=f"Ensure {member}'s {program} certificate is in place."),
        File(f"{directory}/member.key", issued.key.value, group=group, mode="0640", secret=True, notify=notify,
             name=f"Ensure {member}'s {program} key is in place, for {program} alone."),
    ]
