"""docs/architecture.md's worked example is real: its fact and operation, added to the plugin modules it
names, pass the very case tests every fact and operation passes, with the cases it shows."""

import re
import sys
import types

import pytest

import vigil.facts
import vigil.operations

# As modules, so that pytest does not collect their tests a second time here.
from tests.unit.facts import test_fact_cases as fact_cases
from tests.unit.operations import test_operation_cases as operation_cases
from vigil.core.paths import REPO_ROOT
from vigil.core.yaml_loader import parse_yaml

DOC = REPO_ROOT / "docs" / "architecture.md"
# A fenced block whose first line names the file it belongs in: ```python\n# vigil/facts/host.py\n...```
BLOCK = re.compile(r"^```(python|yaml)\n# (\S+)[^\n]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> dict[str, str]:
    return {path: body for _, path, body in BLOCK.findall(DOC.read_text())}


def with_added(monkeypatch, package, name: str, code: str) -> types.ModuleType:
    """The plugin module `package.name` as if `code` were added to its file, in place of the real one."""
    real = getattr(package, name)
    module = types.ModuleType(real.__name__)
    module.__dict__.update({key: value for key, value in vars(real).items() if key != "__spec__"})
    monkeypatch.setitem(sys.modules, real.__name__, module)
    monkeypatch.setattr(package, name, module)
    exec(compile(code, real.__file__, "exec"), module.__dict__)
    return module


@pytest.fixture
def example(monkeypatch) -> dict[str, str]:
    found = blocks()
    assert set(found) == {"vigil/facts/host.py", "tests/unit/facts/cases/host.yml", "vigil/operations/system.py",
                          "tests/unit/operations/cases/system.yml"}, "the worked example's blocks are missing"
    with_added(monkeypatch, vigil.facts, "host", found["vigil/facts/host.py"])
    with_added(monkeypatch, vigil.operations, "system", found["vigil/operations/system.py"])
    return found


def test_the_example_fact_passes_its_cases(example):
    cases = parse_yaml(example["tests/unit/facts/cases/host.yml"], "docs/architecture.md").data
    assert {case["fact"] for case in cases} == {"hostname_fact"}
    for case in cases:
        fact_cases.test_fact_parse("host", case)


def test_the_example_operation_passes_its_cases(example):
    cases = parse_yaml(example["tests/unit/operations/cases/system.yml"], "docs/architecture.md").data
    assert {case["op"] for case in cases} == {"Hostname"} and len(cases) == 2
    for case in cases:
        operation_cases.test_operation_plan("system", case)
    with pytest.raises(ValueError, match="not a hostname"):
        vigil.operations.system.Hostname("web1; reboot")


def test_the_example_is_not_already_in_the_plugins():
    # It shows how to add one: were it there already, the test above would prove nothing about the doc.
    assert not hasattr(vigil.facts.host, "hostname_fact") and not hasattr(vigil.operations.system, "Hostname")
