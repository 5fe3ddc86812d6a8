"""Where the vault's files are: secrets/ in the repository, and each machine's private keys outside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vigil.core import validation
from vigil.core.errors import ConfigError, VigilError
from vigil.core.paths import REPO_ROOT

SANDBOX = "sandbox"


class SecretsError(VigilError):
    """A secrets problem with a one-line message that names the env, file or key, never a value."""

    exit_code = ConfigError.exit_code


@dataclass(frozen=True)
class SecretsPaths:
    """secrets/ and the local state beside it; $VIGIL_SECRETS points tests at a scratch copy."""

    root: Path

    @classmethod
    def default(cls) -> "SecretsPaths":
        return cls(Path(os.environ.get("VIGIL_SECRETS") or REPO_ROOT / "secrets"))

    def encrypted(self, env: str) -> Path:
        return self.root / f"{env}.env.age"

    def recipients(self, env: str) -> Path:
        return self.root / "recipients" / f"{env}.txt"

    @property
    def schema(self) -> Path:
        return self.root / "schema.yml"

    def identity_file(self, env: str) -> Path:
        """Where this machine keeps its private key for `env` (never inside secrets/)."""
        if os.environ.get("VIGIL_AGE_IDENTITY_FILE"):
            return Path(os.environ["VIGIL_AGE_IDENTITY_FILE"])
        if env == SANDBOX:
            return self.root.parent / ".vigil" / "age" / "sandbox.key"
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return config_home / "vigil" / "age" / f"{env}.key"


def check_env(env: str) -> str:
    return validation.name(env, "--env")


def child_environment() -> dict[str, str]:
    """This process's environment without the age identity: editors and git need not see it."""
    return {name: value for name, value in os.environ.items() if name != "VIGIL_AGE_IDENTITY"}
