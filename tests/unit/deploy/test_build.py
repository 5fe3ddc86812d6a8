"""Release artifacts built on the control machine: tiny projects with no dependencies, real npm and git, no network."""

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from vigil.core.errors import ConfigError
from vigil.core.paths import REPO_ROOT, LocalState
from vigil.deploy.build import AppSource, Artifact, BuildError, app_sources, build, build_environment
from vigil.deploy.rollout import with_source

BUILD_SCRIPT = (
    "node -e \"require('fs').mkdirSync('dist',{recursive:true});require('fs').writeFileSync('dist/main.js','ok')\""
)

def project(root: Path, build_script: str = BUILD_SCRIPT, engines: str = ">=18") -> Path:
    """A service with no dependencies: `npm ci` needs no registry."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "tiny", "version": "1.0.0", "private": True, "engines": {"node": engines},
                "scripts": {"build": build_script}}
    (root / "package.json").write_text(json.dumps(manifest))
    (root / "package-lock.json").write_text(json.dumps({
        "name": "tiny", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
        "packages": {"": {"name": "tiny", "version": "1.0.0", "engines": {"node": engines}}}}))
    (root / "src.js").write_text("console.log('source')\n")
    return root


def members(artifact: Artifact) -> list[str]:
    with tarfile.open(artifact.path) as archive:
        return sorted(archive.getnames())


def test_a_node_service_builds_into_dist_and_its_manifest_and_the_second_build_is_a_cache_hit(tmp_path):
    source = AppSource("backend", "node", project(tmp_path / "app"))
    artifact = build(source, LocalState(tmp_path))
    assert artifact.id.startswith("worktree-") and len(artifact.id) == len("worktree-") + 12
    assert members(artifact) == ["dist", "dist/main.js", "package.json"]  # no dependencies, so no node_modules
    assert (
        json.loads((tmp_path / "artifacts" / "backend" / f"{artifact.id}.json").read_text())["sha256"]
        == artifact.sha256
    )

    def no_build(*args):
        raise AssertionError("a cached source must not be built again")

    again = build(source, LocalState(tmp_path), runner=no_build)
    assert (again.id, again.sha256, again.cached) == (artifact.id, artifact.sha256, True)


def test_two_processes_building_the_same_source_take_turns_and_it_is_built_once(tmp_path):
    source = AppSource("backend", "node", project(tmp_path / "app"))
    script = ("import sys\nfrom pathlib import Path\nfrom vigil.core.paths import LocalState\n"
              "from vigil.deploy.build import AppSource, build\n"
              "artifact = build(AppSource('backend', 'node', Path(sys.argv[1])), LocalState(Path(sys.argv[2])))\n"
              "print(artifact.cached, artifact.sha256)\n")
    # Two real processes, as two deploys at once: flock is per open file, so threads would do too, but
    # processes are what happens.
    builders = [subprocess.Popen([sys.executable, "-c", script, str(source.path), str(tmp_path / "state")],
                                 cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    answers = sorted(builder.communicate(timeout=300)[0].split() for builder in builders)
    assert [builder.returncode for builder in builders] == [0, 0]
    # One built it, the other waited and found it; both name the same bytes.
    assert [cached for cached, _ in answers] == ["False", "True"]
    assert answers[0][1] == answers[1][1]
    assert not list((tmp_path / "state" / "artifacts" / "backend").glob("*.partial"))


def test_the_same_source_gives_the_same_bytes_and_another_source_another_id(tmp_path):
    source = AppSource("backend", "node", project(tmp_path / "app"))
    first = build(source, LocalState(tmp_path / "one"))
    second = build(source, LocalState(tmp_path / "two"))
    assert (first.id, first.sha256) == (second.id, second.sha256)
    (tmp_path / "app" / "src.js").write_text("console.log('changed')\n")
    assert build(source, LocalState(tmp_path / "one")).id != first.id


def test_where_building_is_forbidden_only_an_artifact_built_elsewhere_is_shipped(tmp_path, monkeypatch):
    """A CI deploy job (VIGIL_NO_BUILD) finds the build job's artifact, and never runs npm when it is missing."""
    source = AppSource("backend", "node", project(tmp_path / "app"))
    elsewhere = build(source, LocalState(tmp_path / "build-job"))
    monkeypatch.setenv("VIGIL_NO_BUILD", "1")

    def npm(*args):
        raise AssertionError("nothing may be built here")

    with pytest.raises(BuildError, match="VIGIL_NO_BUILD says this machine may not build") as refused:
        build(source, LocalState(tmp_path / "deploy-job"), runner=npm)
    assert elsewhere.id in refused.value.message
    (tmp_path / "deploy-job").mkdir(exist_ok=True)
    subprocess.run(["cp", "-r", str(tmp_path / "build-job" / "artifacts"), str(tmp_path / "deploy-job")], check=True)
    shipped = build(source, LocalState(tmp_path / "deploy-job"), runner=npm)
    assert (shipped.id, shipped.sha256, shipped.cached) == (elsewhere.id, elsewhere.sha256, True)


