"""The code's own rules, checked with every unit run so that breaking one fails the build.

ruff (pyflakes, import order, line length, no unexplained function-level import, no module named like a
standard-library one) and import-linter (the layers of pyproject.toml, no cycles) run over the tree; each
is also shown to catch a planted violation, so a configuration that checks nothing cannot pass.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vigil.core.paths import REPO_ROOT
from vigil.incident import actions, checks, runbooks

BIN = Path(sys.executable).parent
# A module longer than this is doing more than one thing (docs/architecture.md: "where a change goes").
MODULE_LINES_LIMIT = 500


def ruff(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ruff"), "check", "--no-cache", "--output-format=concise", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """vigil/ and pyproject.toml copied aside, for planting violations without touching the checkout."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(REPO_ROOT / "vigil", root / "vigil", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_ruff_finds_nothing_in_the_tree():
    result = ruff(".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name, source, rule", [
    ("late.py", "def f():\n    import json\n\n    return json\n", "PLC0415"),
    ("secrets.py", '"""Shadows the standard library."""\n', "A005"),
    ("unused.py", "import os\n", "F401"),
    ("unsorted.py", "import sys\nimport os\n\nprint(os, sys)\n", "I001"),
    ("long.py", f"X = {'1' * 130}\n", "E501"),
])
def test_ruff_catches_a_planted_violation(tmp_path, name, source, rule):
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / name).write_text(source)
    result = ruff(".", cwd=tmp_path)
    assert result.returncode == 1 and f"pkg/{name}" in result.stdout and rule in result.stdout, result.stdout


def test_the_import_contracts_hold():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


LAYERS, NO_CYCLES = "Layers", "No import cycles"


@pytest.mark.parametrize("module, planted, broken", [
    # The engine importing a concern: core must import nothing above it (which also closes a cycle in vigil).
    ("vigil/core/errors.py", "import vigil.deploy.settings", {LAYERS, NO_CYCLES}),
    # A plugin importing the CLI.
    ("vigil/operations/apt.py", "import vigil.cli.common", {LAYERS, NO_CYCLES}),
    # Two concerns in the wrong order: deploy sits below incident.
    ("vigil/deploy/settings.py", "import vigil.incident.engine", {LAYERS, NO_CYCLES}),
    # A cycle inside one package, which the layers allow: the executor already imports the settings.
    ("vigil/deploy/settings.py", "import vigil.deploy.executor", {NO_CYCLES}),
])
def test_import_linter_catches_a_planted_violation(tree_copy, module, planted, broken):
    path = tree_copy / module
    original = path.read_text()
    path.write_text(original + f"\n{planted}  # planted by the test\n")
    try:
        result = lint_imports(tree_copy)
    finally:
        path.write_text(original)
    assert result.returncode == 1, result.stdout
    verdicts = [line for line in result.stdout.splitlines() if line.endswith((" KEPT", " BROKEN"))]
    assert len(verdicts) == 2, result.stdout
    assert {
        contract for contract in (LAYERS, NO_CYCLES)
        if any(line.startswith(contract) and line.endswith(" BROKEN") for line in verdicts)
    } == broken, result.stdout


def test_no_module_is_over_the_size_limit():
    sizes = {
        str(path.relative_to(REPO_ROOT)): len(path.read_text().splitlines())
        for path in (REPO_ROOT / "vigil").rglob("*.py")
    }
    assert {path: lines for path, lines in sizes.items() if lines > MODULE_LINES_LIMIT} == {}


def test_every_runbook_step_type_has_one_implementation_in_the_registry():
    """A step the runbook validator accepts must be one the library can run, and no implementation is dead."""
    assert set(checks.CHECKS) == set(runbooks.CHECKS)
    assert set(actions.ACTIONS) == set(runbooks.ACTIONS)
