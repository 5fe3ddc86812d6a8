"""The fact framework: a command that reads one thing on a host, plus a pure parser for its output.

Facts are never fetched one SSH exec at a time: a `Batch` folds every fact a
step needs into one shell script, run in one round trip, and cuts the answer
back into each fact's output and exit status. Facts of one kind that a single
command can read together (every unit in one `systemctl show`) say so with
`Together`. The facts themselves are plugins, by subsystem, in vigil.facts.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass
from typing import Any, Callable

from vigil.core.commands import Command, reveal


@dataclass(frozen=True)
class Fact:
    """A read-only command and the parser that turns (stdout, exit status) into a value.

    key: identifies the fact within a host's run, so two operations share one read.
    Example: vigil.facts.files.file_fact("/etc/motd").parse("file\\t644\\troot\\troot\\t0\\n", 0)
    """

    key: str
    command: Command
    parse: Callable[[str, int], Any]
    # Set when one command can read this fact together with others of its kind (see Together).
    together: "Together | None" = None


@dataclass(frozen=True)
class Together:
    """Facts of one kind that a single command reads at once: a batch asks it once for all of them.

    kind: which facts go together; argument: this fact's part of the shared command;
    command: the shared command for the arguments, in order; split: its (stdout, status) -> each
    argument's stdout, in order (ValueError when the answer does not have one part per argument).
    Example: `systemctl show -p ... -- a.service b.service` answers for both unit facts.
    """

    kind: str
    argument: str
    command: Callable[[tuple[str, ...]], Command]
    split: Callable[[str, int, int], list[str]]


@dataclass
class Batch:
    """Every fact of `facts` in one shell script; `outputs` cuts its answer back into one per fact.

    Facts that go together (Together) are one command in the script, placed where the first of them
    was; every other fact is its own. The nonce makes the frame markers impossible to forge from a
    file's content. The script runs under one sudo, so each command is rendered without a prefix.
    """

    facts: list[Fact]
    nonce: str
    # Per frame of the script: the indexes (into facts) it answers for, and the Together that joins them.
    frames: list[tuple[list[int], Together | None]]
    script: str

    @classmethod
    def of(cls, facts: list[Fact], nonce: str | None = None) -> "Batch":
        nonce = nonce or secrets.token_hex(8)
        frames: list[tuple[list[int], Together | None]] = []
        joined: dict[str, int] = {}
        for index, fact in enumerate(facts):
            if fact.together is None:
                frames.append(([index], None))
            elif fact.together.kind in joined:
                frames[joined[fact.together.kind]][0].append(index)
            else:
                joined[fact.together.kind] = len(frames)
                frames.append(([index], fact.together))
        functions: dict[str, str] = {}
        lines = []
        for number, (members, together) in enumerate(frames):
            command = (
                together.command(tuple(facts[i].together.argument for i in members))
                if together
                else facts[members[0]].command
            )
            lines.append(f"echo '@@{nonce} begin {number}'")
            lines.append(
                f"( {_as_function_call(command, functions) or command.render(None)} ) 2>/dev/null </dev/null; s=$?"
            )
            lines.append(f"echo; echo \"@@{nonce} end {number} $s\"")
        # Each script() body once, as a shell function: a call in a subshell is a fork, where `sh -c BODY`
        # per fact was a fork and an exec of sh (dozens of file facts share one body).
        definitions = [f"{name}() {{\n{body}\n}}" for body, name in functions.items()]
        return cls(facts, nonce, frames, "\n".join(definitions + lines) + "\n")

    def outputs(self, output: str) -> list[tuple[str, int]]:
        """(stdout, status) per fact, in order; ValueError when a frame is missing or a joined answer is short."""
        answers = split_batch(output, len(self.frames), self.nonce)
        per_fact: list[tuple[str, int] | None] = [None] * len(self.facts)
        for (members, together), (stdout, status) in zip(self.frames, answers, strict=True):
            parts = together.split(stdout, status, len(members)) if together else [stdout]
            for index, part in zip(members, parts, strict=True):
                per_fact[index] = (part, status)
        return per_fact


def _as_function_call(command: Command, functions: dict[str, str]) -> str | None:
    """`sh -c BODY vigil ARGS...` (a script() run as the batch's user) as `NAME ARGS...`, NAME defined once
    per distinct BODY in `functions`; None for any other command. The body reads only "$1", "$2"...,
    as script() requires, so it means the same as a function's body."""
    argv = command.argv
    if (
        command.as_user
        or len(argv) < 4
        or argv[:2] != ("sh", "-c")
        or argv[3] != "vigil"
        or not isinstance(argv[2], str)
    ):
        return None
    name = functions.setdefault(argv[2], f"vigil_fact_{len(functions)}")
    return " ".join([name, *(shlex.quote(reveal(token)) for token in argv[4:])])


def split_batch(output: str, count: int, nonce: str) -> list[tuple[str, int]]:
    """Cut a batch script's output into (stdout, status) per fact, in order.

    A fact whose frame is missing (the script died) raises ValueError.
    """
    results: list[tuple[str, int]] = []
    rest = output
    for index in range(count):
        begin = f"@@{nonce} begin {index}\n"
        start = rest.find(begin)
        end_marker = f"\n@@{nonce} end {index} "
        end = rest.find(end_marker, start)
        if start < 0 or end < 0:
            raise ValueError(f"fact {index} missing from the batch output")
        # The end marker starts with the newline `echo` printed, so the body is the output exactly.
        body = rest[start + len(begin) : end]
        status_line = rest[end + len(end_marker) :].split("\n", 1)
        results.append((body, int(status_line[0])))
        rest = status_line[1] if len(status_line) > 1 else ""
    return results


def sections(stdout: str):
    """(section, line) for each non-empty line of a one-round-trip answer made of "@name" headed sections.

    Example: list(sections("@units\nnginx active\n\n@now\nT\n")) -> [("units", "nginx active"), ("now", "T")]
    """
    section = None
    for line in stdout.splitlines():
        if line.startswith("@"):
            section = line[1:].strip()
        elif line.strip():
            yield section, line.strip()