def test_a_failing_step_names_itself_and_leaves_no_artifact(tmp_path):
    source = AppSource(
        "backend",
        "node",
        project(tmp_path / "app", build_script="node -e \"console.error('tsc: 3 errors');process.exit(2)\""),
    )
    with pytest.raises(BuildError, match=r"backend: `npm run build` exited 2 \(log: .*\):\n(.|\n)*tsc: 3 errors"):
        build(source, LocalState(tmp_path))
    assert not list((tmp_path / "artifacts" / "backend").glob("*.tar.gz*"))


def test_a_node_version_outside_engines_is_refused_before_building(tmp_path):
    source = AppSource("backend", "node", project(tmp_path / "app", engines=">=99"))
    with pytest.raises(BuildError, match=r"does not satisfy engines.node '>=99'"):
        build(source, LocalState(tmp_path), runner=lambda *args: pytest.fail("built anyway"))


def test_a_ref_builds_that_commit_not_the_working_tree(tmp_path):
    repo = tmp_path / "repo"
    project(repo / "services" / "api")

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("-c", "user.email=t@example.org", "-c", "user.name=t", "add", ".")
    git("-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "first")
    (repo / "services" / "api" / "src.js").write_text("console.log('uncommitted')\n")
    artifact = build(AppSource("api", "node", repo / "services" / "api", "HEAD"), LocalState(tmp_path))
    assert artifact.id == f"{git('rev-parse', 'HEAD')[:10]}-{git('rev-parse', 'HEAD:services/api')[:12]}"
    assert artifact.source_hash == git("rev-parse", "HEAD:services/api")
    with pytest.raises(BuildError, match="no-such-branch"):
        build(AppSource("api", "node", repo / "services" / "api", "no-such-branch"), LocalState(tmp_path))


def test_a_git_url_source_builds_the_ref_from_a_mirror_fetched_anew_each_time(tmp_path):
    upstream = tmp_path / "upstream"
    project(upstream / "backend")

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(upstream), "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-qm", "first")
    (source,) = app_sources(
        {"backend": {"kind": "node", "source": f"file://{upstream}", "subdir": "backend", "ref": "main"}},
        "app_services",
    ).values()
    first = build(source, LocalState(tmp_path))
    assert first.id == f"{git('rev-parse', 'HEAD')[:10]}-{git('rev-parse', 'HEAD:backend')[:12]}"
    assert "dist/main.js" in members(first)
    (upstream / "backend" / "src.js").write_text("console.log('second')\n")
    git("commit", "-qam", "second")
    second = build(source, LocalState(tmp_path))  # the same ref, moved on upstream: fetched, built anew
    assert second.id.startswith(git("rev-parse", "HEAD")[:10]) and second.id != first.id
    assert len(list((tmp_path / "sources").iterdir())) == 1
    (whole,) = app_sources(
        {"api": {"kind": "node", "source": f"file://{upstream}", "ref": "main"}}, "app_services"
    ).values()
    with pytest.raises(BuildError, match=r"no package.json in file://.* \. at main"):
        build(whole, LocalState(tmp_path))


