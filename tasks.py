"""vigil: the Together Pray ops repository. `invoke --list` shows every task.

Only the task modules the command line names are imported (vigil/cli/namespace.py): a short task starts in
a fraction of the time every module would take."""

import sys

from vigil.cli.namespace import namespace

ns = namespace(sys.argv)
