"""Where vigil's files are: the repository, and what it keeps on this machine under .vigil/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def rel(path: Path) -> str:
    """`path` relative to the repository when inside it: how errors name files."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class LocalState:
    """What vigil keeps on this control machine: the audit log, built artifacts, source mirrors,
    incident records and pulled backups. $VIGIL_STATE_DIR points tests at a scratch directory.

    Example: LocalState.default().incidents -> <repo>/.vigil/incidents
    """

    root: Path

    @classmethod
    def default(cls) -> "LocalState":
        return cls(Path(os.environ.get("VIGIL_STATE_DIR") or REPO_ROOT / ".vigil"))

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def sources(self) -> Path:
        """Mirrors of the git repositories services are built from by URL."""
        return self.root / "sources"

    @property
    def incidents(self) -> Path:
        return self.root / "incidents"

    @property
    def backups(self) -> Path:
        return self.root / "backups"
