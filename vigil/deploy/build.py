"""Build an app service into a release artifact on the control machine: built once, promoted as it is.

An artifact is a gzipped tar of exactly what the service runs (the compiled
code and its production dependencies), named `<ref>-<source hash>`: the same
source always gives the same id, so a second build of it is a cache hit, and
staging and production receive the same bytes. Builds run in a scratch copy of
the source, with an environment that holds no vigil secret.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vigil.core.errors import ConfigError, VigilError
from vigil.core.local_files import sha256_of, write_private
from vigil.core.paths import REPO_ROOT, LocalState, rel
from vigil.facts.nodejs import parse_node_version
from vigil.operations.nodejs import satisfies

# A service's source by URL: what git fetches over, never an option ("-...") or a local path.
GIT_URL = re.compile(r"^(https://|ssh://|git://|file://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)[^\s]+$")
# Never copied into a build: what a build makes, and the repository's own metadata.
NOT_SOURCE = {"node_modules", "dist", ".next", ".git", ".vigil"}
REF_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
NPM_CI = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
BUILD_TIMEOUT = 1800


@dataclass(frozen=True)
class Kind:
    """How one kind of service is built and what of the build it runs.

    steps: commands run in the scratch copy, in order.
    packaged: path in the build -> path in the artifact; those marked optional may be absent.
    """

    steps: tuple[tuple[str, ...], ...]
    packaged: tuple[tuple[str, str], ...]
    optional: tuple[str, ...] = ()


KINDS = {
    # Compiled TypeScript (dist/) and the production dependencies: `node dist/main.js`.
    "node": Kind(
        steps=(tuple(NPM_CI), ("npm", "run", "build"), ("npm", "prune", "--omit=dev", "--no-audit", "--no-fund")),
        packaged=(("dist", "dist"), ("node_modules", "node_modules"), ("package.json", "package.json")),
        optional=("node_modules",),  # a service with no dependencies has none
    ),
    # Next.js `output: "standalone"`: server.js with the modules it traced, plus the static files it serves.
    "next-standalone": Kind(
        steps=(tuple(NPM_CI), ("npm", "run", "build")),
        packaged=((".next/standalone", "."), (".next/static", ".next/static"), ("public", "public")),
        optional=("public",),
    ),
}


class BuildError(VigilError):
    """A build failed; the message names the service, the step and the tail of its log."""


@dataclass(frozen=True)
class AppSource:
    """Where one service's code comes from.

    service: backend, frontend...; kind: a key of KINDS; path: a directory with package.json;
    ref: a git commit, tag or branch to build, or "" for the working tree as it is.
    repo: a git URL instead of a local directory; `path` is then the service's directory
    inside it ("." for the top), and a ref is required.
    Example: AppSource("backend", "node", REPO_ROOT / "examples/together-pray/backend", "main")
             AppSource("backend", "node", Path("backend"), "v1.4.0", repo="https://git.example.org/pray.git")
    """

    service: str
    kind: str
    path: Path
    ref: str = ""
    repo: str = ""

    @property
    def where(self) -> str:
        return f"{self.repo} {self.path.as_posix()}" if self.repo else rel(self.path)


@dataclass(frozen=True)
class Artifact:
    """A built release: `path` holds the tar.gz, `id` names it everywhere (hosts, audit, rollback)."""

    service: str
    id: str
    path: Path
    sha256: str
    ref: str
    source_hash: str
    size: int
    cached: bool = False

    def metadata(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("cached")
        data["path"] = str(self.path)
        return data


def app_sources(services: object, where: str, ref: str | None = None) -> dict[str, AppSource]:
    """The `app_services` var as AppSources, each checked; `ref` (from --ref) overrides every service's ref.

    Example: app_sources({"backend": {"kind": "node", "source": "examples/together-pray/backend", "ref": ""}}, where)
    """
    if not isinstance(services, dict) or not services:
        raise ConfigError(f"{where}: expected a mapping of service -> {{kind, source, ref}}")
    sources = {}
    for service, spec in services.items():
        at = f"{where}.{service}"
        if not isinstance(service, str) or not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", service):
            raise ConfigError(f"{where}: {service!r} is not a service name (lowercase letters, digits, '-')")
        if (
            not isinstance(spec, dict)
            or set(spec) - {"kind", "source", "ref", "subdir"}
            or not {"kind", "source"} <= set(spec)
        ):
            raise ConfigError(f"{at}: expected {{kind, source, ref}} (and subdir, for a git URL), got {spec!r}")
        if spec["kind"] not in KINDS:
            raise ConfigError(f"{at}.kind: {spec['kind']!r} is not one of {', '.join(KINDS)}")
        wanted = ref if ref is not None else (spec.get("ref") or "")
        if wanted and not REF_PATTERN.match(str(wanted)):
            raise ConfigError(f"{at}.ref: {wanted!r} is not a git ref")
        if GIT_URL.match(str(spec["source"])):
            if re.match(r"^[a-z]+://[^/@]*:[^/@]*@", str(spec["source"])):
                # It would sit in the inventory and show in git's errors: a credential helper or an ssh key instead.
                raise ConfigError(
                    f"{at}.source: a git URL with a password in it; use an ssh URL or a git credential helper"
                )
            subdir = str(spec.get("subdir") or ".")
            if not wanted:
                raise ConfigError(f"{at}.ref: a git URL needs a ref to build (a commit, tag or branch)")
            if (
                subdir.startswith(("/", "-"))
                or ".." in subdir.split("/")
                or not re.fullmatch(r"[A-Za-z0-9._/-]+", subdir)
            ):
                raise ConfigError(f"{at}.subdir: {subdir!r} is not a directory inside the repository")
            sources[service] = AppSource(service, spec["kind"], Path(subdir), str(wanted), repo=str(spec["source"]))
            continue
        if "subdir" in spec:
            raise ConfigError(f"{at}.subdir: only for a source given as a git URL")
        path = (REPO_ROOT / str(spec["source"])).resolve()
        if not (path / "package.json").is_file():
            raise ConfigError(f"{at}.source: {spec['source']} has no package.json")
        sources[service] = AppSource(service, spec["kind"], path, str(wanted))
    return sources


# --- the source, copied and hashed ------------------------------------------------------


def _git(path: Path, *args: str, timeout: float = 120) -> str:
    # Never a prompt for credentials: a build without them fails and says so.
    result = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise BuildError(f"git {' '.join(args)} in {rel(path)}: {result.stderr.strip()[-300:]}")
    return result.stdout.strip()


def snapshot(source: AppSource, into: Path, mirrors: Path) -> tuple[str, str]:
    """Copy the source to build into `into`; returns (ref label, source hash).

    mirrors: where the git repositories services are built from by URL are mirrored, one per URL.

    With a ref, the copy is `git archive` of that commit's subdirectory and the hash
    its tree id, so what is built is exactly what the ref names. Without one, the
    working tree is copied (minus build output) and hashed file by file.
    """
    if source.repo:
        top, subdirectory = mirror(source.repo, mirrors), source.path.as_posix()
    elif source.ref:
        top = Path(_git(source.path, "rev-parse", "--show-toplevel"))
        subdirectory = source.path.relative_to(top).as_posix()
    if source.ref:
        commit = _git(top, "rev-parse", "--verify", "--quiet", f"{source.ref}^{{commit}}")
        # "commit:." is not a tree spec git takes; "commit:" is the top.
        tree = _git(top, "rev-parse", f"{commit}:{'' if subdirectory == '.' else subdirectory}")
        archive = subprocess.run(["git", "-C", str(top), "archive", "--format=tar", commit, subdirectory],
                                 capture_output=True, timeout=300)
        if archive.returncode != 0:
            raise BuildError(
                f"git archive {source.ref} {subdirectory}: {archive.stderr.decode(errors='replace')[-300:]}"
            )
        staging = into.parent / f"{into.name}.git"
        staging.mkdir()
        _extract_tar(archive.stdout, staging)
        (staging / subdirectory).rename(into)
        if staging.exists():
            shutil.rmtree(staging)
        if not (into / "package.json").is_file():
            raise BuildError(f"{source.service}: no package.json in {source.where} at {source.ref}")
        return commit[:10], tree
    shutil.copytree(
        source.path, into, symlinks=True, ignore=lambda directory, names: [n for n in names if n in NOT_SOURCE]
    )
    return "worktree", tree_hash(into)


def mirror(url: str, mirrors: Path) -> Path:
    """A bare mirror (under `mirrors`) of the repository at `url`, cloned once and fetched up to date on every call."""
    mirrors.mkdir(parents=True, exist_ok=True)
    path = mirrors / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.git"
    if path.is_dir():
        _git(path, "fetch", "--prune", "--quiet", "origin", timeout=600)
        return path
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _git(mirrors, "clone", "--mirror", "--quiet", "--", url, partial.name, timeout=600)
    partial.rename(path)
    return path


def _extract_tar(data: bytes, into: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(into, filter="data")


def tree_hash(root: Path) -> str:
    """sha256 over every file's relative path, executable bit and content (and links' targets), in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest.update(f"L {relative} {os.readlink(path)}\n".encode())
        elif path.is_file():
            executable = "x" if os.access(path, os.X_OK) else "-"
            digest.update(f"F {relative} {executable} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


# --- building ----------------------------------------------------------------------------------


def build_environment(artifact_id: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """What a build's commands see: the tools' settings, never vigil's secrets (npm scripts run any code)."""
    base = dict(os.environ if base is None else base)
    kept = {key: value for key, value in base.items()
            if key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "http_proxy", "https_proxy", "no_proxy")
            or key.lower().startswith("npm_config_")}
    return {**kept, "CI": "1", "NEXT_TELEMETRY_DISABLED": "1",
            "npm_config_update_notifier": "false", "VIGIL_BUILD_ID": artifact_id}


def check_node(source: AppSource, node_version: str, manifest: Path) -> None:
    """The control machine's Node.js must satisfy the service's engines.node (from `manifest`, the
    package.json being built), as the hosts' must."""
    engines = json.loads(manifest.read_text()).get("engines", {}).get("node")
    version = parse_node_version(node_version, 0)
    if engines and version and not satisfies(version, engines):
        raise BuildError(f"{source.service}: this machine's Node.js {node_version.strip()} does not satisfy "
                         f"engines.node {engines!r} of {source.where}/package.json")


def package(build_dir: Path, kind: Kind, target: Path) -> None:
    """Write the artifact: a tar.gz of the packaged paths with fixed times and owners.

    Fixed, so that equal builds give equal bytes.
    """
    entries: list[tuple[Path, str]] = []
    for source, destination in kind.packaged:
        path = build_dir / source
        if not path.exists():
            if source in kind.optional:
                continue
            raise BuildError(f"the build made no {source}")
        if path.is_dir() and not path.is_symlink():
            if destination != ".":
                entries.append((path, destination))
            for child in sorted(path.rglob("*")):
                entries.append((child, (Path(destination) / child.relative_to(path)).as_posix()))
        else:
            entries.append((path, destination))
    with open(target, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, name in sorted(entries, key=lambda entry: entry[1]):
            info = archive.gettarinfo(str(path), arcname=name.removeprefix("./"))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if (info.isdir() or info.mode & 0o100) else 0o644
            if info.isfile():
                with open(path, "rb") as stream:
                    archive.addfile(info, stream)
            else:
                archive.addfile(info)


Runner = Callable[[list[str], Path, dict[str, str], Path], int]


def run_step(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> int:
    """Run one build command, appending its output to `log`; returns its exit status."""
    with open(log, "ab") as stream:
        stream.write(f"$ {' '.join(argv)}\n".encode())
        stream.flush()
        try:
            return subprocess.run(argv, cwd=cwd, env=env, stdout=stream, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT).returncode
        except FileNotFoundError:
            stream.write(f"{argv[0]}: not found\n".encode())
            return 127


# Set (to anything) where vigil must never build, only ship artifacts built elsewhere (CI deploy jobs).
NO_BUILD_VARIABLE = "VIGIL_NO_BUILD"


def build(source: AppSource, state: LocalState | None = None, runner: Runner = run_step,
          echo: Callable[[str], None] = lambda line: None) -> Artifact:
    """The artifact of `source`: from the cache when this source was built before, else built now.

    state: where artifacts and source mirrors are kept (default: .vigil/); echo: progress lines.

    Example: build(app_sources(services, where)["backend"]).id == "worktree-3f9e0c1a2b3c"
    """
    state = state or LocalState.default()
    kind = KINDS[source.kind]
    directory = state.artifacts / source.service
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        build_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"vigil-build-{source.service}-")))
        build_dir = build_dir / "src"
        ref_label, source_hash = snapshot(source, build_dir, state.sources)
        artifact_id = f"{ref_label}-{source_hash[:12]}"
        target, meta = directory / f"{artifact_id}.tar.gz", directory / f"{artifact_id}.json"
        # Two vigil processes building the same source (two deploys at once) take turns: the second finds
        # the first's artifact, instead of both writing the same files.
        lock = stack.enter_context(open(directory / f".{artifact_id}.lock", "a"))
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _cached(target, meta)
        if cached:
            echo(f"{source.service}: {artifact_id} already built ({rel(target)})")
            return dataclasses.replace(cached, cached=True)
        if os.environ.get(NO_BUILD_VARIABLE):
            # A CI deploy job holds the env's decryption key: it ships what a job without secrets built.
            raise BuildError(
                f"{source.service}: no artifact {artifact_id} in {rel(directory)}, and {NO_BUILD_VARIABLE} says "
                "this machine may not build (it holds the env's secrets; npm scripts run any code): build it "
                "where no secret is (the workflow's build job) and bring the artifact here"
            )
        node = (
            subprocess.run(["node", "--version"], capture_output=True, text=True).stdout if shutil.which("node") else ""
        )
        if not node:
            raise BuildError(
                f"{source.service}: building needs Node.js and npm on this machine (scripts/bootstrap installs them)"
            )
        check_node(source, node, build_dir / "package.json")
        log = directory / f"{artifact_id}.build.log"
        log.write_bytes(b"")
        env = build_environment(artifact_id)
        for step in kind.steps:
            echo(f"{source.service}: {' '.join(step)}")
            status = runner(list(step), build_dir, env, log)
            if status != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise BuildError(f"{source.service}: `{' '.join(step)}` exited {status} (log: {rel(log)}):\n{tail}")
        partial = target.with_name(target.name + ".partial")
        try:
            package(build_dir, kind, partial)
        except BuildError as error:
            partial.unlink(missing_ok=True)
            raise BuildError(f"{source.service}: {error.message}") from None
        os.replace(partial, target)
        artifact = Artifact(
            source.service, artifact_id, target, sha256_of(target), ref_label, source_hash, target.stat().st_size
        )
        write_private(meta, json.dumps({**artifact.metadata(), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime()),
                                        "node": node.strip(), "kind": source.kind}, indent=2) + "\n", 0o644)
    echo(f"{source.service}: built {artifact_id} ({artifact.size // 1024} KiB)")
    return artifact


def built(service: str, artifact_id: str, state: LocalState | None = None) -> Artifact | None:
    """The artifact `artifact_id` of `service` from the local cache, if it is there intact."""
    directory = (state or LocalState.default()).artifacts / service
    return _cached(directory / f"{artifact_id}.tar.gz", directory / f"{artifact_id}.json")


def _cached(target: Path, meta: Path) -> Artifact | None:
    """The artifact recorded at `meta`, if its file is there and still has the recorded checksum."""
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if not target.is_file() or sha256_of(target) != data.get("sha256"):
        return None
    return Artifact(data["service"], data["id"], target, data["sha256"], data["ref"], data["source_hash"], data["size"])
