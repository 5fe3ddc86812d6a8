"""Fan-out: one question on many hosts at once; every host answers, or is Unreachable with the reason."""

import contextlib
import textwrap
import threading

import pytest

from vigil.core import fanout
from vigil.core.commands import cmd
from vigil.core.connectors.local import LocalTransport
from vigil.core.errors import HostError, UnreachableError
from vigil.core.fanout import Connections, Unreachable, answered, on_hosts, unreachable
from vigil.core.inventory import load_inventory
from vigil.core.redaction import MASK, REDACTOR

SECRET = "fan-out-test-secret-value"
REDACTOR.add(SECRET)


def inventory(tmp_path, count: int):
    hosts = ", ".join(f"h{index}: {{address: 10.0.0.{index}}}" for index in range(1, count + 1))
    (tmp_path / "staging.yml").write_text(textwrap.dedent(f"""
        defaults: {{user: deploy}}
        hosts: {{{hosts}}}
    """))
    return load_inventory("staging", tmp_path)


def test_every_host_answers_in_inventory_order_and_trouble_stays_with_its_host(tmp_path):
    hosts = inventory(tmp_path, 4)

    @contextlib.contextmanager
    def connector(host):
        if host.name == "h2":
            raise UnreachableError("h2", "connection refused")
        yield LocalTransport()

    def ask(transport, host):
        if host.name == "h3":
            raise HostError("h3", f"connection lost while sending {SECRET}")
        return transport.run(cmd("echo", host.name, sudo=False)).stdout.strip()

    answers = on_hosts(hosts, hosts.select(None), ask, connector=connector)
    assert list(answers) == ["h1", "h2", "h3", "h4"]
    assert answered(answers) == {"h1": "h1", "h4": "h4"}
    # The reason is redacted: a secret the failing step carried is not shown.
    assert unreachable(answers) == {"h2": "connection refused", "h3": f"connection lost while sending {MASK}"}
    assert isinstance(answers["h2"], Unreachable) and str(answers["h2"]) == "connection refused"


def test_hosts_are_asked_at_once(tmp_path):
    hosts = inventory(tmp_path, 3)
    # Every host waits for all three: asked one after another, the barrier would time out.
    barrier = threading.Barrier(3, timeout=10)

    def ask(transport, host):
        barrier.wait()
        return "met"

    answers = on_hosts(hosts, hosts.select(None), ask, connector=lambda host: contextlib.nullcontext(None))
    assert answers == {"h1": "met", "h2": "met", "h3": "met"}


class CountedLogin:
    """A connection that counts its logins and closes."""

    logins: list = []

    def __init__(self, inventory, host, admin):
        self.host, self.closed = host.name, False

    def connect(self):
        CountedLogin.logins.append(self.host)
        return self

    def close(self):
        self.closed = True


@pytest.mark.parametrize("max_idle, failing, logins", [
    (30.0, False, ["h1", "h2"]),            # the second run on each host reuses its connection
    (0.0, False, ["h1", "h2", "h1", "h2"]),  # idle too long (a build in between): logged in again
    (30.0, True, ["h1", "h2", "h1", "h2"]),  # a use that raised leaves nothing to reuse
])
def test_connections_are_kept_between_runs_of_one_task(tmp_path, monkeypatch, max_idle, failing, logins):
    monkeypatch.setattr(fanout, "connect", CountedLogin)
    monkeypatch.setattr(CountedLogin, "logins", [])
    two = inventory(tmp_path, 2)
    hosts = list(two.hosts.values())
    used = []

    def ask(transport, host):
        used.append(transport)
        if failing:
            raise UnreachableError(host.name, "the connection dropped")
        return "ok"

    with Connections(two, max_idle=max_idle) as connections:
        on_hosts(two, hosts, ask, connector=connections)
        on_hosts(two, hosts, ask, connector=connections)
    assert sorted(CountedLogin.logins) == sorted(logins)
    assert all(transport.closed for transport in used)  # every one closed at the end
