"""The sandbox CA: certificates that verify, reused while valid, reissued when the names change."""

import ssl
import subprocess

from cryptography import x509

from vigil.sandbox import ca


def test_host_certificate_verifies_against_the_ca_and_is_reused(tmp_path):
    issued = ca.host_certificate("vps1", ["10.213.1.2"], tmp_path)
    assert ca.host_certificate("vps1", ["10.213.1.2"], tmp_path) == issued  # a re-run changes nothing
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(issued.chain)
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(leaf)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    certificate = x509.load_pem_x509_certificate(issued.chain)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.213.1.2"]
    assert oct((tmp_path / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "hosts" / "vps1.key").stat().st_mode & 0o777) == "0o600"


def test_new_names_get_a_new_certificate(tmp_path):
    first = ca.host_certificate("vps1", ["10.213.1.2"], tmp_path)
    second = ca.host_certificate("vps1", ["app.sandbox"], tmp_path)
    assert first != second
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert context.cert_store_stats()["x509_ca"] == 1
