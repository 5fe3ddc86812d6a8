"""vigil: the Together Pray ops repository. `invoke --list` shows every task.

Only the task modules the command line names are imported (vigil/cli/namespace.py): a short task starts in
a fraction of the time every module would take."""

import sys

from vigil.cli.namespace import namespace

# Invoke turns bytecode caching off for the whole process so that tasks.py leaves no .pyc (its --write-pyc):
# every module first imported by a task, the roles' tasks.py among them, would be compiled again on every run.
# The interpreter's own setting (-B, PYTHONDONTWRITEBYTECODE) is kept.
sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)

ns = namespace(sys.argv)
