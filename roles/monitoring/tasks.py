"""The monitoring role: Prometheus, its blackbox exporter and Alertmanager on the monitor host.

Prometheus scrapes every host's exporters (roles/exporters) on its private address and, through the
blackbox exporter, probes from outside what a visitor and an operator reach: each web host's site and
/api/health over HTTPS at its public address (certificate checked, days left recorded), and each
host's SSH. The alert rules (templates/alert-rules.yml.j2) fire into Alertmanager, which posts them to
the ALERT_WEBHOOK_URL secret (Slack's incoming-webhook format), grouped, repeated and resolved, and an
always-firing Watchdog to ALERT_HEARTBEAT_URL, so a dead monitor host is noticed by its silence.
The configs are built from the inventory here, as data, and each is checked by the package's own
tool (promtool, amtool) before it replaces the running one. Only the monitor host gets anything.
"""

import functools

import jinja2
import yaml
from cryptography.hazmat.primitives import serialization

from vigil.core.commands import script
from vigil.core.errors import ConfigError, MissingSecretError
from vigil.core.paths import REPO_ROOT, rel
from vigil.core.roles import load_role
from vigil.core.topology import monitor_host
from vigil.core.validation import address
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.systemd import ServiceAction, SystemdUnit
from vigil.sandbox import ca as sandbox_ca
from vigil.vault.error_tracking import ca_pem, errors_site

PROMETHEUS, ALERTMANAGER, BLACKBOX = "prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"
CONFIG_DIR = "/etc/prometheus"
RULES = f"{CONFIG_DIR}/vigil-alert-rules.yml"
TEMPLATES = f"{CONFIG_DIR}/alertmanager_templates/vigil.tmpl"
# The URLs Alertmanager posts to, each in a file only root and Alertmanager's user read (url_file).
WEBHOOK_URL_FILE = f"{CONFIG_DIR}/vigil-alert-webhook.url"
HEARTBEAT_URL_FILE = f"{CONFIG_DIR}/vigil-alert-heartbeat.url"
# The CA the sites' certificates chain to, where it is not a public one (the sandbox's, a private ACME's).
SITE_CA_FILE = f"{CONFIG_DIR}/vigil-site-ca.crt"
# Each listens on loopback only: monitor.open reaches them through SSH.
PORTS = {PROMETHEUS: 9090, ALERTMANAGER: 9093, BLACKBOX: 9115}
# As roles/nginx serves them: the API's health under /api/, the frontend at the root, on 443.
SITE_CHECKS = {"frontend": "/", "backend": "/api/health"}
SSH_BANNER = "^SSH-2.0-"
# Bugsink's readiness page (roles/errors): answers 200 once it can take events.
ERRORS_CHECK = "/health/ready"
# Before a reload (SIGHUP): a daemon the same run restarted a moment ago (its arguments changed) has not
# installed its SIGHUP handler yet, and the signal would end it. Wait until it has run for two seconds.
SETTLE = r"""
started=$(systemctl show -p ActiveEnterTimestamp --value "$1")
[ -n "$started" ] || exit 0
age=$(( $(date +%s) - $(date -d "$started" +%s) ))
[ "$age" -ge 2 ] || sleep $(( 2 - age ))
"""


def listen(service: str) -> str:
    return f"127.0.0.1:{PORTS[service]}"


@functools.lru_cache(maxsize=None)
def role_named(name: str):
    """roles/<name>, read once per run: the configs ask for it once per watched host."""
    return load_role(name)


def other_vars(vars, name: str, role: str):
    """Inventory host `name`'s vars with `role`'s defaults beneath them: how that role set the host up."""
    return vars.inventory.vars_for(vars.inventory.hosts[name], [role_named(role)])


def hosts_in(vars, group: str) -> list[str]:
    return list(vars.inventory.groups.get(group) or [])


