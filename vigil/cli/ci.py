"""ci: the app repository's CI/CD pipeline (`ci.workflow`)."""

from __future__ import annotations

import shlex
from pathlib import Path

from invoke import Collection, task

from vigil.ci.workflow import SECRETS, Pipeline, render
from vigil.ci.workflow import workflow as build_workflow
from vigil.cli.common import exits_cleanly
from vigil.core.errors import ConfigError
from vigil.core.output import Reporter

DEFAULTS = Pipeline(vigil_repository="owner/vigil")


@task(help={
    "vigil_repo": "This ops repository as owner/name: the deploy jobs check it out (required).",
    "output": "Write the workflow here (the app repository's .github/workflows/deploy.yml); default: print it.",
    "branch": f"Pushes to this branch deploy to staging (default: {DEFAULTS.branch}).",
    "tag_pattern": f"Tags matching this deploy to production (default: {DEFAULTS.tag_pattern}).",
    "staging_env": f"The env (and GitHub environment) of staging (default: {DEFAULTS.staging_env}).",
    "production_env": f"The env (and GitHub environment) of production (default: {DEFAULTS.production_env}).",
    "backend_dir": f"The backend's directory in the app repository (default: {DEFAULTS.backend_dir}).",
    "frontend_dir": f"The frontend's directory in the app repository (default: {DEFAULTS.frontend_dir}).",
    "node_version": f"Node.js the jobs use (default: {DEFAULTS.node_version}, as the hosts run).",
    "postgres_version": f"PostgreSQL the backend is tested against (default: {DEFAULTS.postgres_version}).",
    "ssh_key_path": f"Where the inventory expects the deploy key (default: {DEFAULTS.ssh_key_path}).",
    "previews": "Also deploy each open pull request of the app repository as a preview beside staging, and remove "
                "it once closed (docs/previews.md), in the GitHub environment --preview-environment.",
    "preview_environment": f"The GitHub environment the preview jobs run in (default: "
                           f"{DEFAULTS.preview_environment}): staging's secrets, open to pull request branches.",
})
@exits_cleanly
def workflow(c, vigil_repo=None, output=None, branch=DEFAULTS.branch, tag_pattern=DEFAULTS.tag_pattern,
             staging_env=DEFAULTS.staging_env, production_env=DEFAULTS.production_env, backend_dir=DEFAULTS.backend_dir,
             frontend_dir=DEFAULTS.frontend_dir, node_version=DEFAULTS.node_version,
             postgres_version=DEFAULTS.postgres_version, ssh_key_path=DEFAULTS.ssh_key_path, previews=False,
             preview_environment=DEFAULTS.preview_environment):
    """Write the GitHub Actions workflow of the app repository: test the backend (with PostgreSQL) and the
    frontend, then deploy with vigil: staging on the main branch, production on a tag or by hand, each
    behind its GitHub environment (production's required reviewers approve it).

    Example: invoke ci.workflow --vigil-repo=together-pray/vigil --output=../together-pray/.github/workflows/deploy.yml
    """
    if not vigil_repo:
        raise ConfigError("--vigil-repo: name this ops repository (owner/name); the deploy jobs check it out")
    pipeline = Pipeline(vigil_repo, branch, tag_pattern, staging_env, production_env, backend_dir, frontend_dir,
                          str(node_version), str(postgres_version), DEFAULTS.python_version, ssh_key_path,
                          previews=bool(previews), preview_environment=preview_environment)
    command = "invoke ci.workflow " + " ".join(shlex.quote(f"--{name}={value}") for name, value in (
        ("vigil-repo", vigil_repo), ("branch", branch), ("tag-pattern", tag_pattern), ("staging-env", staging_env),
        ("production-env", production_env), ("backend-dir", backend_dir), ("frontend-dir", frontend_dir),
        ("node-version", node_version), ("postgres-version", postgres_version), ("ssh-key-path", ssh_key_path))) + (
        f" --previews --preview-environment={shlex.quote(preview_environment)}" if previews else "")
    text = render(build_workflow(pipeline), command)
    reporter = Reporter()
    if output is None:
        reporter.line(text, end="")
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    reporter.line(f"wrote {path}; its deploy environments need the secrets {', '.join(SECRETS)}")


ns = Collection("ci")
ns.add_task(workflow)
