"""The whole namespace `invoke` shows, built from only the task modules a command line needs.

Importing every task module costs most of a short task's time (each brings its concern, paramiko, rich,
YAML...): `invoke backup.import` needs vigil.cli.backup alone. The tasks a command line names are known
before Invoke parses it, since each collection's name is the first part of its tasks' names; a command
line that names none (`invoke`, `invoke --help`), or asks for the list or shell completion, gets them all.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from invoke import Collection

# A collection's name on the command line -> its module in vigil.cli, in the order `invoke --list` shows them.
COLLECTIONS = {
    "sandbox": "sandbox",
    "env": "env",
    "provision": "provision",
    "secrets": "vault",
    "deploy": "deploy",
    "backup": "backup",
    "db": "db",
    "preview": "preview",
    "incident": "incident",
    "monitor": "monitor",
    "ci": "ci",
    "audit": "audit",
}
# Tasks at the top level, not in a collection: name -> module.
TOP_LEVEL = {"bench": "bench"}
# Invoke's own flags that show every task: the list and shell completion.
SHOWS_EVERY_TASK = ("-l", "--list", "--complete", "--print-completion-script")


def modules_for(arguments: list[str]) -> list[str]:
    """The vigil.cli modules the command line `arguments` (without the program's name) needs, in list order.
    A token that is not a flag and whose first dotted part names a collection or a top-level task selects
    its module; a flag's value that happens to look so only imports one module more than needed."""
    every = [*COLLECTIONS.values(), *TOP_LEVEL.values()]
    if any(token in SHOWS_EVERY_TASK or token.startswith("--list=") for token in arguments):
        return every
    named = {COLLECTIONS.get(head) or TOP_LEVEL.get(head)
             for token in arguments if not token.startswith("-")
             for head in [token.split(".", 1)[0].replace("_", "-")]}
    named.discard(None)
    return [module for module in every if module in named] or every


def run_by_invoke(argv: list[str]) -> bool:
    """Whether this process is the `invoke` program (`invoke ...`, `inv ...` or `python -m invoke ...`): only
    then is its command line a list of tasks."""
    program = Path(argv[0]) if argv else Path()
    return program.name in ("invoke", "inv") or (program.name == "__main__.py" and program.parent.name == "invoke")


def namespace(argv: list[str]) -> Collection:
    """The root collection for the process whose command line is `argv`."""
    modules = modules_for(argv[1:]) if run_by_invoke(argv) else [*COLLECTIONS.values(), *TOP_LEVEL.values()]
    root = Collection()
    for name in modules:
        module = import_module(f"vigil.cli.{name}")
        if name in TOP_LEVEL.values():
            for task, owner in TOP_LEVEL.items():
                if owner == name:
                    root.add_task(getattr(module, task))
        else:
            root.add_collection(module.ns)
    return root
