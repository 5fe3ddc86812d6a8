"""Strict patterns for every inventory value that ends up near a shell.

Commands quote their tokens anyway; these checks exist so a hostile or mistyped
value (`web1; rm -rf /`, `$(id)`, a backtick, `..`) is refused with a message
naming where it came from, before any host is contacted.
"""

from __future__ import annotations

import ipaddress
import re

from vigil.core.errors import ConfigError

# Inventory names: hosts, groups, variables' owners. No dots so `..` can never appear.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
# DNS host names (RFC 1123 labels).
HOSTNAME_PATTERN = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# POSIX-portable user names as useradd accepts them by default.
USER_PATTERN = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Absolute paths made of portable filename characters only.
PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
# Paths on the control machine (never handed to a shell).
LOCAL_PATH_PATTERN = re.compile(r"^[A-Za-z0-9._+@~/-]+$")


def _fail(where: str, what: str, value: object) -> ConfigError:
    return ConfigError(f"{where}: {what}, got {value!r}")


def name(value: object, where: str) -> str:
    """Return `value` if it is a valid inventory name (host, group), else raise.

    Example: name("web1", "inventory/staging.yml: hosts") -> "web1"
    """
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise _fail(where, "a name must be letters, digits, '-' or '_' (at most 63)", value)
    return value


def address(value: object, where: str) -> str:
    """Return `value` if it is an IP address or a DNS host name, else raise.

    Example: address("10.213.1.2", "inventory/sandbox.yml: hosts.vps1.address")
    """
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            if HOSTNAME_PATTERN.match(value):
                return value
    raise _fail(where, "an address must be an IP address or a DNS host name", value)


def ip_address(value: object, where: str) -> str:
    """Return `value` as a normalised IP address (no host names: firewalls and pg_hba.conf need addresses).

    Example: ip_address("10.0.0.5", "inventory/staging.yml: hosts.db1.private_address")
    """
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
    raise _fail(where, "expected an IP address", value)


def port(value: object, where: str) -> int:
    """Return `value` as a TCP port number (1-65535), else raise.

    Example: port(22, "inventory/staging.yml: defaults.port") -> 22
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail(where, "a port must be a whole number from 1 to 65535", value)
    return value


def user(value: object, where: str) -> str:
    """Return `value` if it is a portable Unix user name, else raise.

    Example: user("deploy", "inventory/staging.yml: hosts.web1.user")
    """
    if not isinstance(value, str) or not USER_PATTERN.match(value):
        raise _fail(where, "a user must match [a-z_][a-z0-9_-]* (at most 32)", value)
    return value


def _has_parent_segment(path: str) -> bool:
    return ".." in path.split("/")


def absolute_path(value: object, where: str) -> str:
    """Return `value` if it is an absolute path of safe characters without `..`.

    Example: absolute_path("/etc/motd", "roles/base/defaults.yml: base_motd_path")
    """
    if not isinstance(value, str) or not PATH_PATTERN.match(value) or _has_parent_segment(value):
        raise _fail(where, "a path must be absolute, use only [A-Za-z0-9._+@/-] and no '..'", value)
    return value


def local_path(value: object, where: str) -> str:
    """Return `value` if it is a control-machine path of safe characters.

    Local paths (an SSH key file) are opened by Python, never passed to a shell,
    so `..` and `~` are allowed; shell metacharacters still are not.
    Example: local_path("../.vigil/sandbox/id_ed25519", "inventory/sandbox.yml: defaults.ssh_key")
    """
    if not isinstance(value, str) or not LOCAL_PATH_PATTERN.match(value):
        raise _fail(where, "a key path must use only [A-Za-z0-9._+@~/-]", value)
    return value
