"""The nodejs role: the distribution's Node.js, checked against the engines the apps declare."""

import json

from vigil.core.errors import ConfigError
from vigil.core.paths import REPO_ROOT, rel
from vigil.operations.apt import AptPackages
from vigil.operations.nodejs import NodeVersion, satisfies


def tasks(role, vars):
    """The nodejs role's operations for one host, in order."""
    requirements = {}
    for index, manifest in enumerate(vars.string_list("nodejs_app_manifests")):
        requirements[manifest] = engines_of(manifest, f"{vars.where('nodejs_app_manifests')}[{index}]")
    extra = vars.string("nodejs_engines")
    if extra:
        check_range(extra, vars.where("nodejs_engines"))
        requirements[vars.where("nodejs_engines")] = extra
    return [
        AptPackages(vars.string_list("nodejs_packages", r"[a-z0-9][a-z0-9+.-]+"), name="Ensure Node.js is installed."),
        NodeVersion(requirements),
    ]


def engines_of(manifest: str, where: str) -> str:
    """`engines.node` of a package.json on the control machine (relative to the repository)."""
    path = (REPO_ROOT / manifest).resolve()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: {manifest} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{rel(path)}: not a readable package.json ({error})") from None
    engines = (
        data.get("engines", {}).get("node")
        if isinstance(data, dict) and isinstance(data.get("engines"), dict)
        else None
    )
    if not isinstance(engines, str):
        raise ConfigError(
            f"{rel(path)}: declares no engines.node; "
            f'add the Node.js range the app needs ("engines": {{"node": ">=20"}})'
        )
    check_range(engines, f"{rel(path)}: engines.node")
    return engines


def check_range(engines: str, where: str) -> None:
    try:
        satisfies((0, 0, 0), engines)
    except ValueError:
        raise ConfigError(f"{where}: not an npm engines range: {engines!r}") from None