def site_name(vars, name: str) -> str:
    """The name web host `name`'s site answers to (nginx_server_name, else its address): the probes'
    Host header and TLS server name."""
    nginx = other_vars(vars, name, "nginx")
    return address(nginx.get("nginx_server_name") or vars.inventory.hosts[name].address,
                   nginx.where("nginx_server_name"))


def site_ca(vars) -> bytes | None:
    """The CA certificate(s) the web hosts' sites and the error tracker's chain to, where not a public CA;
    None for Let's Encrypt."""
    pems = []
    for name in hosts_in(vars, "web"):
        nginx = other_vars(vars, name, "nginx")
        mode = nginx.string("nginx_tls", "local-ca|certbot")
        if mode == "local-ca":
            certificate, _ = sandbox_ca.ensure_ca()
            pems.append(certificate.public_bytes(serialization.Encoding.PEM))
        elif nginx.string("nginx_certbot_ca_certificate"):
            source = REPO_ROOT / nginx.string("nginx_certbot_ca_certificate")
            try:
                pems.append(source.read_bytes())
            except OSError as error:
                raise ConfigError(f"{nginx.where('nginx_certbot_ca_certificate')}: cannot read {rel(source)}: "
                                  f"{error.strerror}") from None
    errors = errors_site(vars.inventory)
    errors_ca = ca_pem(errors) if errors is not None else None
    if errors_ca:
        pems.append(errors_ca)
    return b"".join(dict.fromkeys(pems)) or None


def blackbox_config(vars, has_ca: bool) -> dict:
    """blackbox.yml: an SSH banner check, and one HTTPS module per web host (its own Host and TLS name)."""
    timeout = f"{vars.integer('monitoring_scrape_timeout', minimum=1)}s"
    modules = {"ssh": {"prober": "tcp", "timeout": timeout,
                       "tcp": {"preferred_ip_protocol": "ip4", "query_response": [{"expect": SSH_BANNER}]}}}
    for name in hosts_in(vars, "web"):
        modules[f"site_{name}"] = https_module(site_name(vars, name), timeout, has_ca)
    errors = errors_site(vars.inventory)
    if errors is not None:
        modules["errors"] = https_module(errors.server_name, timeout, has_ca)
    return {"modules": modules}


def https_module(server_name: str, timeout: str, has_ca: bool) -> dict:
    """A blackbox module that asks a site as a visitor does: its Host and TLS name, 200 over HTTPS only."""
    tls = {"server_name": server_name, **({"ca_file": SITE_CA_FILE} if has_ca else {})}
    return {"prober": "http", "timeout": timeout, "http": {
        "preferred_ip_protocol": "ip4", "headers": {"Host": server_name}, "fail_if_not_ssl": True,
        "valid_status_codes": [200], "tls_config": tls}}


def static(targets: list[str], **labels) -> dict:
    return {"targets": targets, "labels": labels}


def probe_job(job: str, targets: list[dict]) -> dict:
    """A scrape job that has the blackbox exporter probe each target with its `__param_module`."""
    return {
        "job_name": job, "metrics_path": "/probe", "static_configs": targets,
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": listen(BLACKBOX)},
        ],
    }


