"""Writing inside a VPS's root: this machine's local CAs trusted there (its egress may re-sign TLS), never
a private key, never twice, never through a symlink out of the root."""

import pytest

from vigil.sandbox import ca
from vigil.sandbox.paths import SandboxError
from vigil.sandbox.rootfs import CA_BUNDLE, trust_local_cas

IMAGE_BUNDLE = "-----BEGIN CERTIFICATE-----\nimage's own\n-----END CERTIFICATE-----\n"


@pytest.fixture
def local(tmp_path):
    directory = tmp_path / "local-cas"
    directory.mkdir()
    proxy = ca.host_certificate("egress", ["egress.internal"], tmp_path / "ca")
    (directory / "egress-ca.crt").write_bytes(proxy.chain)
    (directory / "leaked.crt").write_bytes(proxy.chain + proxy.key)  # a key must never be copied anywhere
    (directory / "notes.txt").write_text("not a certificate")
    return directory


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / CA_BUNDLE).write_text(IMAGE_BUNDLE)
    return root


def test_the_machines_cas_are_trusted_inside_once_and_no_key_goes_in(local, root):
    assert trust_local_cas(root, local) == ["egress-ca.crt"]
    pem = (local / "egress-ca.crt").read_text()
    assert (root / "usr/local/share/ca-certificates/egress-ca.crt").read_text() == pem
    bundle = (root / CA_BUNDLE).read_text()
    assert bundle.startswith(IMAGE_BUNDLE) and bundle.count(pem.strip()) == 1
    assert "PRIVATE KEY" not in bundle and not (root / "usr/local/share/ca-certificates/leaked.crt").exists()
    trust_local_cas(root, local)  # a second VPS start from the same upper layer
    assert (root / CA_BUNDLE).read_text() == bundle


def test_a_machine_without_local_cas_changes_nothing(tmp_path, root):
    assert trust_local_cas(root, tmp_path / "none") == []
    assert (root / CA_BUNDLE).read_text() == IMAGE_BUNDLE


def test_a_symlink_out_of_the_root_is_not_written_through(local, root, tmp_path):
    (root / "usr").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "usr/local").symlink_to(outside)
    with pytest.raises(SandboxError, match="symlink"):
        trust_local_cas(root, local)
    assert list(outside.iterdir()) == []
