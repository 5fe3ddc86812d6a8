"""roles/monitoring and roles/exporters: the alert rules under promtool (each rule's firing and quiet
cases), and the configs and operations each layout gets.

promtool comes from Debian's archive (scripts/bootstrap unpacks it into .vigil/tools).
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.support.inventories import layout
from vigil.core.errors import ConfigError
from vigil.core.paths import REPO_ROOT
from vigil.core.playbook import build_host_plans
from vigil.core.yaml_loader import load_yaml

PROMTOOL = REPO_ROOT / ".vigil" / "tools" / "promtool"
CASES = load_yaml(REPO_ROOT / "tests" / "unit" / "roles" / "cases" / "alert_rules.yml")
MONITORED = {"web": ["web1", "web2"], "db": ["db1"], "backup": ["backup1"], "monitor": ["mon1"]}
WEBHOOK, HEARTBEAT = "https://hooks.example.test/services/T0/B0/secret-token", "https://hc.example.test/ping/uuid"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: run scripts/bootstrap")
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60)


def monitor_plan(groups=None, secrets=None, host="mon1", web_vars=None, **cli_vars):
    """The operations onboarding gives `host` (the monitor by default) from the exporters and monitoring roles.

    web_vars: inventory vars of every web host (how roles/nginx serves their sites).
    """
    values = {"ALERT_WEBHOOK_URL": WEBHOOK, "ALERT_HEARTBEAT_URL": HEARTBEAT} if secrets is None else secrets
    groups = groups or MONITORED
    inventory = layout(groups, host_vars={name: dict(web_vars or {}) for name in groups.get("web", [])})
    plans = build_host_plans(inventory, "onboard", host, cli_vars, lambda: values,
                             only_roles=["exporters", "monitoring"])
    return plans[0].operations


def written(operations, path: str):
    return next(op.content.decode() for op in operations if getattr(op, "path", "") == path)


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory):
    """The alert rules as the monitor host gets them, with the role's defaults."""
    path = tmp_path_factory.mktemp("rules") / "vigil-alert-rules.yml"
    path.write_text(written(monitor_plan(), "/etc/prometheus/vigil-alert-rules.yml"))
    return path


def test_the_rules_pass_promtool_check(rules_file):
    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def rules(rules_file) -> list[dict]:
    """The alerting rules (recording rules left out)."""
    return [rule for group in yaml.safe_load(rules_file.read_text())["groups"] for rule in group["rules"]
            if "alert" in rule]


def test_every_alert_has_cases_that_fire_and_cases_that_do_not(rules_file):
    alerts = {rule["alert"] for rule in rules(rules_file)}
    firing = {case["alert"] for case in CASES if case["fires"]}
    quiet = {case["alert"] for case in CASES if not case["fires"]}
    assert alerts == firing
    # Watchdog fires by design, always.
    assert alerts - {"Watchdog"} == quiet