def prometheus_config(vars) -> dict:
    """prometheus.yml: every host's exporters, the probes from outside, the rules and Alertmanager."""
    inventory = vars.inventory
    scrape = {"prometheus": [static([listen(PROMETHEUS)], host=vars.host.name)],
              "alertmanager": [static([listen(ALERTMANAGER)], host=vars.host.name)]}
    # The exporters, on each host's private address (the firewall opens their ports to this host only),
    # at the port that host's own vars give roles/exporters.
    for job, group in (("node", None), ("postgres", "db"), ("mtail", "web")):
        names = list(inventory.hosts) if group is None else hosts_in(vars, group)
        scrape[job] = [static([f"{vars.address_of(name)}:"
                               f"{other_vars(vars, name, 'exporters').integer(f'exporters_{job}_port', minimum=1)}"],
                              host=name) for name in names]
    jobs = [{"job_name": job, "static_configs": targets} for job, targets in scrape.items()]
    sites = [static([f"https://{inventory.hosts[name].address}{path}"], host=name, service=service,
                    __param_module=f"site_{name}")
             for name in hosts_in(vars, "web") for service, path in SITE_CHECKS.items()]
    ssh = [static([f"{vars.address_of(name)}:{inventory.hosts[name].port}"], host=name, service="ssh",
                  __param_module="ssh") for name in inventory.hosts]
    jobs += [probe_job("site", sites), probe_job("ssh", ssh)]
    errors = errors_site(inventory)
    if errors is not None:
        # Bugsink as the SDKs reach it: nginx, TLS and gunicorn, from its public name.
        jobs.append(probe_job("errors", [static([f"https://{inventory.hosts[errors.host].address}{ERRORS_CHECK}"],
                                                host=errors.host, service="errors", __param_module="errors")]))
    return {
        "global": {
            "scrape_interval": f"{vars.integer('monitoring_scrape_interval', minimum=1)}s",
            "scrape_timeout": f"{scrape_timeout(vars)}s",
            "evaluation_interval": f"{vars.integer('monitoring_evaluation_interval', minimum=1)}s",
            "external_labels": {"env": vars.string("vigil_env")},
        },
        "rule_files": [RULES],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [listen(ALERTMANAGER)]}]}]},
        "scrape_configs": jobs,
    }


def scrape_timeout(vars) -> int:
    timeout, interval = (vars.integer(key, minimum=1)
                         for key in ("monitoring_scrape_timeout", "monitoring_scrape_interval"))
    if timeout > interval:
        raise ConfigError(f"{vars.where('monitoring_scrape_timeout')}: {timeout} s is longer than the scrape "
                          f"interval ({interval} s, monitoring_scrape_interval); Prometheus refuses that")
    return timeout


def alertmanager_config(vars, webhook: bool, heartbeat_url: bool) -> dict:
    """alertmanager.yml: the team's receiver (Slack format), the heartbeat's, and the inhibitions."""
    heartbeat = vars.integer("monitoring_heartbeat_seconds", minimum=10)
    team = {"name": "team"}
    if webhook:
        team["slack_configs"] = [{"api_url_file": WEBHOOK_URL_FILE, "send_resolved": True,
                                  "title": '{{ template "vigil.title" . }}', "text": '{{ template "vigil.text" . }}',
                                  "fallback": '{{ template "vigil.title" . }}'}]
    beat = {"name": "heartbeat"}
    if heartbeat_url:
        beat["webhook_configs"] = [{"url_file": HEARTBEAT_URL_FILE, "send_resolved": False}]
    return {
        "templates": [TEMPLATES],
        "route": {
            "receiver": "team",
            # One message per alert across hosts: a network outage that takes three hosts is one page.
            "group_by": ["alertname"],
            "group_wait": f"{vars.integer('monitoring_group_wait_seconds', minimum=0)}s",
            "group_interval": f"{vars.integer('monitoring_group_interval_seconds', minimum=1)}s",
            "repeat_interval": f"{vars.integer('monitoring_repeat_interval_hours', minimum=1)}h",
            "routes": [
                # Alertmanager sends a group only when it flushes it, every group_interval, and repeats it
                # once repeat_interval has passed: equal, a flush a few milliseconds early skips a beat. So
                # the repeat is shorter (Alertmanager logs a warning about that) and every flush beats.
                {"matchers": ['alertname="Watchdog"'], "receiver": "heartbeat", "group_wait": "0s",
                 "group_interval": f"{heartbeat}s", "repeat_interval": f"{heartbeat // 2}s"},
                # Alerts that only inform the others (maintenance mode) are never sent.
                {"matchers": ['severity="none"'], "receiver": "silent"},
            ],
        },
        "receivers": [team, beat, {"name": "silent"}],
        "inhibit_rules": [
            # A host in maintenance answers 503 on purpose: its web alerts wait until it is over.
            {"source_matchers": ['alertname="MaintenanceMode"'], "target_matchers": ['scope="web"'],
             "equal": ["host"]},
            # A host that is down takes its services with it: one page, for the host.
            {"source_matchers": ['alertname="HostDown"'], "target_matchers": ['alertname!="HostDown"'],
             "equal": ["host"]},
        ],
    }


