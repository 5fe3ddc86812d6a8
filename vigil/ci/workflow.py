"""The app repository's CI/CD pipeline as a GitHub Actions workflow, built as data (`invoke ci.workflow`).

Test the backend against a real PostgreSQL service (build, migrations, tests) and the frontend
(tests, build); build the release artifacts once, in a job that holds no secret, and hand them on
checksummed; then deploy them through vigil's own tasks: staging on every push to the main branch,
production on a version tag, each in its GitHub environment (production's required reviewers are the
manual approval). Third-party code (npm install scripts, the apps' builds) runs only in jobs without
the env's secrets: a deploy job downloads and verifies the artifact, ships it and builds nothing
(VIGIL_NO_BUILD), so the age identity that opens every secret of the env never meets npm. Secrets
reach steps only through `env:`, never inside a script, and nothing untrusted (branch names, titles)
is expanded into one. Actions are pinned to commit SHAs; vigil's Python dependencies are installed
hash-locked (requirements.lock).
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
    "VIGIL_REPO_TOKEN": "a read-only token for the ops repository (a repository secret: the build job uses it too)",
}
# Every action at a full commit SHA (a tag can be moved to other code), its release tag beside it in
# the written file. To update one: take the new release's commit from the action's own release page
# (`git ls-remote https://github.com/actions/checkout refs/tags/v6.0.2`), check it against a second
# source, and change both here; tests/unit/ci checks the shape.
PINNED_ACTIONS = {
    "checkout": ("actions/checkout", "de0fac2e4500dabe0009e67214ff5f5447ce83dd", "v6.0.2"),
    "setup-node": ("actions/setup-node", "49933ea5288caeca8642d1e84afbd3f7d6820020", "v4.4.0"),
    "setup-python": ("actions/setup-python", "a309ff8b426b58ec0e2a45f0f869d46889d02405", "v6.2.0"),
    "upload-artifact": ("actions/upload-artifact", "ea165f8d65b6e75b540449e92b4886f43607fa02", "v4.6.2"),
    "download-artifact": ("actions/download-artifact", "d3f86a106a0bac45b974a628896c90dbdf5c8093", "v4.3.0"),
}
# vigil's own dependencies, every one pinned with its hashes (pip-compile --generate-hashes requirements.txt).
LOCKED_REQUIREMENTS = "requirements.lock"
# A pull request from a branch of this repository (a fork's has no secrets, and gets no preview), and one
# still open.
OWN_PULL_REQUEST = "github.event.pull_request.head.repo.full_name == github.repository"
OPEN_OWN_PULL_REQUEST = f"{OWN_PULL_REQUEST} && github.event.action != 'closed'"
IDENTITY = {"VIGIL_AGE_IDENTITY": "${{ secrets.VIGIL_AGE_IDENTITY }}"}
# A pull request closing only takes its preview down: nothing is tested or built for it.
NOT_CLOSING = {"if": "github.event.action != 'closed'"}
# Where `deploy.build` leaves the artifacts in the ops checkout, and the checksums that travel with them.
ARTIFACTS = ".vigil/artifacts"
CHECKSUMS = "SHA256SUMS"


def uses(action: str) -> str:
    name, commit, _ = PINNED_ACTIONS[action]
    return f"{name}@{commit}"


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
    # Preview jobs (ci.workflow --previews, docs/previews.md): each open pull request of this repository
    # served beside staging.
    # The GitHub environment they run in holds the staging env's secrets and lets pull request branches
    # deploy (staging's own environment admits the main branch only).
    previews: bool = False
    preview_environment: str = "preview"

    def validate(self) -> "Pipeline":
        rules = [("vigil_repository", REPOSITORY, "owner/name"), ("branch", BRANCH, "a branch name"),
                 ("tag_pattern", TAG_PATTERN, "a tag pattern (v*)"), ("staging_env", ENV_NAME, "an env name"),
                 ("production_env", ENV_NAME, "an env name"), ("backend_dir", DIRECTORY, "a relative directory"),
                 ("frontend_dir", DIRECTORY, "a relative directory"), ("node_version", VERSION, "a version (20)"),
                 ("postgres_version", VERSION, "a version (17)"), ("python_version", VERSION, "a version (3.11)"),
                 ("preview_environment", ENV_NAME, "an environment name"),
                 ("ssh_key_path", re.compile(r"^~?/[A-Za-z0-9_./-]{1,200}$"), "an absolute or ~/ path")]
        for name, pattern, what in rules:
            value = getattr(self, name)
            if not isinstance(value, str) or not pattern.match(value) or ".." in value:
                flag = "vigil-repo" if name == "vigil_repository" else name.replace("_", "-")  # as ci.workflow takes it
                raise ConfigError(f"--{flag}: {value!r} is not {what}")
        if self.staging_env == self.production_env:
            raise ConfigError("--staging-env and --production-env must differ")
        return self


def _checkout(**options) -> dict:
    """actions/checkout that leaves no token behind in .git/config for later steps to find."""
    return {"uses": uses("checkout"), "with": {**options, "persist-credentials": False}}


def _node_job(pipeline: Pipeline, directory: str, steps: list[dict], **extra) -> dict:
    return {
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 20,
        **extra,
        "defaults": {"run": {"working-directory": directory}},
        "steps": [
            _checkout(),
            {"uses": uses("setup-node"),
             "with": {"node-version": pipeline.node_version, "cache": "npm",
                      "cache-dependency-path": f"{directory}/package-lock.json"}},
            {"name": "Install the exact dependencies", "run": "npm ci"},
            *steps,
        ],
    }


def _vigil_steps(pipeline: Pipeline) -> list[dict]:
    """Check out this ops repository (its token used by the checkout alone) and install vigil, hash-locked."""
    return [
        {"name": "Check out the ops repository",
         **_checkout(repository=pipeline.vigil_repository, token="${{ secrets.VIGIL_REPO_TOKEN }}", path="vigil")},
        {"uses": uses("setup-python"),
         "with": {"python-version": pipeline.python_version, "cache": "pip",
                  "cache-dependency-path": f"vigil/{LOCKED_REQUIREMENTS}"}},
        {"name": "Install vigil (every dependency pinned and hash-checked)",
         "run": f"python -m pip install --require-hashes --no-deps -r {LOCKED_REQUIREMENTS}"},
    ]


def _build_job(pipeline: Pipeline, needs: list[str]) -> dict:
    """Build each service's release artifact once, with no secret in reach of npm; upload it with its checksums."""
    return {
        "needs": needs,
        # A pull request's code is built only for its preview: from a branch of this repository, still open.
        "if": f"github.event_name != 'pull_request' || ({OPEN_OWN_PULL_REQUEST})" if pipeline.previews
              else "github.event_name != 'pull_request'",
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 30,
        "defaults": {"run": {"working-directory": "vigil"}},
        "outputs": {"digest": "${{ steps.checksums.outputs.digest }}"},
        "steps": [
            *_vigil_steps(pipeline),
            {"uses": uses("setup-node"), "with": {"node-version": pipeline.node_version}},
            {"name": "Build this commit's release artifacts", "env": {"ENV_NAME": pipeline.staging_env},
             "run": 'python -m invoke deploy.build --env="$ENV_NAME" --ref="$GITHUB_SHA"'},
            {"name": "Checksum the artifacts", "id": "checksums",
             "run": f"cd {ARTIFACTS}\n"
                    f"find . -name '*.tar.gz' -o -name '*.json' | sort | xargs sha256sum > {CHECKSUMS}\n"
                    f'echo "digest=$(sha256sum {CHECKSUMS} | cut -d" " -f1)" >> "$GITHUB_OUTPUT"\n'},
            {"uses": uses("upload-artifact"),
             "with": {"name": "release-${{ github.sha }}", "path": f"vigil/{ARTIFACTS}",
                      "if-no-files-found": "error", "retention-days": 30}},
        ],
    }


