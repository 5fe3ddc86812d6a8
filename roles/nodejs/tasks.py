"""The nodejs role: the distribution's Node.js, checked against the apps' engines range."""

from vigil.errors import ConfigError
from vigil.nodejs import NodeVersion, satisfies
from vigil.operations import AptPackages


def tasks(role, vars):
    """The nodejs role's operations for one host, in order."""
    engines = vars.string("nodejs_engines")
    try:
        satisfies((0, 0, 0), engines)
    except ValueError:
        raise ConfigError(f"{vars.where('nodejs_engines')}: not an npm engines range: {engines!r}") from None
    return [
        AptPackages(vars.string_list("nodejs_packages", r"[a-z0-9][a-z0-9+.-]+"), name="Ensure Node.js is installed."),
        NodeVersion(engines),
    ]
