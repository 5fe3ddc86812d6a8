"""roles/errors: Bugsink on the monitor host alone, pinned by hash, its secrets in files only it reads, the
project vigil derives its DSN for, and refused values named by their key."""

from __future__ import annotations

import json
import shlex

import pytest

from tests.support.inventories import layout
from vigil.core.errors import ConfigError
from vigil.core.playbook import build_host_plans
from vigil.operations.files import File
from vigil.operations.guarded import Guarded
from vigil.vault.error_tracking import api_token, project_key

WATCHED = {"web": ["web1"], "db": ["db1"], "monitor": ["mon1"]}
SECRETS = {"BUGSINK_SECRET_KEY": "bugsink-secret-key-for-unit-tests-0123456789-abcdefghijklmnop",
           "BUGSINK_ADMIN_PASSWORD": "admin-password-for-unit-tests-0123"}


def errors_plans(host="mon1", groups=None, secrets=None, monitor_vars=None, **cli_vars):
    inventory = layout(groups or WATCHED, host_vars={"mon1": monitor_vars or {}})
    values = dict(SECRETS if secrets is None else secrets)
    return build_host_plans(inventory, "onboard", host, cli_vars, lambda: values, only_roles=["errors"])


def errors_plan(host="mon1", groups=None, secrets=None, monitor_vars=None, **cli_vars):
    plans = errors_plans(host, groups, secrets, monitor_vars, **cli_vars)
    return plans[0].operations if plans else []


def by_path(operations) -> dict[str, File]:
    return {op.path: op for op in operations if isinstance(op, File)}


@pytest.mark.parametrize("host, groups, cli_vars", [
    ("web1", WATCHED, {}),
    ("db1", WATCHED, {}),
    ("mon1", WATCHED, {"errors_enabled": False}),
    ("web1", {"web": ["web1"], "db": ["web1"]}, {}),
])
def test_only_the_monitor_host_gets_bugsink(host, groups, cli_vars):
    plans = errors_plans(host, groups, **cli_vars)
    # Neither operations nor handlers: another host's plan names nothing of Bugsink (bench/peers refuses
    # a handler it has no counterpart for).
    assert [(plan.operations, plan.handlers) for plan in plans] == [([], {})]


def test_the_secrets_land_in_files_only_root_and_bugsink_read():
    files = by_path(errors_plan())
    for path in ("/etc/bugsink/bugsink_conf.py", "/etc/bugsink/vigil-setup.json"):
        assert (files[path].owner, files[path].group, files[path].mode, files[path].secret) == \
               ("root", "bugsink", "0640", True), path
    settings = files["/etc/bugsink/bugsink_conf.py"].content.decode()
    assert f'SECRET_KEY = "{SECRETS["BUGSINK_SECRET_KEY"]}"' in settings
    assert '"BASE_URL": "https://203.0.113.3"' in settings and '"PHONEHOME": False' in settings
    setup = json.loads(files["/etc/bugsink/vigil-setup.json"].content)
    assert setup["project_id"] == 1
    assert setup["project_key"] == project_key(SECRETS["BUGSINK_SECRET_KEY"])
    assert setup["token"] == api_token(SECRETS["BUGSINK_SECRET_KEY"])
    assert setup["admin_password"] == SECRETS["BUGSINK_ADMIN_PASSWORD"]


def test_packages_install_by_hash_and_only_when_the_pins_change():
    install = next(op for op in errors_plan() if isinstance(op, Guarded) and "pinned packages" in op.name)
    body = install.commands[0].argv[2]
    assert "--require-hashes" in body and "--only-binary=:all:" in body and "--no-deps" in body
    # The running venv is switched to only after the new one installed whole.
    assert body.index("pip\" install") < body.index("mv -T")
    requirements = by_path(errors_plan())["/opt/bugsink/requirements.txt"].content.decode()
    pins = [line for line in requirements.splitlines() if "==" in line]
    assert any(line.startswith("bugsink==") for line in pins)
    assert requirements.count("--hash=sha256:") >= len(pins)


def test_the_setup_runs_only_when_its_check_finds_a_difference():
    setup = next(op for op in errors_plan() if isinstance(op, Guarded) and "read-only token" in op.name)
    assert setup.commands[0].argv[-1] == "apply" and setup.unless.argv[-1] == "check"
    # No secret on a command line: the script reads them from its file.
    for command in (*setup.commands, setup.unless):
        assert all(value not in shlex.join(command.argv) for value in SECRETS.values())


def test_the_units_run_as_bugsink_hardened_and_nginx_serves_it_over_https():
    # Set in the inventory: secrets.push derives the DSN from the same name.
    files = by_path(errors_plan(monitor_vars={"errors_server_name": "errors.example.org"}))
    web = files["/etc/systemd/system/bugsink-web.service"].content.decode()
    assert "User=bugsink" in web and "--bind=127.0.0.1:8000" in web and "ProtectSystem=strict" in web
    assert "ReadWritePaths=/var/lib/bugsink" in web
    site = files["/etc/nginx/sites-available/vigil-errors.conf"].content.decode()
    assert "server_name errors.example.org;" in site and "proxy_pass http://127.0.0.1:8000;" in site
    assert "proxy_set_header X-Forwarded-Proto https;" in site


@pytest.mark.parametrize("cli_vars, secrets, message", [
    ({"errors_team": 'Team "quoted"'}, None, "errors_team"),
    ({"errors_project": "Together Pray"}, None, "errors_project"),
    ({"errors_memory_max": "lots"}, None, "errors_memory_max"),
    ({"errors_admin_email": "admin"}, None, "errors_admin_email"),
])
def test_bad_values_are_refused_naming_the_key(cli_vars, secrets, message):
    with pytest.raises(ConfigError, match=message):
        errors_plan(secrets=secrets, **cli_vars)


def test_a_missing_secret_refuses_the_monitor_host_naming_the_key():
    plan = errors_plans(secrets={"BUGSINK_ADMIN_PASSWORD": "x" * 24})[0]
    assert plan.operations == [] and "secret BUGSINK_SECRET_KEY is missing" in plan.refused.reason
