"""The SSH connector: the only module that talks SSH (Fabric, paramiko).

One connection per host for the whole run. Host keys are pinned: the
inventory's known_hosts file is the only source of trust and paramiko's
RejectPolicy refuses anything else, before authentication and before any
command. Sudo never prompts. Every wait has a deadline.
"""

from __future__ import annotations

import base64
import hashlib
import select
import socket
import time
from pathlib import Path

import paramiko
from fabric import Config, Connection

from vigil.core.commands import Command
from vigil.core.connectors import Result
from vigil.core.connectors.stall import StallWatch
from vigil.core.errors import HostError, HostKeyError, UnreachableError
from vigil.core.inventory import Host
from vigil.core.paths import rel

KEEPALIVE_SECONDS = 5
# A file streamed to a command's stdin goes in blocks of this many bytes: memory stays flat whatever its size.
STDIN_BLOCK = 1 << 20
SUDO_PASSWORD_MARKERS = ("a password is required", "a terminal is required")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key, e.g. SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def public_key_of(private_key: Path) -> str:
    """`type base64` of the public half of a private key file (to check it is among the authorized ones)."""
    key = paramiko.PKey.from_path(str(private_key))
    return f"{key.get_name()} {key.get_base64()}"


def known_hosts_name(host: Host) -> str:
    """How a host is written in known_hosts: `address`, or `[address]:port` off port 22."""
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


class PinnedKeyPolicy(paramiko.RejectPolicy):
    """RejectPolicy that remembers the refused key, so the error can show its fingerprint."""

    def __init__(self):
        self.offered: paramiko.PKey | None = None

    def missing_host_key(self, client, hostname, key):
        self.offered = key
        super().missing_host_key(client, hostname, key)


def _trust_hint(host: Host, env: str) -> str:
    return f"if you expect this key, run: invoke provision.trust --env={env} --host={host.name}"