def test_a_build_sees_the_tools_settings_but_no_vigil_secret():
    env = build_environment(
        "worktree-abc",
        {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "npm_config_registry": "http://mirror/",
            "VIGIL_AGE_IDENTITY": "AGE-SECRET-KEY-1XYZ",
            "AWS_SECRET_ACCESS_KEY": "x",
        },
    )
    assert env["npm_config_registry"] == "http://mirror/" and env["VIGIL_BUILD_ID"] == "worktree-abc"
    assert "VIGIL_AGE_IDENTITY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "NODE_ENV" not in env  # npm ci would leave out the dev dependencies a build needs


@pytest.mark.parametrize(
    "services, message",
    [
        ({}, "expected a mapping of service"),
        (
            {"backend": {"kind": "rails", "source": "examples/together-pray/backend"}},
            "app_services.backend.kind: 'rails' is not one of",
        ),
        (
            {"backend": {"kind": "node", "source": "examples"}},
            "app_services.backend.source: examples has no package.json",
        ),
        (
            {"backend": {"kind": "node", "source": "examples/together-pray/backend", "ref": "main;reboot"}},
            "is not a git ref",
        ),
        ({"backend": {"kind": "node"}}, "app_services.backend: expected {kind, source, ref}"),
        ({"Back End": {"kind": "node", "source": "examples/together-pray/backend"}}, "is not a service name"),
        (
            {"backend": {"kind": "node", "source": "https://git.example.org/pray.git"}},
            "app_services.backend.ref: a git URL needs a ref",
        ),
        (
            {"backend": {"kind": "node", "source": "git@git.example.org:pray.git", "ref": "main", "subdir": "../x"}},
            "app_services.backend.subdir: '../x' is not a directory inside",
        ),
        (
            {"backend": {"kind": "node", "source": "examples/together-pray/backend", "subdir": "x"}},
            "subdir: only for a source given as a git URL",
        ),
        ({"backend": {"kind": "node", "source": "--upload-pack=evil", "ref": "main"}}, "has no package.json"),
        (
            {"backend": {"kind": "node", "source": "https://bot:s3cret@git.example.org/pray.git", "ref": "main"}},
            "app_services.backend.source: a git URL with a password in it",
        ),
    ],
)
def test_bad_app_services_name_the_key(services, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        app_sources(services, "roles/app/defaults.yml: app_services")


SERVICES = {
    "backend": {"kind": "node", "source": "examples/together-pray/backend", "ref": ""},
    "frontend": {"kind": "next-standalone", "source": "https://git.example/app.git", "subdir": "web", "ref": "main"},
}


@pytest.mark.parametrize("service, source, expected", [
    # A directory (a branch's checkout): taken from where the task runs, for this run only.
    ("backend", "BRANCH", {"kind": "node", "source": "BRANCH", "ref": ""}),
    # A git URL: the configured subdir belongs to the configured repository, not this one.
    ("frontend", "ssh://git@git.example/fork.git", {"kind": "next-standalone", "source": "ssh://git@git.example/fork.git",
                                                    "ref": "main"}),
    ("backend", "NOWHERE", ConfigError("--source: NOWHERE has no package.json")),
    ("worker", "BRANCH", ConfigError("--source: 'worker' is not one of the app's services")),
])
def test_a_source_given_on_the_command_line_replaces_one_services_source(tmp_path, monkeypatch, service, source,
                                                                        expected):
    branch = tmp_path / "branch"
    branch.mkdir()
    (branch / "package.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    given = {"BRANCH": "branch", "NOWHERE": "nowhere"}.get(source, source)
    if isinstance(expected, Exception):
        with pytest.raises(ConfigError, match=re.escape(str(expected).replace("NOWHERE", given))):
            with_source(SERVICES, "roles/app/defaults.yml: app_services", service, given)
        return
    services = with_source(SERVICES, "roles/app/defaults.yml: app_services", service, given)
    assert services[service] == {key: str(branch) if value == "BRANCH" else value for key, value in expected.items()}
    assert services["backend" if service == "frontend" else "frontend"] == SERVICES[
        "backend" if service == "frontend" else "frontend"]
    # What it builds from is checked like any configured source.
    assert app_sources(services, "x", "v1")[service].ref == "v1"
