"""Every plugin is covered: each operation class of vigil.operations and each fact of vigil.facts has at
least one case in its module's case file (tests/unit/<kind>/cases/<module>.yml), or, for the plugins whose
plans need code to set up (SCRAM verifiers, rendered rules), its own test module
tests/unit/<kind>/test_<module>.py naming it. A plugin added without a case fails here.
"""

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import vigil.facts
import vigil.operations
from tests.support.cases import read_cases
from vigil.core.facts import Fact
from vigil.core.operations import Operation

UNIT = Path(__file__).parent


def plugins(package, wanted) -> list[tuple[str, str]]:
    """(module, name) of every plugin `wanted(object)` selects, defined in a module of `package`."""
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found += [(info.name, name) for name, value in vars(module).items()
                  if wanted(value) and getattr(value, "__module__", None) == module.__name__]
    return found


def is_operation(value) -> bool:
    return inspect.isclass(value) and issubclass(value, Operation)


def is_fact(value) -> bool:
    return inspect.isfunction(value) and inspect.signature(value).return_annotation in (Fact, "Fact")


def covered(kind: str, field: str, module: str, name: str) -> bool:
    cased = {(case_module, case[field]) for case_module, case in read_cases(UNIT / kind / "cases")}
    own_tests = UNIT / kind / f"test_{module}.py"
    return (module, name) in cased or (own_tests.exists() and name in own_tests.read_text())


OPERATIONS = plugins(vigil.operations, is_operation)
FACTS = plugins(vigil.facts, is_fact)


def test_the_plugins_are_found():
    # The discovery itself must see the plugins, or every coverage test below would pass on nothing.
    assert ("systemd", "DaemonReload") in OPERATIONS and ("files", "File") in OPERATIONS
    assert ("host", "swaps_fact") in FACTS and ("postgresql", "psql_query") in FACTS


@pytest.mark.parametrize("module, name", OPERATIONS, ids=[f"{module}.{name}" for module, name in OPERATIONS])
def test_every_operation_has_a_case(module, name):
    assert covered("operations", "op", module, name), (
        f"vigil.operations.{module}.{name} has no case in tests/unit/operations/cases/{module}.yml"
    )


@pytest.mark.parametrize("module, name", FACTS, ids=[f"{module}.{name}" for module, name in FACTS])
def test_every_fact_has_a_case(module, name):
    assert covered("facts", "fact", module, name), (
        f"vigil.facts.{module}.{name} has no case in tests/unit/facts/cases/{module}.yml"
    )
