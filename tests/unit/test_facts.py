"""Fact parsers (table-driven) and the one-round-trip batch, run through a real local shell."""

import hashlib
import os

import pytest

from vigil import facts as F
from vigil.transport import LocalTransport
from vigil.runner import FactCache

PARSERS = [
    (F.parse_file, "", 1, F.FileState(None)),
    (F.parse_file, "link\t\t\t\t0\n/usr/share/zoneinfo/Etc/UTC\n", 0, F.FileState("link", target="/usr/share/zoneinfo/Etc/UTC")),
    (F.parse_file, "directory\t755\troot\troot\t4096\n", 0, F.FileState("directory", "0755", "root", "root", 4096)),
    (F.parse_file, "regular empty file\t600\tapp\tapp\t0\ne3b0\n\n", 0, F.FileState("file", "0600", "app", "app", 0, "e3b0", content=b"")),
    (F.parse_file, "regular file\t644\troot\troot\t3\nabcd\naGkK\n", 0, F.FileState("file", "0644", "root", "root", 3, "abcd", content=b"hi\n")),
    (F.parse_file, "regular file\t644\troot\troot\t999999\nabcd\n", 0, F.FileState("file", "0644", "root", "root", 999999, "abcd", content=None)),
    (F.parse_file, "socket\t755\troot\troot\t0\n", 0, F.FileState("other", "0755", "root", "root", 0)),
    (F.parse_dpkg_installed, "curl\tinstall ok installed\t8.14.1-2\nnano\tdeinstall ok config-files\t8.4-1\nlibc6:amd64\tinstall ok installed\t2.41\n", 0,
     {"curl": "8.14.1-2", "libc6": "2.41"}),
    (F.parse_dpkg_installed, "nginx\thold ok installed\t1.26\n", 0, {"nginx": "1.26"}),
    (F.parse_age_seconds, "1700000100 1700000000\n", 0, 100),
    (F.parse_age_seconds, "", 1, None),
    (F.parse_user, "deploy:x:1000:1000::/home/deploy:/bin/bash\ndeploy sudo\n", 0, F.UserState(True, 1000, "/home/deploy", "/bin/bash", ("deploy", "sudo"))),
    (F.parse_user, "", 2, F.UserState(False)),
    (F.parse_systemctl_show, "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nNeedDaemonReload=no\n", 0, F.UnitState("loaded", "active", "enabled", False)),
    (F.parse_systemctl_show, "LoadState=not-found\nActiveState=inactive\nUnitFileState=\nNeedDaemonReload=no\n", 0, F.UnitState("not-found", "inactive", "", False)),
    (F.parse_swaps, "Filename\tType\tSize\tUsed\tPriority\n/swapfile  file  1048572  0  -2\n", 0, ["/swapfile"]),
    (F.parse_swaps, "Filename\tType\tSize\tUsed\tPriority\n", 0, []),
    (F.parse_container, "systemd-nspawn\n", 0, "systemd-nspawn"),
    (F.parse_container, "none\n", 1, None),
]


@pytest.mark.parametrize("parse, stdout, status, expected", PARSERS, ids=[f"{p.__name__}-{i}" for i, (p, *_ ) in enumerate(PARSERS)])
def test_parser(parse, stdout, status, expected):
    assert parse(stdout, status) == expected


def test_file_fact_reads_a_real_file_link_and_absence(tmp_path):
    data = tmp_path / "data.txt"
    data.write_bytes(b"line one\nline two\n")
    os.chmod(data, 0o640)
    link = tmp_path / "link"
    link.symlink_to(data)
    cache = FactCache(LocalTransport(), host=None)
    known = cache.ensure([F.file_fact(str(data)), F.file_fact(str(link)), F.file_fact(str(tmp_path / "absent")),
                          F.file_fact(str(tmp_path))])
    state = known[f"file:{data}"]
    assert (state.kind, state.mode, state.size) == ("file", "0640", 18)
    assert state.sha256 == hashlib.sha256(b"line one\nline two\n").hexdigest()
    assert state.content == b"line one\nline two\n"
    assert known[f"file:{link}"] == F.FileState("link", target=str(data))
    assert known[f"file:{tmp_path / 'absent'}"].kind is None
    assert known[f"file:{tmp_path}"].kind == "directory"
    assert cache.round_trips == 1


def test_batch_frames_cannot_be_forged_by_file_content(tmp_path):
    """A file that prints marker-like lines still parses into the right fact."""
    evil = tmp_path / "evil"
    evil.write_text("@@deadbeef end 0 0\n@@deadbeef begin 1\n")
    cache = FactCache(LocalTransport(), host=None)
    known = cache.ensure([F.file_fact(str(evil)), F.status_fact(F.cmd("false", sudo=False))])
    assert known[f"file:{evil}"].content == evil.read_bytes()
    assert list(known.values())[1] == 1


def test_cache_asks_only_for_unknown_facts():
    cache = FactCache(LocalTransport(), host=None)
    fact = F.status_fact(F.cmd("true", sudo=False))
    cache.ensure([fact])
    cache.ensure([fact])
    assert cache.round_trips == 1
    cache.invalidate()
    cache.ensure([fact])
    assert cache.round_trips == 2


def test_split_batch_reports_a_missing_frame():
    with pytest.raises(ValueError, match="fact 1 missing"):
        F.split_batch("@@n begin 0\nx\n\n@@n end 0 0\n", 2, "n")


@pytest.mark.parametrize("printed", ["", "a", "a\n", "a\n\n", "\n", "two\nlines\n"])
def test_a_fact_reads_exactly_what_its_command_printed(printed):
    cache = FactCache(LocalTransport(), host=None)
    fact = F.Fact("printed", F.script('printf "%s" "$1"', printed, sudo=False), lambda stdout, status: stdout)
    assert cache.ensure([fact])["printed"] == printed
