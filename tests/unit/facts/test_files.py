"""The files fact on real paths: content, checksums, links, absence, and the shell's answer where a
host has no python3."""

import hashlib
import os
import shutil
import subprocess

from vigil.core.connectors.local import LocalTransport
from vigil.core.facts import Together
from vigil.core.runner import FactCache
from vigil.facts import files
from vigil.facts.files import CONTENT_LIMIT, FileState, file_fact, parse_file


def test_file_fact_reads_a_real_file_link_and_absence(tmp_path):
    data = tmp_path / "data.txt"
    data.write_bytes(b"line one\nline two\n")
    os.chmod(data, 0o640)
    link = tmp_path / "link"
    link.symlink_to(data)
    cache = FactCache(LocalTransport(), host=None)
    known = cache.ensure([file_fact(str(data)), file_fact(str(link)), file_fact(str(tmp_path / "absent")),
                          file_fact(str(tmp_path))])
    state = known[f"file:{data}"]
    assert (state.kind, state.mode, state.size) == ("file", "0640", 18)
    assert state.sha256 == hashlib.sha256(b"line one\nline two\n").hexdigest()
    assert state.content == b"line one\nline two\n"
    assert known[f"file:{link}"] == FileState("link", target=str(data))
    assert known[f"file:{tmp_path / 'absent'}"].kind is None
    assert known[f"file:{tmp_path}"].kind == "directory"
    assert cache.round_trips == 1


def test_a_big_file_comes_as_its_checksum_and_an_empty_one_as_empty_content(tmp_path):
    big, empty = tmp_path / "big", tmp_path / "empty"
    big.write_bytes(b"x" * (CONTENT_LIMIT + 1))
    empty.write_bytes(b"")
    known = FactCache(LocalTransport(), host=None).ensure([file_fact(str(big)), file_fact(str(empty))])
    assert known[f"file:{big}"].content is None
    assert known[f"file:{big}"].sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert known[f"file:{empty}"].content == b"" and known[f"file:{empty}"].sha256 == hashlib.sha256(b"").hexdigest()


def test_files_read_without_python_are_read_exactly_as_with_it(tmp_path):
    """A host without python3 gets the same answers from the shell, path by path."""
    (tmp_path / "small").write_bytes(b"one\ntwo\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "big").write_bytes(b"y" * (CONTENT_LIMIT + 5))
    (tmp_path / "link").symlink_to(tmp_path / "small")
    (tmp_path / "dir").mkdir()
    os.chmod(tmp_path / "small", 0o4750)
    paths = tuple(str(tmp_path / name) for name in ("small", "empty", "big", "link", "dir", "absent"))
    command = Together("files", "", files._files_command, files._split_files).command(paths)
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "stat", "base64", "sha256sum", "cut", "readlink"):
        (bare / tool).symlink_to(shutil.which(tool))
    answers = {}
    for name, path in (("python", os.environ["PATH"]), ("shell", str(bare))):
        done = subprocess.run(list(command.argv), capture_output=True, text=True, env={"PATH": path}, timeout=30)
        answers[name] = [parse_file(part, 0) for part in files._split_files(done.stdout, done.returncode, len(paths))]
    assert answers["python"] == answers["shell"]
    small, empty, big, link, directory, absent = answers["python"]
    assert (small.mode, small.content, small.sha256) == (
        "4750",
        b"one\ntwo\n",
        hashlib.sha256(b"one\ntwo\n").hexdigest(),
    )
    assert (
        empty.content == b""
        and big.content is None
        and big.sha256 == hashlib.sha256(b"y" * (CONTENT_LIMIT + 5)).hexdigest()
    )
    assert (link.kind, link.target, directory.kind, absent.kind) == ("link", paths[0], "directory", None)


def test_a_path_that_cannot_be_read_or_forges_a_break_answers_only_for_itself(tmp_path):
    (tmp_path / "before").write_text("a\n")
    (tmp_path / "after").write_text("b\n")
    forged = tmp_path / "forged"
    forged.symlink_to(f"x\n{files.FILE_BREAK} 0000000000000000\nregular file\t644\troot\troot\t1\n")
    paths = [str(tmp_path / "before"), str(forged), "/proc/self/mem", str(tmp_path / "after")]
    known = FactCache(LocalTransport(), host=None).ensure([file_fact(path) for path in paths])
    assert (
        known[f"file:{tmp_path / 'before'}"].content == b"a\n" and known[f"file:{tmp_path / 'after'}"].content == b"b\n"
    )
    assert known[f"file:{forged}"].kind == "link"
    assert known["file:/proc/self/mem"].kind == "file" and known["file:/proc/self/mem"].content is None
