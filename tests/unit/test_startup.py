"""The CLI's start-up: a task imports only its own task module (vigil/cli/namespace.py), and `invoke --list`
imports every one, so a heavy dependency that only a few tasks use is imported by those tasks when they run,
never by every start."""

import json
import os
import re
import subprocess
import sys
from importlib import import_module

import pytest

from vigil.cli.namespace import COLLECTIONS, modules_for, namespace, run_by_invoke
from vigil.core.paths import REPO_ROOT

# What each is for: the tasks that need it import it on first use.
ONLY_WHEN_USED = {
    "requests": "audit.* and incident.* asking a site over HTTPS, and posting an alert",
    "dns.resolver": "env.check looking up the domain",
    "jinja2": "rendering a role's template",
    "cryptography.x509": "the sandbox's certificate authority issuing a certificate",
    "ruamel.yaml": "parsing a YAML file whose text is not in .vigil/cache/yaml yet",
}


@pytest.fixture(scope="module")
def imported_by_the_cli() -> set[str]:
    done = subprocess.run([sys.executable, "-c", "import json, sys, tasks; print(json.dumps(sorted(sys.modules)))"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("module", sorted(ONLY_WHEN_USED))
def test_the_cli_starts_without_a_dependency_only_some_tasks_need(imported_by_the_cli, module):
    assert module not in imported_by_the_cli, f"{module} (for {ONLY_WHEN_USED[module]}) is imported at start-up"


def test_the_cli_still_lists_every_collection(imported_by_the_cli):
    assert {"vigil.cli.backup", "vigil.cli.env", "vigil.cli.audit", "vigil.cli.incident"} <= imported_by_the_cli


# --- only the task modules a command line names -----------------------------------------------------------

EVERY = ["sandbox", "env", "provision", "vault", "deploy", "backup", "db", "preview", "incident", "monitor", "ci",
         "audit", "bench"]


@pytest.mark.parametrize(("arguments", "modules"), [
    (["backup.import", "--env=staging", "--from-url", "postgresql://u@h/db"], ["backup"]),
    (["--help", "backup.import"], ["backup"]),
    (["-e", "secrets.edit", "--env=sandbox"], ["vault"]),
    (["sandbox.up", "provision.server", "deploy.backend", "deploy.frontend"], ["sandbox", "provision", "deploy"]),
    (["bench", "--rounds=1"], ["bench"]),
    (["incident.runbook", "deploy-failed.yml"], ["incident"]),
    (["incident.logs", "--service", "backup"], ["backup", "incident"]),  # a value that looks like one: one more
    (["preview.up", "--branch=feature.x"], ["preview"]),
    ([], EVERY),
    (["--help"], EVERY),
    (["--list"], EVERY),
    (["-l", "backup"], EVERY),
    (["--list=backup"], EVERY),
    (["--complete", "--", "invoke", "backup.im"], EVERY),
    (["nosuch.task"], EVERY),  # Invoke's own "No idea what" answer, beside the whole list
])
def test_a_command_line_imports_the_modules_of_the_tasks_it_names(arguments, modules):
    assert modules_for(arguments) == modules


@pytest.mark.parametrize(("argv", "by_invoke"), [
    (["/usr/local/bin/invoke", "backup.import"], True),
    (["inv", "--list"], True),
    ([".venv/lib/python3.11/site-packages/invoke/__main__.py", "deploy.backend"], True),
    (["-c"], False),  # python -c "import tasks"
    (["/usr/bin/pytest", "-k", "backup"], False),
    ([], False),
])
def test_only_invokes_command_line_is_read_as_tasks(argv, by_invoke):
    assert run_by_invoke(argv) is by_invoke


def test_every_task_module_is_reachable_by_its_collections_name():
    with_tasks = {path.stem for path in (REPO_ROOT / "vigil" / "cli").glob("*.py")
                  if re.search(r"^(ns = Collection\(|@task)", path.read_text(), re.MULTILINE)}
    assert with_tasks == set(EVERY)
    for name, module in COLLECTIONS.items():
        assert import_module(f"vigil.cli.{module}").ns.name == name


def test_the_namespace_of_a_named_task_is_its_collection_alone():
    root = namespace(["invoke", "backup.import", "--env=staging"])
    assert list(root.collections) == ["backup"] and "import" in root.collections["backup"].tasks
    whole = namespace(["invoke", "--list"])
    assert list(whole.collections) == list(COLLECTIONS) and list(whole.tasks) == ["bench"]


def test_a_task_starts_without_the_other_task_modules():
    done = subprocess.run([sys.executable, "-c", "import json, sys; sys.argv = ['invoke', 'backup.import']; "
                           "import tasks; print(json.dumps(sorted(sys.modules)))"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
    task_modules = {name for name in json.loads(done.stdout) if name.startswith("vigil.cli.")}
    assert task_modules == {"vigil.cli.backup", "vigil.cli.common", "vigil.cli.namespace"}


def test_a_task_run_caches_the_bytecode_of_what_it_imports(tmp_path):
    """Invoke turns bytecode caching off for its process (tasks.py leaves no .pyc); tasks.py turns it back on, or
    every module a task imports would be compiled again on every run."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "invoke", "--help", "backup.import"], cwd=REPO_ROOT, capture_output=True,
                   timeout=60, check=True, env={**environment, "PYTHONPYCACHEPREFIX": str(tmp_path)})
    cached = {path.name.split(".")[0] for path in tmp_path.rglob("*.pyc") if "vigil" in path.parts}
    assert {"backup", "access", "importing"} <= cached  # vigil.cli.backup and what it imports


# A task module that must not pull in what only some of its tasks need (each a fresh interpreter).
@pytest.mark.parametrize(("module", "kept_out", "why"), [
    ("vigil.cli.deploy", "vigil.backup.pitr", "only deploy.rollback --restore-point returns the database to a point"),
    ("vigil.cli.provision", "paramiko", "only provision.trust scans a key; `--help provision.server` opens no SSH"),
    ("vigil.cli.provision", "rich", "rich prints progress and tables; `--help` and a --json run print neither"),
])
def test_a_task_module_starts_without_what_only_one_of_its_tasks_needs(module, kept_out, why):
    done = subprocess.run([sys.executable, "-c", f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert kept_out not in json.loads(done.stdout), f"{module} imports {kept_out} ({why})"
