"""Instant rollback: after a deploy, the color that served before keeps running, out of nginx's upstream,
for the rollback window (roles/app: app_rollback_window_minutes) or until the next deploy replaces it, so a
rollback within it is a health check and the upstream switch, with no cold start.

A systemd timer on the host (the unit helper's `stop-after`) ends the window, so it ends even when nobody
connects again; a deploy that starts the color first cancels it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from vigil.core.commands import Command
from vigil.core.redaction import REDACTOR, mask_url_passwords
from vigil.core.runner import CHANGED, FAILED, OK
from vigil.deploy.failures import DeployFailed
from vigil.deploy.scripts import RETIRE, WARM_SWITCH, as_deploy
from vigil.deploy.settings import COLORS, SWITCH_HELPER, UNIT_HELPER, Settings
from vigil.deploy.state import HostState

# The answer of WARM_SWITCH when the color cannot take the traffic as it runs: nothing was changed.
NOT_WARM = 10


def other(color: str) -> str:
    return next(one for one in COLORS if one != color)


def named_failures(stderr: str) -> list[str]:
    """The actions a script names as failed ("vigil: ..." lines on stderr), one each."""
    return [line.removeprefix("vigil: ") for line in stderr.splitlines() if line.startswith("vigil: ")]


def drain_timer(settings: Settings) -> int:
    """Seconds after a warm switch until the color it left stops (the unit helper's `stop-after` wants one at least)."""
    return max(1, settings.drain)


def retire_command(settings: Settings, live: str) -> Command:
    """RETIRE for the color `live` that served before this deploy: kept warm for the window (if the host's
    memory allows), else stopped once drained. The watch kept it running `watch` seconds of the drain already."""
    layout = settings.layout
    return as_deploy(RETIRE, UNIT_HELPER, layout.unit(live), str(max(0, settings.drain - settings.watch)),
                     str(settings.rollback_window), str(settings.rollback_min_available_mb))


@dataclass(frozen=True)
class Retired:
    """What became of the old color: kept `warm` (with the MiB available then) or stopped, and why not
    kept; `problems`: the actions that failed, one line each."""

    warm: bool
    detail: str
    problems: tuple[str, ...]


def parse_retired(stdout: str, stderr: str, ok: bool) -> Retired:
    """RETIRE's answer."""
    problems = named_failures(stderr)
    if not ok and not problems:
        problems = ["retiring the old color failed", stderr.strip()[-300:]]
    said = next((line for line in stdout.splitlines() if line.startswith(("@warm ", "@cold "))), "")
    return Retired(said.startswith("@warm "), said[6:].strip(), tuple(problems))


def is_warm(state: HostState, color: str, release: str) -> bool:
    """Whether `color` still runs `release` (kept from before the last deploy): worth a warm return."""
    return state.units.get(color) == "active" and state.colors.get(color) == release


def warm_switch_command(settings: Settings, color: str, release: str) -> Command:
    """WARM_SWITCH: traffic to the running `color` if it answers for `release`; the color it leaves stops
    once drained (a timer on the host, so the rollback does not wait for it)."""
    layout = settings.layout
    return as_deploy(WARM_SWITCH, str(settings.ports[color]), settings.health_path,
                     release if settings.health_release else "", layout.unit(color), UNIT_HELPER, SWITCH_HELPER,
                     layout.service, color, layout.unit(other(color)), str(drain_timer(settings)))


class WarmSteps:
    """HostDeploy's steps around the rollback window: what becomes of the old color after a deploy, and the
    rollback that switches back to it as it runs (HostDeploy holds the transport, settings, release,
    served_before, result and record they use)."""

    def retire(self, live: str) -> None:
        """The old color stays running for the rollback window, or drains and stops."""
        began, layout, settings = time.monotonic(), self.settings.layout, self.settings
        result = self.transport.run(retire_command(settings, live), timeout=settings.drain + 60)
        retired = parse_retired(result.stdout, result.stderr, result.ok)
        if retired.warm:
            step = f"Keep {layout.service}@{live} running for an instant rollback."
            summary = (f"{self.served_before} stops in {settings.rollback_window // 60} min or at the next deploy "
                       f"({retired.detail} MiB of memory available)")
        else:
            step = f"Drain and stop {layout.service}@{live}."
            summary = f"stopped after {settings.drain}s" + (f"; not kept for the rollback window: {retired.detail}"
                                                            if settings.rollback_window else "")
        self.record(step, FAILED if retired.problems else CHANGED, summary=summary,
                    error="; ".join(retired.problems), began=began)
        if retired.problems:
            # Traffic is on the new release already: finish the deploy, but say the host needs a look.
            self.result.error = f"{step}: {'; '.join(retired.problems)}"

    def return_warm(self, idle: str) -> bool:
        """Traffic to the idle color that still runs the release, in one round trip; False when it
        cannot take it as it runs, and the rollback starts it cold as outside the window."""
        began, settings, service = time.monotonic(), self.settings, self.settings.layout.service
        step = f"Switch nginx's {service} upstream to {idle}, still running {self.release}."
        result = self.transport.run(warm_switch_command(settings, idle, self.release), timeout=60)
        if result.status == NOT_WARM:
            # The app's own answer, which may quote its database URL.
            said = REDACTOR.redact(mask_url_passwords(result.stdout.strip()))
            self.record(f"Return to {service}@{idle} as it runs.", OK, summary=f"{said}: starting it again")
            return False
        if not result.ok:
            raise DeployFailed(step, f"exited {result.status}: {REDACTOR.redact(result.stderr.strip()[-300:])}")
        problems = named_failures(result.stderr)
        self.record(step, FAILED if problems else CHANGED, error="; ".join(problems), began=began,
                    summary=f"healthy as it ran; 127.0.0.1:{settings.ports[idle]}, nginx reloaded gracefully; "
                            f"{service}@{other(idle)} stops in {drain_timer(settings)}s")
        if problems:  # traffic is on the release: finish the rollback, but say the host needs a look
            self.result.error = f"{step}: {'; '.join(problems)}"
        return True
