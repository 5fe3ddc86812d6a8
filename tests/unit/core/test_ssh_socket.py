"""The TCP connection under every SSH login: Nagle's algorithm off (each command's small packets in a row
would otherwise wait for the host's delayed acknowledgement), and a refused one named as such. Loopback only."""

import socket

import pytest

from vigil.core.connectors.ssh import SSHTransport, no_delay_socket
from vigil.core.errors import UnreachableError
from vigil.core.inventory import Host


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def loopback(port: int) -> Host:
    return Host("web1", "127.0.0.1", port, "deploy", None, ("web",), 2, 30)


def test_the_socket_ssh_runs_over_sends_small_packets_at_once(listener):
    sock = no_delay_socket(loopback(listener.getsockname()[1]))
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.gettimeout() == 2  # the host's connect_timeout bounds the connection itself
    finally:
        sock.close()


def test_a_port_nobody_listens_on_is_named_unreachable(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    with pytest.raises(UnreachableError, match=f"cannot connect to 127.0.0.1:{port}: Connection refused"):
        SSHTransport(loopback(port), tmp_path / "known_hosts", "sandbox").connect()
