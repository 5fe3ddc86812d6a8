"""The runbook engine's Library on an env's real hosts: each step runs through the registry of checks
(vigil.incident.checks.CHECKS) or of actions (vigil.incident.actions.ACTIONS), so a step's name in a
runbook leads to its function by grep."""

from __future__ import annotations

from typing import Callable

from vigil.incident.actions import ACTIONS
from vigil.incident.checks import CHECKS
from vigil.incident.engine import Finding
from vigil.incident.hosts import EnvHosts
from vigil.incident.runbooks import Step


class HostLibrary(EnvHosts):
    """Checks and actions on one env's hosts.

    before_action: called before each action runs (the run opens the incident record there, where the
    action may write what it collects).
    """

    def __init__(self, env: str, incident, say: Callable[[str], None]):
        super().__init__(env, incident, say)
        self.before_action: Callable[[], object] = lambda: None

    def check(self, step: Step, attempt: int) -> list[Finding]:
        if attempt:
            self.say(f"  {step.id}: again ({attempt})")
        return CHECKS[step.type](self, step.params)

    def act(self, step: Step, failing: list[Finding] | None) -> str:
        self.before_action()
        return ACTIONS[step.type](self, step, failing)
