"""How a deploy's step fails: the step's name and what to show, raised by the steps (executor.py, warm.py)."""

from __future__ import annotations


class DeployFailed(Exception):
    """A step failed; carries the step's name and what to show."""

    def __init__(self, step: str, reason: str):
        super().__init__(reason)
        self.step = step
        self.reason = reason


class WentBadLive(DeployFailed):
    """The new color failed its watch after taking the traffic: the deploy switches back."""
