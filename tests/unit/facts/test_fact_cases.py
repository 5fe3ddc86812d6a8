"""Every fact's parser, table-driven from tests/unit/facts/cases/<module>.yml (no host): one case file per
plugin module of vigil.facts, read whole by one test."""

import typing
from pathlib import Path

import pytest

from tests.support.cases import case_id, parsed_value, plain_to, plugin, read_cases

CASES = read_cases(Path(__file__).parent / "cases")


@pytest.mark.parametrize("module, case", CASES, ids=[case_id(module, case) for module, case in CASES])
def test_fact_parse(module, case):
    function = plugin("facts", module, case["fact"])
    hints = list(typing.get_type_hints(function).items())
    fact = function(*(plain_to(hint, value) for (_, hint), value in zip(hints, case.get("args", []))))
    if "command" in case:
        assert fact.command.display("root") == case["command"]
    assert fact.parse(case["output"], case.get("status", 0)) == parsed_value(fact, case["value"])
