"""A local ACME server (Debian's pebble, Let's Encrypt's test server) for certbot on a sandbox web host,
where Let's Encrypt itself cannot reach: its DNS helper (pebble-challtestsrv) answers every name with the
web host's address, so it also stands in for a domain already pointed at that host.

Example:
    with local_acme("vps3", tmp_dir) as server:
        inventory vars: nginx_certbot_server=server["directory"], nginx_certbot_ca_certificate=CA
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.support.sandbox_hosts import REPO
from vigil.sandbox import ca
from vigil.sandbox.paths import Vps

CA = REPO / ".vigil" / "sandbox" / "ca" / "ca.crt"
# Loopback ports of the local ACME server's helpers; the directory listens on the web host's gateway.
ACME_PORT, ACME_MANAGEMENT, DNS_PORT, DNS_MANAGEMENT = 14000, 15000, 8053, 8055
# Where env.check --resolver asks: the DNS helper, which points every name at the web host.
RESOLVER = f"127.0.0.1:{DNS_PORT}"


def wait_for_port(address: str, port: int, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{process.args[0]} did not listen on {address}:{port} within 30 s")


@contextlib.contextmanager
def local_acme(web_host: str, directory: Path):
    """pebble on `web_host`'s gateway, resolving every name to that host through pebble-challtestsrv.

    Its HTTPS certificate comes from the sandbox CA, which the web host is told to trust
    (nginx_certbot_ca_certificate); it validates HTTP-01 on port 80 of the web host, for real.
    Yields {"directory": its ACME URL, "root": the root its certificates chain to, "log": its log}.
    """
    if not shutil.which("pebble") or not shutil.which("pebble-challtestsrv"):
        pytest.fail("pebble is missing: run scripts/bootstrap (it installs Debian's pebble package)")
    gateway, web = Vps.from_name(web_host).gateway, Vps.from_name(web_host).address
    issued = ca.host_certificate("acme-server", [gateway, "127.0.0.1"])
    (directory / "cert.pem").write_bytes(issued.chain)
    (directory / "key.pem").write_bytes(issued.key)
    (directory / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"{gateway}:{ACME_PORT}", "managementListenAddress": f"127.0.0.1:{ACME_MANAGEMENT}",
        "certificate": str(directory / "cert.pem"), "privateKey": str(directory / "key.pem"),
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    processes = []
    try:
        dns_log = directory / "challtestsrv.log"
        dns = subprocess.Popen(["pebble-challtestsrv", "-defaultIPv4", web, "-defaultIPv6", "",
                                "-dns01", f"127.0.0.1:{DNS_PORT}", "-management", f"127.0.0.1:{DNS_MANAGEMENT}",
                                "-http01", "", "-https01", "", "-tlsalpn01", ""],
                               stdout=open(dns_log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        processes.append(dns)
        wait_for_port("127.0.0.1", DNS_MANAGEMENT, dns, dns_log)
        pebble_log = directory / "pebble.log"
        pebble = subprocess.Popen(
            ["pebble", "-config", str(directory / "pebble.json"), "-dnsserver", f"127.0.0.1:{DNS_PORT}"],
            env={"PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
            stdout=open(pebble_log, "w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        processes.append(pebble)
        wait_for_port(gateway, ACME_PORT, pebble, pebble_log)
        root = requests.get(f"https://127.0.0.1:{ACME_MANAGEMENT}/roots/0", verify=str(CA), timeout=10).text
        yield {"directory": f"https://{gateway}:{ACME_PORT}/dir", "root": root, "log": pebble_log}
    finally:
        for process in processes:  # only what this fixture started, by its own handle
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


