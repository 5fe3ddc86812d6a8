"""The fact framework: one round trip per batch of facts, run through a real local shell (the facts' own
parsers are table-driven in tests/unit/facts)."""

import pytest

from vigil.core.commands import cmd, script
from vigil.core.connectors.local import LocalTransport
from vigil.core.facts import Batch, Fact, split_batch
from vigil.core.runner import FactCache
from vigil.facts.files import file_fact
from vigil.facts.host import status_fact
from vigil.facts.systemd import parse_systemctl_show, unit_fact


def test_a_batch_defines_each_script_body_once_and_reads_files_and_units_together(tmp_path):
    guards = [status_fact(script('test -e "$1"', str(tmp_path / name))) for name in ("a", "b", "c")]
    files = [file_fact(str(tmp_path / name)) for name in ("a", "b")]
    units = [unit_fact("nginx.service"), unit_fact("ssh.service")]
    body = Batch.of(guards + files + units + [status_fact(cmd("true", sudo=False))]).script
    assert body.count("vigil_fact_0() {") == 1 and body.count("( vigil_fact_0 ") == 3
    assert body.count("( vigil_fact_1 ") == 1  # both files, one process
    assert body.count("systemctl show") == 1 and "nginx.service ssh.service" in body
    assert "sh -c" not in body and "( true )" in body


def test_batch_frames_cannot_be_forged_by_file_content(tmp_path):
    """A file that prints marker-like lines still parses into the right fact."""
    evil = tmp_path / "evil"
    evil.write_text("@@deadbeef end 0 0\n@@deadbeef begin 1\n")
    cache = FactCache(LocalTransport(), host=None)
    known = cache.ensure([file_fact(str(evil)), status_fact(cmd("false", sudo=False))])
    assert known[f"file:{evil}"].content == evil.read_bytes()
    assert list(known.values())[1] == 1


def test_cache_asks_only_for_unknown_facts():
    cache = FactCache(LocalTransport(), host=None)
    fact = status_fact(cmd("true", sudo=False))
    cache.ensure([fact])
    cache.ensure([fact])
    assert cache.round_trips == 1
    cache.invalidate()
    cache.ensure([fact])
    assert cache.round_trips == 2


def test_split_batch_reports_a_missing_frame():
    with pytest.raises(ValueError, match="fact 1 missing"):
        split_batch("@@n begin 0\nx\n\n@@n end 0 0\n", 2, "n")


@pytest.mark.parametrize("printed", ["", "a", "a\n", "a\n\n", "\n", "two\nlines\n"])
def test_a_fact_reads_exactly_what_its_command_printed(printed):
    cache = FactCache(LocalTransport(), host=None)
    fact = Fact("printed", script('printf "%s" "$1"', printed, sudo=False), lambda stdout, status: stdout)
    assert cache.ensure([fact])["printed"] == printed


def test_facts_read_together_are_answered_each_in_its_place():
    """A joined frame answers for its members wherever they were among the batch's facts."""
    facts = [unit_fact("a.service"), status_fact(cmd("true", sudo=False)), unit_fact("b.service")]
    batch = Batch.of(facts, nonce="n")
    output = (
        "@@n begin 0\nLoadState=loaded\nActiveState=active\n\n"
        "LoadState=not-found\nActiveState=inactive\n\n@@n end 0 0\n"
        "@@n begin 1\n\n@@n end 1 0\n"
    )
    (first, _), (_, status), (second, _) = batch.outputs(output)
    assert parse_systemctl_show(first, 0).active == "active" and status == 0
    assert parse_systemctl_show(second, 0).load == "not-found"
    with pytest.raises(ValueError, match="answered for 1 units, not 2"):
        batch.outputs("@@n begin 0\nLoadState=loaded\n\n@@n end 0 0\n@@n begin 1\n\n@@n end 1 0\n")
