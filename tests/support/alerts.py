"""A stand-in for Slack and for a healthchecks-style heartbeat service, on the control machine at the
address the monitor host reaches it by (its gateway): the monitor host's Alertmanager posts to it exactly
as it would to them. The URLs live in a scratch copy of the sandbox secrets, so the developer's own
secrets are never touched.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from pathlib import Path

from tests.support.loopback import LoopbackServer
from tests.support.sandbox_hosts import MONITOR_HOST, REPO, invoke
from vigil.sandbox.paths import Vps

SLACK_PATH = "/services/T000/B000/e2e"
HEARTBEAT_PATH = "/ping/e2e-heartbeat"
# One line per alert in each message (roles/monitoring/files/vigil.tmpl): "FIRING HostDown on vps2: ...".
ALERT_LINE = re.compile(r"^(FIRING|RESOLVED) (\w+) on (\S+): ", re.M)


class AlertReceiver:
    """Keeps every message Alertmanager posts, and every heartbeat."""

    def __init__(self):
        self.server = LoopbackServer(answer=(200, b"ok"), host="0.0.0.0")
        base = f"http://{Vps.from_name(MONITOR_HOST).gateway}:{self.server.port}"
        self.slack_url, self.heartbeat_url = base + SLACK_PATH, base + HEARTBEAT_PATH

    def alerts(self, since: float = 0) -> list[tuple[float, str, str, str]]:
        """(when, FIRING or RESOLVED, alert name, host) of every alert line posted since `since`."""
        found = []
        for at, body in self.server.received(SLACK_PATH):
            text = "\n".join(attachment.get("text", "") for attachment in body.get("attachments", []))
            found += [(at, *match.groups()) for match in ALERT_LINE.finditer(text) if at >= since]
        return found

    def heartbeats(self, since: float = 0) -> list[float]:
        return [at for at, _ in self.server.received(HEARTBEAT_PATH) if at >= since]

    def wait_for(self, status: str, alert: str, host: str, since: float, timeout: float) -> float:
        """Seconds from `since` to the first such alert after it; fails after `timeout`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [at for at, *line in self.alerts(since) if line == [status, alert, host]]
            if found:
                return found[0] - since
            time.sleep(1)
        raise AssertionError(f"no {status} {alert} on {host} within {timeout} s; received: {self.alerts(since)}")

    def close(self) -> None:
        self.server.close()


def scratch_secrets(root: Path, **values: str) -> dict:
    """A copy of the sandbox secrets (and their key) in `root` with `values` set; the env for invoke."""
    shutil.copytree(REPO / "secrets", root / "secrets")
    (root / ".vigil" / "age").mkdir(parents=True)
    shutil.copy(REPO / ".vigil" / "age" / "sandbox.key", root / ".vigil" / "age" / "sandbox.key")
    extra = {"VIGIL_SECRETS": str(root / "secrets")}
    for key, value in values.items():
        assert invoke("secrets.set", key, extra_env=extra, input=value + "\n").code == 0
    return extra


def prometheus(sandbox, path: str, **params: str) -> dict:
    """The `data` of a Prometheus API GET on the monitor host, asked there (it listens on loopback only)."""
    query = " ".join(f"--data-urlencode {shlex.quote(f'{key}={value}')}" for key, value in params.items())
    answer = json.loads(sandbox.ssh(MONITOR_HOST, f"curl -sS -G http://127.0.0.1:9090/api/v1/{path} {query}"))
    assert answer["status"] == "success", answer
    return answer["data"]


def alert_state(sandbox, alert: str, host: str) -> str | None:
    """"firing", "pending" or None: what the monitor host's Prometheus makes of `alert` on `host` now."""
    states = [found["state"] for found in prometheus(sandbox, "alerts")["alerts"]
              if found["labels"]["alertname"] == alert and found["labels"].get("host") == host]
    return "firing" if "firing" in states else states[0] if states else None


def wait_for_alert_state(sandbox, alert: str, host: str, states: tuple, timeout: float = 90) -> str | None:
    """Wait until `alert` on `host` is in one of `states` (None: not pending or firing); returns it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = alert_state(sandbox, alert, host)
        if state in states:
            return state
        time.sleep(2)
    raise AssertionError(f"{alert} on {host} is {state}, not {states}, after {timeout} s")
