"""Programs vigil installs on hosts (roles/pgbackrest's drill), imported as
modules from their files so their logic is unit-tested here, where they are written."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_script(path: Path, name: str) -> ModuleType:
    """The Python program at `path` (no .py suffix needed) as a module called `name`.

    Example: drill = load_script(REPO / "roles/pgbackrest/files/vigil-pgbackrest-drill", "vigil_drill")
    """
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
