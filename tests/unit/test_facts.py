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
    # Content sent whole: its checksum is computed here.
    (F.parse_file, "regular file\t644\troot\troot\t3\n\naGkK\n", 0,
     F.FileState("file", "0644", "root", "root", 3, hashlib.sha256(b"hi\n").hexdigest(), content=b"hi\n")),
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


def test_a_big_file_comes_as_its_checksum_and_an_empty_one_as_empty_content(tmp_path):
    big, empty = tmp_path / "big", tmp_path / "empty"
    big.write_bytes(b"x" * (F.CONTENT_LIMIT + 1))
    empty.write_bytes(b"")
    known = FactCache(LocalTransport(), host=None).ensure([F.file_fact(str(big)), F.file_fact(str(empty))])
    assert known[f"file:{big}"].content is None
    assert known[f"file:{big}"].sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert known[f"file:{empty}"].content == b"" and known[f"file:{empty}"].sha256 == hashlib.sha256(b"").hexdigest()


def test_a_batch_defines_each_script_body_once_and_reads_files_and_units_together(tmp_path):
    guards = [F.status_fact(F.script('test -e "$1"', str(tmp_path / name))) for name in ("a", "b", "c")]
    files = [F.file_fact(str(tmp_path / name)) for name in ("a", "b")]
    units = [F.unit_fact("nginx.service"), F.unit_fact("ssh.service")]
    body, _ = F.batch_script(guards + files + units + [F.status_fact(F.cmd("true", sudo=False))])
    assert body.count("vigil_fact_0() {") == 1 and body.count("( vigil_fact_0 ") == 3
    assert body.count("( vigil_fact_1 ") == 1  # both files, one process
    assert body.count("systemctl show") == 1 and "nginx.service ssh.service" in body
    assert "sh -c" not in body and "( true )" in body


def test_files_read_without_python_are_read_exactly_as_with_it(tmp_path):
    """A host without python3 gets the same answers from the shell, path by path."""
    import shutil
    import subprocess
    (tmp_path / "small").write_bytes(b"one\ntwo\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "big").write_bytes(b"y" * (F.CONTENT_LIMIT + 5))
    (tmp_path / "link").symlink_to(tmp_path / "small")
    (tmp_path / "dir").mkdir()
    os.chmod(tmp_path / "small", 0o4750)
    paths = tuple(str(tmp_path / name) for name in ("small", "empty", "big", "link", "dir", "absent"))
    command = F.Together("files", "", F._files_command, F._split_files).command(paths)
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "stat", "base64", "sha256sum", "cut", "readlink"):
        (bare / tool).symlink_to(shutil.which(tool))
    answers = {}
    for name, path in (("python", os.environ["PATH"]), ("shell", str(bare))):
        done = subprocess.run(list(command.argv), capture_output=True, text=True, env={"PATH": path}, timeout=30)
        answers[name] = [F.parse_file(part, 0) for part in F._split_files(done.stdout, done.returncode, len(paths))]
    assert answers["python"] == answers["shell"]
    small, empty, big, link, directory, absent = answers["python"]
    assert (small.mode, small.content, small.sha256) == ("4750", b"one\ntwo\n", hashlib.sha256(b"one\ntwo\n").hexdigest())
    assert empty.content == b"" and big.content is None and big.sha256 == hashlib.sha256(b"y" * (F.CONTENT_LIMIT + 5)).hexdigest()
    assert (link.kind, link.target, directory.kind, absent.kind) == ("link", paths[0], "directory", None)


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


def test_facts_read_together_are_answered_each_in_its_place():
    """A joined frame answers for its members wherever they were among the batch's facts."""
    facts = [F.unit_fact("a.service"), F.status_fact(F.cmd("true", sudo=False)), F.unit_fact("b.service")]
    batch = F.Batch.of(facts, nonce="n")
    output = ("@@n begin 0\nLoadState=loaded\nActiveState=active\n\nLoadState=not-found\nActiveState=inactive\n\n@@n end 0 0\n"
              "@@n begin 1\n\n@@n end 1 0\n")
    (first, _), (_, status), (second, _) = batch.outputs(output)
    assert F.parse_systemctl_show(first, 0).active == "active" and status == 0
    assert F.parse_systemctl_show(second, 0).load == "not-found"
    with pytest.raises(ValueError, match="answered for 1 units, not 2"):
        batch.outputs("@@n begin 0\nLoadState=loaded\n\n@@n end 0 0\n@@n begin 1\n\n@@n end 1 0\n")


def test_queries_asked_in_one_psql_are_cut_at_the_breaks_and_a_failure_answers_none():
    from vigil.postgresql import QUERY_BREAK, database_fact, parse_database, parse_role, role_fact
    facts = [role_fact("app"), database_fact("app")]
    batch = F.Batch.of(facts, nonce="n")
    assert batch.script.count("psql") == 1
    (role, _), (owner, _) = batch.outputs(f"@@n begin 0\nrole|SCRAM-SHA-256$x\n{QUERY_BREAK}\napp\n\n@@n end 0 0\n")
    assert parse_role(role, 0) == (True, "SCRAM-SHA-256$x") and parse_database(owner, 0) == "app"
    down = batch.outputs("@@n begin 0\npsql: error: connection refused\n\n@@n end 0 2\n")
    assert [parse_role(down[0][0], down[0][1]), parse_database(down[1][0], down[1][1])] == [None, None]


def test_a_path_that_cannot_be_read_or_forges_a_break_answers_only_for_itself(tmp_path):
    (tmp_path / "before").write_text("a\n")
    (tmp_path / "after").write_text("b\n")
    forged = tmp_path / "forged"
    forged.symlink_to(f"x\n{F.FILE_BREAK} 0000000000000000\nregular file\t644\troot\troot\t1\n")
    paths = [str(tmp_path / "before"), str(forged), "/proc/self/mem", str(tmp_path / "after")]
    known = FactCache(LocalTransport(), host=None).ensure([F.file_fact(path) for path in paths])
    assert known[f"file:{tmp_path / 'before'}"].content == b"a\n" and known[f"file:{tmp_path / 'after'}"].content == b"b\n"
    assert known[f"file:{forged}"].kind == "link"
    assert known["file:/proc/self/mem"].kind == "file" and known["file:/proc/self/mem"].content is None
