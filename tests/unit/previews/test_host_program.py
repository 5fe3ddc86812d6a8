"""The preview host's program, its parts that need no host: whether nginx serves the preview's site yet, told
by the certificate a handshake for its name gets (a TLS server on loopback stands in for nginx)."""

import socket
import ssl
import threading

import pytest

from vigil.previews import host_program
from vigil.sandbox import ca

NAME = "feature-x-0a1b2c3d.preview.example.org"


class Nginx:
    """Answers handshakes on a loopback port with the env's certificate `before` times, then the preview's."""

    def __init__(self, tmp_path, before: int):
        self.files = {}
        for label, names in (("env", ["203.0.113.7"]), ("preview", ["*.preview.example.org"])):
            issued = ca.host_certificate(label, names, tmp_path / "ca")
            (tmp_path / f"{label}.pem").write_bytes(issued.chain)
            (tmp_path / f"{label}.key").write_bytes(issued.key)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tmp_path / f"{label}.pem", tmp_path / f"{label}.key")
            self.files[label] = context
        self.before, self.listener = before, socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        handshakes = 0
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            context = self.files["env" if handshakes < self.before else "preview"]
            handshakes += 1
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass


@pytest.mark.parametrize("before, served", [(0, True), (3, True), (10**6, False)])
def test_the_preview_is_served_once_its_name_gets_its_own_certificate(tmp_path, before, served):
    nginx = Nginx(tmp_path, before)
    preview = host_program.Preview.__new__(host_program.Preview)
    preview.config = {"served": {"name": NAME, "certificate": str(tmp_path / "preview.pem")}}
    try:
        if served:
            preview.wait_until_served(timeout=20, address=nginx.address)
        else:
            with pytest.raises(host_program.Failed, match="nginx serving the preview's site") as failed:
                preview.wait_until_served(timeout=1, address=nginx.address)
            assert failed.value.detail == f"{NAME} still gets another certificate after 1s"
    finally:
        nginx.listener.close()
