"""roles/analytics: nginx's second access log, which never holds a full client address or a query string and
skips the host's own requests and the monitor host's probes; GoAccess's daily report; off when disabled."""

from __future__ import annotations

import pytest

from tests.support.inventories import layout, role_vars
from vigil.core.errors import ConfigError
from vigil.core.roles import load_role

ROLE = load_role("analytics")
SNIPPET = "/etc/nginx/conf.d/vigil-analytics.conf"
WITH_MONITOR = {"web": ["web1", "web2"], "db": ["db1"], "monitor": ["mon1"]}


def operations(groups=None, private=None, **overrides):
    inventory = layout(groups or WITH_MONITOR, private)
    return ROLE.tasks(ROLE, role_vars(ROLE, inventory, "web1", **overrides))


def content(ops, path: str) -> str:
    return next(op.content.decode() for op in ops if getattr(op, "path", "") == path)


def test_the_log_cuts_addresses_to_their_network_and_drops_query_strings():
    snippet = content(operations(), SNIPPET)
    assert '"~^(?<network>[0-9]+\\.[0-9]+\\.[0-9]+)\\.[0-9]+$" "${network}.0";' in snippet
    assert 'default "0.0.0.0";' in snippet  # anything else: no address at all
    assert '"$request_method $vigil_analytics_path $server_protocol"' in snippet and "$request " not in snippet
    assert "$remote_addr " not in snippet.split("log_format", 1)[1]  # the format never logs the full address
    assert snippet.rstrip().endswith(
        "access_log /var/log/nginx/analytics.log vigil_analytics if=$vigil_analytics_logged;")


@pytest.mark.parametrize(("groups", "private", "unlogged"), [
    (WITH_MONITOR, None, ["127.0.0.1", "::1", "203.0.113.4"]),
    (WITH_MONITOR, {"mon1": "10.0.0.4", "web1": "10.0.0.1"}, ["127.0.0.1", "::1", "10.0.0.4"]),  # as it probes
    ({"web": ["web1"], "db": ["web1"]}, None, ["127.0.0.1", "::1"]),
])
def test_the_hosts_own_requests_and_the_monitors_probes_are_no_visitors(groups, private, unlogged):
    snippet = content(operations(groups, private), SNIPPET)
    block = snippet.split("map $remote_addr $vigil_analytics_logged {", 1)[1].split("}", 1)[0]
    assert [line.split()[0] for line in block.strip().splitlines() if line.strip().endswith(" 0;")] == unlogged


def test_goaccess_anonymises_again_and_the_report_is_built_daily_keeping_copies():
    ops = operations(analytics_keep_reports=7, analytics_schedule="*-*-* 03:00:00 UTC")
    config = content(ops, "/etc/goaccess/vigil-analytics.conf")
    assert "anonymize-ip true\n" in config and "no-query-string true\n" in config
    assert "OnCalendar=*-*-* 03:00:00 UTC\n" in content(ops, "/etc/systemd/system/vigil-analytics.timer")
    assert "tail -n +8 " in content(ops, "/usr/local/sbin/vigil-analytics-report")
    assert any(getattr(op, "unit", "") == "vigil-analytics.timer" and op.enabled for op in ops)


def test_disabled_it_takes_the_log_and_the_timer_away():
    ops = operations(analytics_enabled=False)
    assert [type(op).__name__ for op in ops] == ["Absent", "SystemdUnit"]
    assert ops[0].path == SNIPPET and ops[1].enabled is False and ops[1].running is False


@pytest.mark.parametrize(("key", "value"), [
    ("analytics_schedule", "daily; rm -rf /"),
    ("analytics_title", 'Visitors"\nlog-file /etc/shadow'),
    ("analytics_keep_reports", 0),
])
def test_a_value_that_would_break_out_is_refused_by_its_key(key, value):
    with pytest.raises(ConfigError, match=key):
        operations(**{key: value})
