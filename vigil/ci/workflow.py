"""The app repository's CI/CD pipeline as a GitHub Actions workflow, built as data (`invoke ci.workflow`).

Test the backend against a real PostgreSQL service (build, migrations, tests) and the frontend
(tests, build); then deploy through vigil's own tasks: staging on every push to the main branch,
production on a version tag or a manual run, each in its GitHub environment (production's required
reviewers are the manual approval). The deploy jobs check out this ops repository and take the SSH
key, the pinned host keys and the env's age identity from the environment's secrets; those reach the
steps only through `env:`, never inside a script, and nothing untrusted (branch names, titles) is
expanded into one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from vigil.core.errors import ConfigError

REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,100}$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9._*/-]{1,50}$")
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
DIRECTORY = re.compile(r"^(\.|[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)$")
VERSION = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){0,2}$")
# The CI secrets each deploy environment holds (GitHub: Settings, Environments).
SECRETS = {
    "VIGIL_SSH_KEY": "the deploy user's private SSH key (the inventory's ssh_key)",
    "VIGIL_KNOWN_HOSTS": "the env's pinned host keys (inventory/<env>.known_hosts)",
    "VIGIL_AGE_IDENTITY": "an age identity that is a recipient of secrets/<env>.env.age",
    "VIGIL_REPO_TOKEN": "a read-only token for the ops repository (checked out beside the app)",
}
PINNED_ACTIONS = {"checkout": "actions/checkout@v4", "setup-node": "actions/setup-node@v4",
                  "setup-python": "actions/setup-python@v5"}


@dataclass(frozen=True)
class Pipeline:
    """What the workflow needs to know.

    vigil_repository: owner/name of this ops repository; backend_dir, frontend_dir: the services'
    directories in the app repository; ssh_key_path: where the inventory expects the deploy key.
    """

    vigil_repository: str
    branch: str = "main"
    tag_pattern: str = "v*"
    staging_env: str = "staging"
    production_env: str = "production"
    backend_dir: str = "backend"
    frontend_dir: str = "frontend"
    node_version: str = "20"
    postgres_version: str = "17"
    python_version: str = "3.11"
    ssh_key_path: str = "~/.ssh/id_ed25519"

    def validate(self) -> "Pipeline":
        rules = [("vigil_repository", REPOSITORY, "owner/name"), ("branch", BRANCH, "a branch name"),
                 ("tag_pattern", TAG_PATTERN, "a tag pattern (v*)"), ("staging_env", ENV_NAME, "an env name"),
                 ("production_env", ENV_NAME, "an env name"), ("backend_dir", DIRECTORY, "a relative directory"),
                 ("frontend_dir", DIRECTORY, "a relative directory"), ("node_version", VERSION, "a version (20)"),
                 ("postgres_version", VERSION, "a version (17)"), ("python_version", VERSION, "a version (3.11)"),
                 ("ssh_key_path", re.compile(r"^~?/[A-Za-z0-9_./-]{1,200}$"), "an absolute or ~/ path")]
        for name, pattern, what in rules:
            value = getattr(self, name)
            if not isinstance(value, str) or not pattern.match(value) or ".." in value:
                flag = "vigil-repo" if name == "vigil_repository" else name.replace("_", "-")  # as ci.workflow takes it
                raise ConfigError(f"--{flag}: {value!r} is not {what}")
        if self.staging_env == self.production_env:
            raise ConfigError("--staging-env and --production-env must differ")
        return self


def _node_job(pipeline: Pipeline, directory: str, steps: list[dict], **extra) -> dict:
    return {
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 20,
        **extra,
        "defaults": {"run": {"working-directory": directory}},
        "steps": [
            {"uses": PINNED_ACTIONS["checkout"]},
            {"uses": PINNED_ACTIONS["setup-node"],
             "with": {"node-version": pipeline.node_version, "cache": "npm",
                      "cache-dependency-path": f"{directory}/package-lock.json"}},
            {"name": "Install the exact dependencies", "run": "npm ci"},
            *steps,
        ],
    }


def _deploy_job(pipeline: Pipeline, env: str, needs: list[str], condition: str) -> dict:
    return {
        "needs": needs,
        "if": condition,
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 45,
        # Required reviewers on this GitHub environment hold the job until someone approves it.
        "environment": env,
        # One deploy per env at a time, and a queued one is never cancelled halfway.
        "concurrency": {"group": f"deploy-{env}", "cancel-in-progress": False},
        "defaults": {"run": {"working-directory": "vigil"}},
        "steps": [
            {
                "name": "Check out the ops repository",
                "uses": PINNED_ACTIONS["checkout"],
                "with": {
                    "repository": pipeline.vigil_repository,
                    "token": "${{ secrets.VIGIL_REPO_TOKEN }}",
                    "path": "vigil",
                },
            },
            {
                "uses": PINNED_ACTIONS["setup-python"],
                "with": {
                    "python-version": pipeline.python_version,
                    "cache": "pip",
                    "cache-dependency-path": "vigil/requirements.txt",
                },
            },
            {"uses": PINNED_ACTIONS["setup-node"], "with": {"node-version": pipeline.node_version}},
            {"name": "Install vigil", "run": "python -m pip install -r requirements.txt"},
            {
                "name": "Install the deploy key and the pinned host keys",
                "env": {
                    "VIGIL_SSH_KEY": "${{ secrets.VIGIL_SSH_KEY }}",
                    "VIGIL_KNOWN_HOSTS": "${{ secrets.VIGIL_KNOWN_HOSTS }}",
                    "KEY_PATH": pipeline.ssh_key_path,
                    "ENV_NAME": env,
                },
                "run": "key=${KEY_PATH/#\\~/$HOME}\n"
                'install -d -m 700 "$(dirname "$key")"\n'
                '(umask 077 && printf \'%s\\n\' "$VIGIL_SSH_KEY" > "$key")\n'
                'printf \'%s\\n\' "$VIGIL_KNOWN_HOSTS" > "inventory/$ENV_NAME.known_hosts"\n',
            },
            {
                "name": f"Deploy this commit to {env}",
                "env": {"VIGIL_AGE_IDENTITY": "${{ secrets.VIGIL_AGE_IDENTITY }}", "ENV_NAME": env},
                "run": 'python -m invoke deploy.all --env="$ENV_NAME" --ref="$GITHUB_SHA"',
            },
            {
                "name": f"Show what {env} serves",
                "if": "always()",
                "env": {"ENV_NAME": env},
                "run": 'python -m invoke deploy.status --env="$ENV_NAME"',
            },
        ],
    }


def workflow(pipeline: Pipeline) -> dict:
    """The workflow document (a dict in the order GitHub shows it)."""
    pipeline.validate()
    database = "postgresql://together_pray:ci-only-password@localhost:5432/together_pray"
    backend = _node_job(
        pipeline,
        pipeline.backend_dir,
        [
            {"name": "Build", "run": "npm run build"},
            {"name": "Apply the migrations to an empty database", "run": "npm run migration:run --if-present"},
            {"name": "Test", "run": "npm test --if-present"},
        ],
        services={
            "postgres": {
                "image": f"postgres:{pipeline.postgres_version}",
                "env": {
                    "POSTGRES_USER": "together_pray",
                    "POSTGRES_PASSWORD": "ci-only-password",
                    "POSTGRES_DB": "together_pray",
                },
                "ports": ["5432:5432"],
                "options": "--health-cmd pg_isready --health-interval 5s --health-timeout 5s --health-retries 10",
            }
        },
        env={"DATABASE_URL": database, "NODE_ENV": "test"},
    )
    frontend = _node_job(pipeline, pipeline.frontend_dir, [
        {"name": "Test", "run": "npm test --if-present"},
        {"name": "Build", "run": "npm run build"},
    ], env={"NEXT_TELEMETRY_DISABLED": "1"})
    on_branch = f"github.event_name == 'push' && github.ref == 'refs/heads/{pipeline.branch}'"
    on_tag = "github.event_name == 'push' && startsWith(github.ref, 'refs/tags/')"
    manual = f"github.event_name == 'workflow_dispatch' && inputs.env == '{pipeline.production_env}'"
    return {
        "name": "test and deploy",
        "on": {
            "push": {"branches": [pipeline.branch], "tags": [pipeline.tag_pattern]},
            "pull_request": {"branches": [pipeline.branch]},
            "workflow_dispatch": {
                "inputs": {
                    "env": {
                        "description": "Where to deploy this commit",
                        "required": True,
                        "type": "choice",
                        "options": [pipeline.staging_env, pipeline.production_env],
                        "default": pipeline.staging_env,
                    }
                }
            },
        },
        "permissions": {"contents": "read"},
        "jobs": {
            "backend": backend,
            "frontend": frontend,
            f"deploy-{pipeline.staging_env}": _deploy_job(
                pipeline,
                pipeline.staging_env,
                ["backend", "frontend"],
                f"({on_branch}) "
                f"|| (github.event_name == 'workflow_dispatch' && inputs.env == '{pipeline.staging_env}')",
            ),
            f"deploy-{pipeline.production_env}": _deploy_job(
                pipeline, pipeline.production_env, ["backend", "frontend"], f"({on_tag}) || ({manual})"
            ),
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order built, and `on` written as a string GitHub reads."""


def _string(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def render(document: dict, command: str) -> str:
    """The workflow file's text, headed by how it was made."""
    header = (f"# Written by vigil: {command}\n"
              "# Regenerate it rather than editing it. The deploy environments need these secrets:\n"
              + "".join(f"#   {name}: {what}\n" for name, what in SECRETS.items()))
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=False)