def down_for(vars) -> int:
    """monitoring_down_for_seconds, long enough for a host's own alert to come before its services'."""
    wait = vars.integer("monitoring_down_for_seconds", minimum=0)
    # A host's site probes may fail up to a scrape (and its timeout) before its exporter's scrape does, and
    # the rules see it an evaluation later: a service alert must still be pending by then.
    behind = (vars.integer("monitoring_scrape_interval", minimum=1) + scrape_timeout(vars)
              + vars.integer("monitoring_evaluation_interval", minimum=1))
    if wait < behind:
        raise ConfigError(f"{vars.where('monitoring_down_for_seconds')}: {wait} s is shorter than a scrape, its "
                          f"timeout and an evaluation ({behind} s): a host going down would page for its services "
                          "before it pages for the host")
    return wait


def alert_rules(role, vars) -> str:
    """The alert rules, rendered with the thresholds (Prometheus's own {{ }} templates pass through)."""
    environment = jinja2.Environment(variable_start_string="[[", variable_end_string="]]",
                                     block_start_string="[%", block_end_string="%]",
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    ratio = vars["monitoring_api_error_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ConfigError(f"{vars.where('monitoring_api_error_ratio')}: expected a share between 0 and 1, "
                          f"got {ratio!r}")
    rate = vars["monitoring_api_min_requests_per_second"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0:
        raise ConfigError(f"{vars.where('monitoring_api_min_requests_per_second')}: expected a number >= 0, "
                          f"got {rate!r}")
    base = vars.string("monitoring_runbook_base_url", r"|https?://[^\s'\"]+/")
    return environment.from_string(role.template("alert-rules.yml.j2")).render(
        env=vars.string("vigil_env"),
        down_for=down_for(vars),
        # Held off while the host is unreachable, and for the grace after: (PromQL's own brackets, so built here).
        unreachable_lately="max_over_time(vigil:host_unreachable["
                           f"{vars.integer('monitoring_boot_grace_seconds', minimum=0)}s])",
        certificate_days=vars.integer("monitoring_certificate_days", minimum=1),
        disk_hours=vars.integer("monitoring_disk_full_within_hours", minimum=1),
        disk_percent=vars.integer("monitoring_disk_used_percent", minimum=1),
        drill_days=vars.integer("monitoring_drill_max_age_days", minimum=1),
        memory_percent=vars.integer("monitoring_memory_available_percent", minimum=1),
        api_error_ratio=ratio, api_min_rate=rate,
        backup_hours=vars.integer("monitoring_backup_max_age_hours", minimum=1),
        runbooks=base,
    )


def secret_url(vars, key: str) -> str | None:
    try:
        return vars.secret(key).value
    except MissingSecretError:
        return None


def default_file(service: str, args: list[str]) -> File:
    return File(f"/etc/default/{service}", f'# Managed by vigil (roles/monitoring).\nARGS="{" ".join(args)}"\n',
                notify=(f"restart {service}",), name=f"Ensure {service} listens on {listen(service)} only.")


def as_yaml(data: dict) -> str:
    return "# Managed by vigil (roles/monitoring): built from the inventory.\n" + yaml.safe_dump(
        data, sort_keys=False, default_flow_style=False, width=1000)


def tasks(role, vars):
    """The monitoring role's operations for the monitor host, in order; nothing on other hosts."""
    monitor = monitor_host(vars.inventory) if vars.inventory is not None else None
    if monitor is None or monitor.name != vars.host.name:
        return []
    env = vars.string("vigil_env")
    webhook, heartbeat = secret_url(vars, "ALERT_WEBHOOK_URL"), secret_url(vars, "ALERT_HEARTBEAT_URL")
    ca = site_ca(vars)
    retention = vars.integer("monitoring_retention_days", minimum=1)
    reload_prometheus, reload_alertmanager = (f"reload {PROMETHEUS}",), (f"reload {ALERTMANAGER}",)
    operations = [
        # Debian's packages start their daemon at once: their arguments (loopback only) come first.
        default_file(PROMETHEUS, [f"--web.listen-address={listen(PROMETHEUS)}",
                                  f"--storage.tsdb.retention.time={retention}d"]),
        # No --cluster.listen-address: one Alertmanager, not a gossip peer listening on every address.
        default_file(ALERTMANAGER, [f"--web.listen-address={listen(ALERTMANAGER)}", "--cluster.listen-address="]),
        default_file(BLACKBOX, [f"--config.file={CONFIG_DIR}/blackbox.yml",
                                f"--web.listen-address={listen(BLACKBOX)}"]),
        AptPackages([PROMETHEUS, ALERTMANAGER, BLACKBOX, "curl"],
                    name="Ensure Prometheus, Alertmanager and the blackbox exporter are installed."),
    ]
    if ca:
        operations.append(File(SITE_CA_FILE, ca, notify=(f"restart {BLACKBOX}",),
                               name="Ensure the probes trust the CA the sites' certificates come from."))
    operations += [
        File(f"{CONFIG_DIR}/blackbox.yml", as_yaml(blackbox_config(vars, bool(ca))),
             validate=(f"/usr/bin/{BLACKBOX}", "--config.check", "--config.file"), notify=(f"reload {BLACKBOX}",),
             name="Ensure the blackbox exporter probes the sites and SSH as the inventory lists them."),
        File(RULES, alert_rules(role, vars), validate=("promtool", "check", "rules"), notify=reload_prometheus,
             name="Ensure the alert rules are in place (checked by promtool first)."),
        File(f"{CONFIG_DIR}/prometheus.yml", as_yaml(prometheus_config(vars)),
             validate=("promtool", "check", "config", "--syntax-only"), notify=reload_prometheus,
             name=f"Ensure Prometheus scrapes every host of the {env} inventory."),
        File(WEBHOOK_URL_FILE, webhook or "", mode="0640", group="prometheus", secret=True,
             notify=reload_alertmanager, name="Ensure Alertmanager has the alert webhook's URL, for it alone"
                                              + ("." if webhook else " (none set: alerts are not posted).")),
        File(HEARTBEAT_URL_FILE, heartbeat or "", mode="0640", group="prometheus", secret=True,
             notify=reload_alertmanager, name="Ensure Alertmanager has the heartbeat's URL, for it alone"
                                              + ("." if heartbeat else " (none set: no heartbeat is sent).")),
        Directory(TEMPLATES.rsplit("/", 1)[0], mode="0755"),
        File(TEMPLATES, role.file("vigil.tmpl"), notify=reload_alertmanager,
             name="Ensure alert messages name the host, what is wrong and the runbook."),
        File(f"{CONFIG_DIR}/alertmanager.yml", as_yaml(alertmanager_config(vars, bool(webhook), bool(heartbeat))),
             validate=("amtool", "check-config"), notify=reload_alertmanager,
             name="Ensure Alertmanager routes alerts to the team and the heartbeat."),
    ]
    operations += [SystemdUnit(f"{service}.service", enabled=True, running=True)
                   for service in (PROMETHEUS, ALERTMANAGER, BLACKBOX)]
    return operations


def handlers(role, vars):
    monitor = monitor_host(vars.inventory) if vars.inventory is not None else None
    if monitor is None or monitor.name != vars.host.name:
        return {}
    handlers = {}
    for service in (PROMETHEUS, ALERTMANAGER, BLACKBOX):
        handlers[f"restart {service}"] = ServiceAction(f"{service}.service", "restart")
        handlers[f"reload {service}"] = ServiceAction(f"{service}.service", "reload-or-restart",
                                                      check=script(SETTLE, f"{service}.service"))
    return handlers