class SSHTransport:
    """An SSH connection to one host, opened once and reused for every command of the run.

    Example:
        with SSHTransport(host, inventory.known_hosts, env="staging") as ssh:
            ssh.run(cmd("uptime"))
    """

    def __init__(self, host: Host, known_hosts: Path, env: str):
        self.host = host
        self.known_hosts = known_hosts
        self.env = env
        self._connection: Connection | None = None
        self._policy: PinnedKeyPolicy | None = None
        self._watch: StallWatch | None = None
        self.login_user = host.user

    def _client(self) -> tuple[paramiko.SSHClient, PinnedKeyPolicy]:
        client = paramiko.SSHClient()
        # Only the inventory's file counts: ~/.ssh/known_hosts is not loaded.
        if self.known_hosts.exists():
            pinned = paramiko.HostKeys(str(self.known_hosts))
            for name, keys in pinned.items():
                for key_type, key in keys.items():
                    client.get_host_keys().add(name, key_type, key)
        policy = PinnedKeyPolicy()
        client.set_missing_host_key_policy(policy)
        return client, policy

    def _new_connection(self, user: str) -> Connection:
        host = self.host
        connect_kwargs = {
            # paramiko takes fractional seconds; Fabric's own connect_timeout would round them down to int.
            "timeout": host.connect_timeout,
            "banner_timeout": host.connect_timeout,
            "auth_timeout": host.connect_timeout,
            # Only the inventory's key: no agent, no ~/.ssh/id_* guessing.
            "look_for_keys": False,
            "allow_agent": False,
        }
        if host.ssh_key is not None:
            connect_kwargs["key_filename"] = [str(host.ssh_key)]
        # An explicit empty SSHConfig keeps ~/.ssh/config and /etc/ssh/ssh_config out:
        # a HostName, ProxyJump or ProxyCommand there would bypass the pinned key.
        config = Config(ssh_config=paramiko.SSHConfig())
        connection = Connection(host.address, user=user, port=host.port, config=config, gateway=False,
                                connect_kwargs=connect_kwargs)
        client, self._policy = self._client()
        connection.client = client
        return connection

    def connect(self) -> "SSHTransport":
        """Log in as the host's user; on a fresh server that has no such user yet, as its bootstrap user."""
        host = self.host
        try:
            return self._connect_as(host.user)
        except UnreachableError as error:
            if (
                not host.bootstrap_user
                or host.bootstrap_user == host.user
                or not getattr(error, "authentication", False)
            ):
                raise
            try:
                return self._connect_as(host.bootstrap_user)
            except UnreachableError as bootstrap_error:
                # Both refused: say both, the first is the one that matters on an onboarded host.
                raise UnreachableError(host.name, f"{error.reason}; the bootstrap user {host.bootstrap_user} "
                                                  f"was refused too: {bootstrap_error.reason}") from None

    def _connect_as(self, user: str) -> "SSHTransport":
        host = self.host
        if host.ssh_key is not None and not host.ssh_key.exists():
            raise HostError(host.name, f"SSH key file {host.ssh_key} does not exist")
        connection = self._new_connection(user)
        policy = self._policy
        where = f"{host.address}:{host.port}"
        try:
            connection.connect_kwargs["sock"] = no_delay_socket(host)
            connection.open()
        except paramiko.BadHostKeyException as error:
            raise HostKeyError(
                host.name,
                f"host key CHANGED at {where}: pinned {fingerprint(error.expected_key)} in "
                f"{rel(self.known_hosts)}, offered {fingerprint(error.key)}; refusing to connect "
                f"(a reinstalled server or an attack); {_trust_hint(host, self.env)}",
            ) from None
        except paramiko.SSHException as error:
            if policy.offered is not None:
                raise HostKeyError(
                    host.name,
                    f"host key for {where} is not pinned in {rel(self.known_hosts)}; it offered "
                    f"{policy.offered.get_name()} {fingerprint(policy.offered)}; {_trust_hint(host, self.env)}",
                ) from None
            if isinstance(error, paramiko.AuthenticationException):
                refused = UnreachableError(host.name, f"authentication as {user} at {where} failed: {error}")
                refused.authentication = True
                raise refused from None
            raise UnreachableError(host.name, f"SSH to {where} failed: {error}") from None
        except (socket.timeout, TimeoutError):
            raise UnreachableError(host.name, f"no answer from {where} within {host.connect_timeout:g}s") from None
        except OSError as error:
            raise UnreachableError(host.name, f"cannot connect to {where}: {error.strerror or error}") from None
        except Exception as error:  # paramiko and Fabric raise more kinds than they document
            raise UnreachableError(host.name, f"SSH to {where} failed: {type(error).__name__}: {error}") from None
        connection.transport.set_keepalive(KEEPALIVE_SECONDS)
        self._watch = StallWatch(connection.transport, host.stall_timeout).start()
        self._connection = connection
        self.login_user = user
        return self

    def forward_local(self, local_port: int, remote_port: int):
        """A context manager: 127.0.0.1:local_port on this machine reaches 127.0.0.1:remote_port on the host
        through this connection (Fabric's forward_local), until it exits. For pages a host serves on its
        loopback only (the monitor host's Prometheus and Alertmanager).
        """
        if self._connection is None:
            raise RuntimeError("connect() first")
        return self._connection.forward_local(local_port=local_port, remote_port=remote_port,
                                              remote_host="127.0.0.1", local_host="127.0.0.1")

    def reconnect(self) -> "SSHTransport":
        """A new connection as the same user, after the old one was lost (a stall closed it, or the
        network dropped it)."""
        self.close()
        return self._connect_as(self.login_user)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self):
        return self.connect() if self._connection is None else self

    def __exit__(self, *exc):
        self.close()

    def run(self, command: Command, timeout: float | None = None, sink=None) -> Result:
        """Run `command`, feeding its stdin, and wait at most `timeout` seconds for it.

        A dropped connection or a timeout raises UnreachableError; a sudo that
        wants a password raises HostError. A non-zero exit is a Result, not an error.
        sink: a callable given the raw stdout as it arrives (a download of any size);
        Result.stdout is then empty.
        """
        if self._connection is None:
            raise RuntimeError("connect() first")
        host = self.host
        timeout = timeout or host.command_timeout
        transport = self._connection.transport
        if transport is None or not transport.is_active():
            raise self._lost("the SSH connection was lost", command)
        channel = None
        try:
            channel = transport.open_session(timeout=host.connect_timeout)
            # Bounds every blocking send and receive, including feeding stdin to a stalled host.
            channel.settimeout(timeout)
            channel.exec_command(command.render(self.login_user))
            if isinstance(command.stdin, Path):
                with open(command.stdin, "rb") as stream:
                    for block in iter(lambda: stream.read(STDIN_BLOCK), b""):
                        channel.sendall(block)
            elif command.stdin is not None:
                channel.sendall(command.stdin)
            channel.shutdown_write()
            try:
                stdout, stderr = self._collect(channel, timeout, sink)
            except UnreachableError as error:
                # A host that ran out of time names the command that took it: "a command" alone leaves a
                # person guessing which of a run's hundred steps hung.
                raise UnreachableError(host.name, f"{error.reason} during `{command.display(self.login_user)}`"
                                       ) from None
            status = channel.recv_exit_status()
            if status == -1 and not transport.is_active():
                # Closed under the command (the stall watch, a dropped network): it never said how it ended.
                raise EOFError()
        except (paramiko.SSHException, EOFError, OSError) as error:
            # paramiko's EOFError says nothing ("EOFError: "): a person reads what happened instead.
            detail = getattr(error, "strerror", None) or str(error)
            what = "the SSH connection was closed" if isinstance(error, EOFError) or not detail else (
                f"the SSH connection failed: {detail}")
            if channel is None and "Timeout opening channel" in detail:
                # The host did not even answer a new command's request: the same silence the stall watch ends.
                what = (f"nothing came back from {host.address} for {host.connect_timeout:g}s when asked to run a "
                        "command: the connection stalled (a dropped network, or a firewall dropping packets)")
            raise self._lost(what, command) from None
        finally:
            if channel is not None:
                channel.close()
        # Raw output: facts parse checksums and base64 from it. Whatever displays it redacts it.
        stdout = stdout.decode(errors="replace")
        stderr = stderr.decode(errors="replace")
        user = self.login_user
        if status != 0 and command.render(user).startswith("sudo ") and any(m in stderr for m in SUDO_PASSWORD_MARKERS):
            raise HostError(
                host.name,
                f"sudo asks {user} for a password; vigil never types one: give {user} "
                "passwordless sudo (NOPASSWD) or connect as root",
            )
        return Result(status, stdout, stderr)

    def _lost(self, what: str, command: Command | None) -> UnreachableError:
        """The error for a connection that went away: a stall (the watch gave up on a silent network)
        says how long nothing came back; the command it cut comes last, a recap shows its start."""
        if self._watch is not None and self._watch.stalled:
            what = (f"nothing came back from {self.host.address} for {self.host.stall_timeout:g}s: the connection "
                    "stalled (a dropped network, or a firewall dropping packets) and was closed")
        during = f" during `{command.display(self.login_user)}`" if command is not None else ""
        return UnreachableError(self.host.name, what + during)

    def _collect(self, channel: paramiko.Channel, timeout: float, sink=None) -> tuple[bytes, bytes]:
        # Read until the server's EOF, not until the exit status: sshd may send
        # the status while output is still on its way, and stopping there cuts it.
        deadline = time.monotonic() + timeout
        stdout, stderr = bytearray(), bytearray()
        transport = channel.get_transport()
        while True:
            drained = False
            while channel.recv_ready():
                chunk = channel.recv(65536)
                if sink is None:
                    stdout += chunk
                else:
                    sink(chunk)
                drained = True
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)
                drained = True
            if (
                (channel.eof_received or channel.closed)
                and not channel.recv_ready()
                and not channel.recv_stderr_ready()
            ):
                break
            if not transport.is_active():
                raise self._lost("the SSH connection dropped while a command ran", None)
            if time.monotonic() > deadline:
                raise UnreachableError(self.host.name, f"a command did not finish within {timeout:g}s")
            if not drained:
                # The channel's pipe signals new output on either stream and EOF.
                select.select([channel], [], [], 0.05)
        while not channel.exit_status_ready():
            if time.monotonic() > deadline or not transport.is_active():
                raise UnreachableError(self.host.name, f"no exit status within {timeout:g}s")
            channel.status_event.wait(0.05)
        return bytes(stdout), bytes(stderr)


def no_delay_socket(host: Host) -> socket.socket:
    """The TCP connection to the host's sshd, with Nagle's algorithm off, as OpenSSH's own client sets it.

    SSH sends small packets in a row (a command's request, its stdin, its end; the handshake's last steps):
    with Nagle each waited for the host's delayed acknowledgement, about 40 ms each time. Measured on a
    sandbox VPS: a login 67 to 23 ms, `true` 47 to 3 ms, a deploy's preflight 60 to 15 ms.
    """
    sock = socket.create_connection((host.address, host.port), timeout=host.connect_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def scan_host_key(host: Host) -> paramiko.PKey:
    """The host key `host` offers, fetched without authenticating or trusting it (for provision.trust)."""
    try:
        sock = socket.create_connection((host.address, host.port), timeout=host.connect_timeout)
    except OSError as error:
        raise UnreachableError(
            host.name, f"cannot connect to {host.address}:{host.port}: {error.strerror or error}"
        ) from None
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = host.connect_timeout
        transport.start_client(timeout=host.connect_timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError) as error:
        raise UnreachableError(host.name, f"SSH handshake with {host.address}:{host.port} failed: {error}") from None
    finally:
        transport.close()
