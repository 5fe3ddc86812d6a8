"""The writer's log as the e2e tests and bench/ha.py read it, and the scripts they start it with."""

from __future__ import annotations

import pytest

from tests.support.app_database import Write, logged_writes, longest_pause, reader, writer


def test_each_logged_insert_is_read_with_its_number_time_and_outcome():
    assert logged_writes("7 100.250 ok\n8 103.500 failed\n") == [Write(7, 100.25, True), Write(8, 103.5, False)]


@pytest.mark.parametrize("log, pause", [
    ("1 10.0 ok\n2 10.1 ok\n3 10.2 ok\n", 0.1),
    # Refused inserts do not end a pause: only the next acknowledged one does.
    ("1 10.0 ok\n2 10.5 failed\n3 11.0 failed\n4 13.2 ok\n5 13.3 ok\n", 3.2),
])
def test_the_longest_pause_is_between_two_acknowledged_inserts(log, pause):
    assert longest_pause(logged_writes(log)) == pytest.approx(pause)


def test_the_scripts_take_their_arguments_as_numbers_only():
    assert writer(seconds=40).startswith("set -- 40\n") and reader(seconds=40, port=5001).startswith("set -- 40 5001\n")
    with pytest.raises(ValueError):
        writer(seconds="40; reboot")
