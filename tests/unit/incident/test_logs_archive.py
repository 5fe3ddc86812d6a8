"""incident.logs --archive: the monitor host's copy of each host's journal (roles/journal), asked in one
round trip, split per host (journal-remote names each host's file by its address), unreadable hosts named."""

from __future__ import annotations

import json
import subprocess

from vigil.incident.logs import ARCHIVE, archive_command, journal_command, parse_journal, split_archive


def test_the_command_carries_every_value_as_an_argument():
    command = archive_command({"web1": "10.0.0.11", "web2": "10.0.0.12"}, ["together-pray-backend@*"], "1 hour ago",
                              200, "it's $(bad)")
    assert command.argv[:3] == ("sh", "-c", ARCHIVE)
    assert command.argv[4:] == ("/var/log/journal/remote", "1 hour ago", "200", "it's $(bad)",
                                "together-pray-backend@*", "--", "web1=10.0.0.11", "web2=10.0.0.12")


def test_the_script_reads_each_hosts_files_with_the_patterns_unexpanded(tmp_path):
    """Run for real with a journalctl that prints its arguments: globs reach it as they are."""
    fake = tmp_path / "journalctl"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n[ "$1" = --fail ] && exit 1\nexit 0\n')
    fake.chmod(0o755)
    (tmp_path / "web1.journal").write_text("")  # a file a shell glob could have matched
    command = archive_command({"web1": "10.0.0.11"}, ["together-pray-backend@*"], "today", 5, "")
    done = subprocess.run(list(command.argv), capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    texts, problems = split_archive(done.stdout)
    arguments = texts["web1"].splitlines()
    assert "together-pray-backend@*" in arguments
    assert "--file=/var/log/journal/remote/remote-10.0.0.11*.journal" in arguments
    assert not [argument for argument in arguments if argument.startswith("--grep")] and problems == {}


def test_split_names_a_host_whose_archive_could_not_be_read():
    entry = json.dumps({"__REALTIME_TIMESTAMP": "1800000000000000", "MESSAGE": "last words", "SYSLOG_IDENTIFIER": "x"})
    texts, problems = split_archive(f"@host web1\n{entry}\n@host web2\n@error No journal files were found.\n")
    assert [line.message for line in parse_journal("web1", texts["web1"])] == ["last words"]
    assert problems == {"web2": "No journal files were found."}


def test_grep_is_one_argument_of_journalctl():
    assert journal_command(["nginx.service"], "today", 10, "timeout|502").argv[-1] == "--grep=timeout|502"