def _artifact_steps() -> list[dict]:
    """The build job's artifacts downloaded and checked against the digest it gave."""
    return [
        {"uses": uses("download-artifact"),
         "with": {"name": "release-${{ github.sha }}", "path": f"vigil/{ARTIFACTS}"}},
        {"name": "Check the artifacts are the ones the build job made",
         "env": {"DIGEST": "${{ needs.build.outputs.digest }}"},
         "run": f"cd {ARTIFACTS}\n"
                f"printf '%s  {CHECKSUMS}\\n' \"$DIGEST\" | sha256sum --check --strict\n"
                f"sha256sum --check --strict {CHECKSUMS}\n"},
    ]


def _keys_step(pipeline: Pipeline, env: str) -> dict:
    return {
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
    }


def _deploy_job(pipeline: Pipeline, env: str, condition: str) -> dict:
    return {
        "needs": ["build"],
        "if": condition,
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 45,
        # Required reviewers on this GitHub environment hold the job until someone approves it.
        "environment": env,
        # One deploy per env at a time, and a queued one is never cancelled halfway.
        "concurrency": {"group": f"deploy-{env}", "cancel-in-progress": False},
        "defaults": {"run": {"working-directory": "vigil"}},
        "steps": [
            *_vigil_steps(pipeline),
            *_artifact_steps(),
            _keys_step(pipeline, env),
            {
                "name": f"Deploy this commit to {env}",
                # VIGIL_NO_BUILD: ship the build job's artifacts or fail; never run npm next to the identity.
                "env": {"VIGIL_AGE_IDENTITY": "${{ secrets.VIGIL_AGE_IDENTITY }}", "ENV_NAME": env,
                        "VIGIL_NO_BUILD": "1"},
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


def _preview_job(pipeline: Pipeline, closing: bool) -> dict:
    """A pull request's preview beside staging, up while it is open (its URL on the pull request, through
    the job's environment: a deployment GitHub records itself, no write permission asked), down once closed.
    Only for a branch of this repository: a fork's pull request gets no secret and no preview."""
    env = pipeline.staging_env
    names = {"ENV_NAME": env, "BRANCH": "${{ github.head_ref }}"}
    if closing:
        steps = [{"name": "Remove this pull request's preview", "env": {**names, **IDENTITY},
                  "run": 'python -m invoke preview.down --env="$ENV_NAME" --branch="$BRANCH" --missing-ok'}]
    else:
        steps = [*_artifact_steps(), _keys_step(pipeline, env), {
            "name": "Deploy this pull request's preview", "id": "up",
            # The build job's artifacts of this commit, shipped as they are (VIGIL_NO_BUILD).
            "env": {**names, **IDENTITY, "PULL_REQUEST": "${{ github.event.pull_request.number }}",
                    "VIGIL_NO_BUILD": "1"},
            "run": 'python -m invoke preview.up --env="$ENV_NAME" --branch="$BRANCH" --pr="$PULL_REQUEST" '
                   '--ref="$GITHUB_SHA" --json > preview.json\n'
                   'python -c \'import json; print("url=" + json.load(open("preview.json"))["url"])\' '
                   '>> "$GITHUB_OUTPUT"\n'}]
    if closing:
        steps.insert(0, _keys_step(pipeline, env))
    return {
        **({} if closing else {"needs": ["build"]}),
        "if": f"github.event_name == 'pull_request' && {'' if closing else '('}"
              + (f"{OWN_PULL_REQUEST} && github.event.action == 'closed'" if closing else OPEN_OWN_PULL_REQUEST + ")"),
        "runs-on": "ubuntu-latest",
        "timeout-minutes": 20 if closing else 45,
        "environment": pipeline.preview_environment if closing else {
            "name": pipeline.preview_environment, "url": "${{ steps.up.outputs.url }}"},
        # One run per pull request at a time: a push while its preview is coming up waits, never cuts it.
        "concurrency": {"group": "preview-${{ github.event.pull_request.number }}", "cancel-in-progress": False},
        "defaults": {"run": {"working-directory": "vigil"}},
        "steps": [*_vigil_steps(pipeline), *steps],
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
        **(NOT_CLOSING if pipeline.previews else {}),
    )
    frontend = _node_job(pipeline, pipeline.frontend_dir, [
        {"name": "Test", "run": "npm test --if-present"},
        {"name": "Build", "run": "npm run build"},
    ], env={"NEXT_TELEMETRY_DISABLED": "1"}, **(NOT_CLOSING if pipeline.previews else {}))
    main = f"github.ref == 'refs/heads/{pipeline.branch}'"
    tag = "startsWith(github.ref, 'refs/tags/')"
    # Automatic: staging on a push to the main branch, production on a version tag. By hand: the same
    # refs only (a branch of anyone's choosing deploys nowhere); the environments' own branch rules
    # (docs/ci.md) enforce it again on GitHub's side.
    staging = (f"(github.event_name == 'push' && {main}) || (github.event_name == 'workflow_dispatch' "
               f"&& inputs.env == '{pipeline.staging_env}' && {main})")
    production = (f"(github.event_name == 'push' && {tag}) || (github.event_name == 'workflow_dispatch' "
                  f"&& inputs.env == '{pipeline.production_env}' && {tag})")
    return {
        "name": "test and deploy",
        "on": {
            "push": {"branches": [pipeline.branch], "tags": [pipeline.tag_pattern]},
            "pull_request": {"branches": [pipeline.branch],
                             **({"types": ["opened", "synchronize", "reopened", "closed"]} if pipeline.previews
                                else {})},
            "workflow_dispatch": {
                "inputs": {
                    "env": {
                        "description": "Where to deploy this commit (staging from the main branch, "
                                       "production from a version tag)",
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
            "build": _build_job(pipeline, ["backend", "frontend"]),
            f"deploy-{pipeline.staging_env}": _deploy_job(pipeline, pipeline.staging_env, staging),
            f"deploy-{pipeline.production_env}": _deploy_job(pipeline, pipeline.production_env, production),
            **({"preview": _preview_job(pipeline, closing=False),
                "preview-down": _preview_job(pipeline, closing=True)} if pipeline.previews else {}),
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
    text = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=False)
    # The release tag beside each pinned commit, for the reader (YAML itself has no place for it).
    tags = {f"{name}@{commit}": tag for name, commit, tag in PINNED_ACTIONS.values()}
    text = re.sub(r"^(\s*(?:- )?uses: )(\S+)$", lambda m: m.group(0) + (f" # {tags[m.group(2)]}"
                                                                       if m.group(2) in tags else ""),
                  text, flags=re.MULTILINE)
    return header + text
