"""bench: every benchmark in bench/, side by side in one run (bench/run.py says what and how)."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from vigil.core.errors import ExitCode
from vigil.core.output import Reporter


@task(help={
    "rounds": "Alternating rounds of each comparison (at least 5; default 5): medians, with min and max.",
    "requests": "Page loads each load loop waits for during the deploy benchmark (default 2000).",
    "rows": "Rows added to the database for the backup benchmark (default 1,000,000).",
    "keep": "Leave the sandbox VPSes up afterwards (default: down).",
})
def bench(c, rounds=5, requests=2000, rows=1_000_000, keep=False):
    """Benchmark vigil against Ansible, pyinfra, a naive restart and raw pg_dump on fresh sandbox VPSes.

    Replaces any sandbox that is up. Prints the summary table and writes bench/results/<date>.md.
    Needs root. Example: sudo .venv/bin/invoke bench --rounds=7
    """
    # The harness lives beside vigil, not in it, and brings the peers' tooling: only this task loads it.
    from bench.common import BenchError  # noqa: PLC0415
    from bench.run import main  # noqa: PLC0415

    try:
        main(int(rounds), int(requests), int(rows), keep)
    except BenchError as error:
        Reporter().error(f"error: bench: {error}")
        raise Exit(code=int(ExitCode.HOST_FAILED)) from None
