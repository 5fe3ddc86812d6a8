"""Fan-out: one question on many hosts at once; every host answers, or is Unreachable with the reason."""

import contextlib
import textwrap
import threading

from vigil.core.commands import cmd
from vigil.core.connectors.local import LocalTransport
from vigil.core.errors import HostError, UnreachableError
from vigil.core.fanout import Unreachable, answered, on_hosts, unreachable
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
