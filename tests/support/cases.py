"""Case files for facts and operations (tests/unit/facts/cases/<module>.yml, tests/unit/operations/cases/
<module>.yml), as pyinfra keeps one fixture per case: plain YAML values are turned into what vigil's
code returns by the type annotations that code already carries, so a new fact or operation needs a case
file and nothing here.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from pathlib import Path
from typing import Any, Callable

from vigil.core.commands import Command
from vigil.core.facts import Fact
from vigil.core.yaml_loader import load_yaml


def read_cases(directory: Path) -> list[tuple[str, dict]]:
    """(module, case) for every case of every <module>.yml in `directory`, in file order."""
    found = []
    for path in sorted(directory.glob("*.yml")):
        for case in load_yaml(path) or []:
            found.append((path.stem, case))
    return found


def case_id(module: str, case: dict) -> str:
    return f"{module}-{case['id']}"


def plain_to(hint: Any, plain: Any) -> Any:
    """`plain` (what YAML gives) as a value of the annotated type `hint`: dataclasses from mappings,
    tuples from lists, bytes from text; anything else as it is."""
    if plain is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is not type(None):
                return plain_to(option, plain)
    if dataclasses.is_dataclass(hint) and isinstance(plain, dict):
        fields = typing.get_type_hints(hint)
        return hint(**{name: plain_to(fields[name], value) for name, value in plain.items()})
    if origin is tuple and isinstance(plain, list):
        arguments = typing.get_args(hint)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(plain_to(arguments[0], item) for item in plain)
        return tuple(plain_to(argument, item) for argument, item in zip(arguments, plain))
    if hint is bytes and isinstance(plain, str):
        return plain.encode()
    if hint is Command and isinstance(plain, list):
        return Command(tuple(plain))
    if origin in (list, typing.Sequence, typing.get_origin(typing.Sequence[int])) and isinstance(plain, list):
        (argument,) = typing.get_args(hint) or (Any,)
        return [plain_to(argument, item) for item in plain]
    return plain


def parsed_value(fact: Fact, plain: Any) -> Any:
    """A case's plain value for `fact`, as the fact's parser would return it."""
    return plain_to(typing.get_type_hints(fact.parse).get("return", Any), plain)


def plugin(kind: str, module: str, name: str) -> Callable:
    """The fact function or operation class `name` of vigil.<kind>.<module>."""
    return getattr(importlib.import_module(f"vigil.{kind}.{module}"), name)


def build_operation(module: str, case: dict):
    """The case's operation, its arguments typed by the operation's own annotations."""
    operation = plugin("operations", module, case["op"])
    fields = typing.get_type_hints(operation)
    return operation(**{name: plain_to(fields.get(name, Any), value) for name, value in case["args"].items()})