def test_every_alert_that_pages_says_what_to_do_and_where_the_runbook_is(rules_file):
    for rule in rules(rules_file):
        if rule["labels"]["severity"] in ("none", "heartbeat"):
            continue
        annotations = rule["annotations"]
        assert {"summary", "action", "runbook"} <= set(annotations), rule["alert"]
        assert "{{ $labels.host }}" in annotations["summary"], rule["alert"]
        runbook, _, anchor = annotations["runbook"].partition("#")
        assert (REPO_ROOT / runbook).is_file(), f"{rule['alert']}: {runbook} does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (REPO_ROOT / runbook).read_text(), re.M)
            assert anchor in [heading.lower().replace(" ", "-") for heading in headings], rule["alert"]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_alert_rule(case, rules_file, tmp_path):
    """One case through `promtool test rules`: exactly the expected alerts fire at `at`."""
    # Annotations are left out here: promtool compares them whole, and the cases are about when a rule fires.
    bare = yaml.safe_load(rules_file.read_text())
    for group in bare["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(bare))
    interval = case.get("interval", "15s")
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s" if interval == "15s" else interval,
        "tests": [{
            "interval": interval,
            "input_series": [{"series": series, "values": values} for series, values in case["series"].items()],
            "alert_rule_test": [{"eval_time": case["at"], "alertname": case["alert"],
                                 "exp_alerts": [{"exp_labels": {key: str(value) for key, value in labels.items()}}
                                                for labels in case["fires"]]}],
        }],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([str(PROMTOOL), "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60) if PROMTOOL.exists() else pytest.fail("run scripts/bootstrap")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_alert_message_carries_the_host_summary_and_runbook(rules_file, tmp_path):
    """The annotations as Prometheus renders them for one firing alert: what the message says."""
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": [str(rules_file)],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s",
                   "input_series": [{"series": 'probe_success{job="site", service="backend", host="web1", '
                                               'instance="https://203.0.113.1/api/health"}', "values": "0x10"}],
                   "alert_rule_test": [{"eval_time": "1m", "alertname": "BackendDown", "exp_alerts": [{
                       "exp_labels": {"severity": "page", "scope": "web", "job": "site", "service": "backend",
                                      "host": "web1", "instance": "https://203.0.113.1/api/health"},
                       "exp_annotations": {
                           "summary": "web1's API (/api/health over HTTPS) fails from outside.",
                           "action": "invoke incident.run backend-down --env=sandbox (restarts the live color, "
                                     "rolls back if that does not help).",
                           "runbook": "playbooks/runbooks/backend-down.yml"}}]}]}],
    }))
    result = promtool("test", "rules", str(tmp_path / "test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runbook_links_take_a_base_url():
    operations = monitor_plan(monitoring_runbook_base_url="https://git.example.test/ops/vigil/blob/main/")
    rendered = written(operations, "/etc/prometheus/vigil-alert-rules.yml")
    assert 'runbook: "https://git.example.test/ops/vigil/blob/main/playbooks/runbooks/backend-down.yml"' in rendered


@pytest.mark.parametrize("key, value, message", [
    ("monitoring_api_error_ratio", 5, "expected a share between 0 and 1"),
    ("monitoring_api_min_requests_per_second", "x", "expected a number >= 0"),
    ("monitoring_runbook_base_url", "docs", "does not match"),
    ("monitoring_scrape_timeout", 20, "longer than the scrape interval"),
    ("monitoring_down_for_seconds", 30, "would page for its services before it pages for the host"),
    ("monitoring_boot_grace_seconds", -1, "monitoring_boot_grace_seconds"),
])
def test_bad_settings_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(key)) as error:
        monitor_plan(**{key: value})
    assert message in str(error.value)


# --- what each host gets ------------------------------------------------------------------------------

def prometheus_targets(operations) -> dict[str, list[tuple[str, dict]]]:
    config = yaml.safe_load(written(operations, "/etc/prometheus/prometheus.yml"))
    return {job["job_name"]: [(target, group["labels"]) for group in job["static_configs"]
                              for target in group["targets"]] for job in config["scrape_configs"]}


def test_prometheus_scrapes_each_exporter_where_it_runs_and_probes_each_site_from_outside():
    targets = prometheus_targets(monitor_plan(MONITORED, host="mon1"))
    host_of = {name: f"203.0.113.{index}" for index, name in enumerate(["web1", "web2", "db1", "backup1", "mon1"], 1)}
    assert [target for target, _ in targets["node"]] == [f"{host_of[name]}:9100" for name in host_of]
    assert [target for target, _ in targets["postgres"]] == [f"{host_of['db1']}:9187"]
    assert [target for target, _ in targets["mtail"]] == [f"{host_of[name]}:3903" for name in ("web1", "web2")]
    assert [(target, labels["service"], labels["__param_module"]) for target, labels in targets["site"]] == [
        ("https://203.0.113.1/", "frontend", "site_web1"), ("https://203.0.113.1/api/health", "backend", "site_web1"),
        ("https://203.0.113.2/", "frontend", "site_web2"), ("https://203.0.113.2/api/health", "backend", "site_web2")]
    assert [labels["host"] for _, labels in targets["ssh"]] == list(host_of)


def test_the_probes_send_the_sites_name_and_trust_its_ca():
    operations = monitor_plan(web_vars={"nginx_server_name": "pray.example.test", "nginx_tls": "local-ca"})
    modules = yaml.safe_load(written(operations, "/etc/prometheus/blackbox.yml"))["modules"]
    site = modules["site_web1"]["http"]
    assert site["headers"] == {"Host": "pray.example.test"}
    assert site["tls_config"] == {"server_name": "pray.example.test", "ca_file": "/etc/prometheus/vigil-site-ca.crt"}
    assert "BEGIN CERTIFICATE" in written(operations, "/etc/prometheus/vigil-site-ca.crt")
    assert modules["ssh"]["tcp"]["query_response"] == [{"expect": "^SSH-2.0-"}]


def test_lets_encrypt_sites_are_checked_against_the_system_cas():
    operations = monitor_plan(web_vars={"nginx_tls": "certbot", "nginx_server_name": "pray.example.test"})
    modules = yaml.safe_load(written(operations, "/etc/prometheus/blackbox.yml"))["modules"]
    assert "ca_file" not in modules["site_web1"]["http"]["tls_config"]
    assert not [op for op in operations if getattr(op, "path", "") == "/etc/prometheus/vigil-site-ca.crt"]


def test_alertmanager_posts_to_the_secret_urls_read_from_files_only_it_can_read():
    operations = monitor_plan()
    config = yaml.safe_load(written(operations, "/etc/prometheus/alertmanager.yml"))
    team, heartbeat, _ = config["receivers"]
    assert team["slack_configs"][0]["api_url_file"] == "/etc/prometheus/vigil-alert-webhook.url"
    assert team["slack_configs"][0]["send_resolved"] is True
    assert heartbeat["webhook_configs"][0]["url_file"] == "/etc/prometheus/vigil-alert-heartbeat.url"
    watchdog = config["route"]["routes"][0]
    assert (watchdog["receiver"], watchdog["repeat_interval"], watchdog["group_interval"]) == (
        "heartbeat", "30s", "60s")
    maintenance = config["inhibit_rules"][0]
    assert maintenance == {"source_matchers": ['alertname="MaintenanceMode"'], "target_matchers": ['scope="web"'],
                           "equal": ["host"]}
    url_file = next(op for op in operations if getattr(op, "path", "") == "/etc/prometheus/vigil-alert-webhook.url")
    assert (url_file.mode, url_file.group, url_file.secret) == ("0640", "prometheus", True)
    for op in operations:
        if getattr(op, "path", "") not in ("/etc/prometheus/vigil-alert-webhook.url",
                                           "/etc/prometheus/vigil-alert-heartbeat.url"):
            assert WEBHOOK not in str(getattr(op, "content", b"")), op.path


def test_without_the_urls_nothing_is_posted_and_the_role_says_so():
    operations = monitor_plan(secrets={})
    config = yaml.safe_load(written(operations, "/etc/prometheus/alertmanager.yml"))
    assert [receiver for receiver in config["receivers"] if len(receiver) > 1] == []
    assert any("none set: alerts are not posted" in op.name for op in operations)


@pytest.mark.parametrize("host, services", [
    ("web1", ["prometheus-node-exporter", "mtail"]),
    ("db1", ["prometheus-node-exporter", "prometheus-postgres-exporter"]),
    ("backup1", ["prometheus-node-exporter"]),
    ("mon1", ["prometheus-node-exporter", "prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"]),
])
def test_each_host_runs_the_exporters_of_what_it_does(host, services):
    operations = monitor_plan(host=host)
    running = [op.unit.removesuffix(".service") for op in operations
               if type(op).__name__ == "SystemdUnit" and op.running]
    assert running == services


def test_without_a_monitor_host_nothing_is_installed_and_the_old_probe_is_retired_everywhere():
    for groups in ({"web": ["web1"], "db": ["web1"]}, MONITORED):
        operations = monitor_plan(groups, host="web1")
        retired = [op for op in operations if "probe" in getattr(op, "unit", getattr(op, "path", ""))]
        assert {type(op).__name__ for op in retired} == {"SystemdUnit", "Absent"}
        assert [(op.enabled, op.running) for op in retired if type(op).__name__ == "SystemdUnit"] == [(False, False)]
        assert "/etc/vigil/probe.env" in [getattr(op, "path", "") for op in retired]  # it held the webhook's URL
        if "monitor" not in groups:
            assert operations == retired


def test_the_daemons_get_their_arguments_before_debian_starts_them():
    operations = monitor_plan()
    names = [getattr(op, "path", None) or getattr(op, "packages", None) for op in operations]
    install = next(index for index, name in enumerate(names) if isinstance(name, list) and "prometheus" in name)
    for service in ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"):
        assert names.index(f"/etc/default/{service}") < install
    defaults = written(operations, "/etc/default/prometheus-alertmanager")
    assert '--web.listen-address=127.0.0.1:9093 --cluster.listen-address="' in defaults



@pytest.mark.parametrize("groups, probed", [(MONITORED, True), ({**MONITORED, "monitor": []}, False)])
def test_the_error_tracker_is_probed_from_outside_where_there_is_one(groups, probed):
    if not probed:
        assert not [op for op in monitor_plan(groups, host="web1") if "prometheus.yml" in getattr(op, "path", "")]
        return
    operations = monitor_plan(groups)
    jobs = {job["job_name"]: job for job in yaml.safe_load(written(operations, "/etc/prometheus/prometheus.yml"))[
        "scrape_configs"]}
    assert jobs["errors"]["static_configs"] == [{"targets": ["https://203.0.113.5/health/ready"],
                                                 "labels": {"host": "mon1", "service": "errors",
                                                            "__param_module": "errors"}}]
    module = yaml.safe_load(written(operations, "/etc/prometheus/blackbox.yml"))["modules"]["errors"]
    assert module["http"]["headers"] == {"Host": "203.0.113.5"} and module["http"]["fail_if_not_ssl"] is True
