"""The stall watch: a connection that stops answering is closed after stall_timeout seconds, so whatever
waits on it fails at once; one that answers is left alone (a fake transport stands for paramiko's).
And what a command's stdin streams from a file, in bounded blocks."""

import os
import threading
import time
from types import SimpleNamespace

import paramiko
import pytest

from vigil.core.commands import cmd
from vigil.core.connectors.local import LocalTransport
from vigil.core.connectors.ssh import STDIN_BLOCK, SSHTransport
from vigil.core.connectors.stall import StallWatch
from vigil.core.errors import UnreachableError
from vigil.core.inventory import Host


class FakeTransport:
    """Answers global requests after `delay` seconds (None: never, a black-holed network)."""

    def __init__(self, delay: float | None):
        self.delay, self.active, self.closed = delay, True, threading.Event()
        self.requests = 0

    def is_active(self) -> bool:
        return self.active

    def global_request(self, kind, data=None, wait=True):
        self.requests += 1
        if self.delay is None:
            self.closed.wait()  # paramiko's wait ends only when the transport goes
            return None
        time.sleep(self.delay)
        return None

    def close(self):
        self.active = False
        self.closed.set()


@pytest.mark.parametrize("delay, stalled", [(None, True), (0.01, False)])
def test_a_silent_connection_is_closed_and_an_answering_one_kept(delay, stalled):
    transport = FakeTransport(delay)
    watch = StallWatch(transport, stall=0.3, interval=0.05).start()
    time.sleep(1.0)
    watch.stop()
    assert watch.stalled is stalled and transport.active is not stalled
    assert transport.requests >= 1


def test_a_watch_stopped_with_its_connection_does_not_close_it():
    transport = FakeTransport(None)
    watch = StallWatch(transport, stall=5, interval=0.05).start()
    time.sleep(0.1)
    watch.stop()
    transport.close()  # the connection closed by its owner: the pending probe ends, nothing stalled
    time.sleep(0.1)
    assert watch.stalled is False


class NoChannel:
    """A live connection on which the host never answers a request for a new channel."""

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout=None):
        raise paramiko.SSHException("Timeout opening channel.")


def test_a_channel_that_never_opens_is_said_to_be_a_stall_naming_the_host_and_command(tmp_path):
    host = Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30)
    ssh = SSHTransport(host, tmp_path / "known_hosts", "staging")
    ssh._connection = SimpleNamespace(transport=NoChannel(), close=lambda: None)
    with pytest.raises(UnreachableError) as lost:
        ssh.run(cmd("systemctl", "is-active", "nginx"))
    assert lost.value.reason == (
        "nothing came back from 10.0.0.11 for 5s when asked to run a command: the connection stalled (a dropped "
        "network, or a firewall dropping packets) during `sudo -n -H -- systemctl is-active nginx`")


class ClosedUnderTheCommand:
    """The channel opens, then the connection is closed before the command says how it ended."""

    def __init__(self):
        self.active = True

    def is_active(self) -> bool:
        return self.active

    def open_session(self, timeout=None):
        transport = self

        class Channel:
            def settimeout(self, seconds): pass
            def exec_command(self, command): pass
            def shutdown_write(self): pass
            def close(self): pass
            def recv_exit_status(self):
                transport.active = False
                return -1

        return Channel()


def test_a_command_cut_off_before_its_exit_status_is_a_lost_connection_not_a_failed_command(tmp_path, monkeypatch):
    host = Host("web1", "10.0.0.11", 22, "deploy", None, ("web",), 5, 30)
    ssh = SSHTransport(host, tmp_path / "known_hosts", "staging")
    ssh._connection = SimpleNamespace(transport=ClosedUnderTheCommand(), close=lambda: None)
    monkeypatch.setattr(ssh, "_collect", lambda channel, timeout, sink=None: (b"", b""))
    with pytest.raises(UnreachableError, match="the SSH connection was closed during `sudo -n -H -- true`"):
        ssh.run(cmd("true"))


class RecordingChannel:
    """A channel that records what is sent to the command's stdin and answers nothing, exit 0."""

    def __init__(self):
        self.blocks, self.eof_received, self.closed = [], False, False

    def settimeout(self, timeout):
        pass

    def exec_command(self, command):
        pass

    def sendall(self, data):
        self.blocks.append(bytes(data))

    def shutdown_write(self):
        self.eof_received = True

    def get_transport(self):
        return LiveTransport(self)

    def recv_ready(self):
        return False

    def recv_stderr_ready(self):
        return False

    def exit_status_ready(self):
        return True

    def recv_exit_status(self):
        return 0

    def close(self):
        self.closed = True


class LiveTransport:
    def __init__(self, channel):
        self.channel = channel

    def is_active(self):
        return True

    def open_session(self, timeout=None):
        return self.channel


class NeverEnding(RecordingChannel):
    """A command that runs on and on: no output, no end of file (a wait with no deadline of its own)."""

    def __init__(self):
        super().__init__()
        self.silent, self.unused = os.pipe()  # selectable, and nothing is ever written to it

    def shutdown_write(self):
        pass

    def fileno(self):
        return self.silent


def test_a_command_that_outlives_its_timeout_is_named_in_the_error(tmp_path):
    host = Host("db1", "10.0.0.13", 22, "deploy", None, ("db",), 5, 30)
    ssh, channel = SSHTransport(host, tmp_path / "known_hosts", "staging"), NeverEnding()
    ssh._connection = SimpleNamespace(transport=LiveTransport(channel), close=lambda: None)
    try:
        with pytest.raises(UnreachableError) as lost:
            ssh.run(cmd("systemctl", "start", "etcd.service"), timeout=0.2)
    finally:
        os.close(channel.silent), os.close(channel.unused)
    assert lost.value.host == "db1"
    assert lost.value.reason == ("a command did not finish within 0.2s "
                                 "during `sudo -n -H -- systemctl start etcd.service`")


def test_a_file_given_as_stdin_is_streamed_in_blocks_never_read_whole(tmp_path):
    """What backup.pull --to-host sends: a set larger than memory must go through in bounded blocks."""
    data = bytes(range(256)) * (3 * STDIN_BLOCK // 256 + 17)  # three blocks and a bit
    path = tmp_path / "set.tar"
    path.write_bytes(data)
    host = Host("backup1", "10.0.0.12", 22, "deploy", None, ("backup",), 5, 30)
    ssh, channel = SSHTransport(host, tmp_path / "known_hosts", "staging"), RecordingChannel()
    ssh._connection = SimpleNamespace(transport=LiveTransport(channel), close=lambda: None)
    assert ssh.run(cmd("sh", "-c", "cat > /dev/null", stdin=path)).ok
    assert b"".join(channel.blocks) == data and max(map(len, channel.blocks)) == STDIN_BLOCK
    assert len(channel.blocks) == 4


def test_the_local_connector_streams_a_file_given_as_stdin(tmp_path):
    path = tmp_path / "set.tar"
    path.write_bytes(b"x" * (STDIN_BLOCK + 5))
    answer = LocalTransport().run(cmd("wc", "-c", sudo=False, stdin=path))
    assert answer.ok and answer.stdout.strip() == str(STDIN_BLOCK + 5)
