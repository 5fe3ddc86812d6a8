"""`incident.snapshot`: a diagnostics bundle of every host, each line redacted, saved here as a 0600
tar.gz: unit states, recent logs, nginx's error log, disk, memory, top processes, listening ports; on
the backup host its pgBackRest repository and last restore drill; on the monitor host the alerts that fire."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

from vigil.backup.repository import find_repository, status_command
from vigil.core.commands import script
from vigil.core.fanout import on_hosts, unreachable
from vigil.core.inventory import Host, load_inventory
from vigil.core.local_files import unique_path
from vigil.core.redaction import mask_log_line
from vigil.core.topology import monitor_host
from vigil.deploy.settings import app_name
from vigil.monitor.alerts import firing_command
from vigil.vault.store import load_for_masking

SNAPSHOT = r"""
app=$1
section() { printf '\n===== %s =====\n' "$1"; }
section "units"
systemctl list-units --all --no-pager --plain --no-legend "$app-*" nginx.service 'postgresql*' 'vigil-*' 2>&1
section "failed units"; systemctl list-units --state=failed --no-pager --plain --no-legend 2>&1
section "disk"; df -hP 2>&1
section "memory"; free -m 2>&1
section "load"; uptime 2>&1
section "top processes"; ps -eo pid,user,pcpu,pmem,rss,etime,comm --sort=-pcpu 2>&1 | head -n 25
section "listening"; ss -Hltnp 2>&1
section "recent logs"; journalctl --no-pager -n 400 -u "$app-*" -u nginx.service -u 'postgresql*' -u 'vigil-*' 2>&1
section "nginx error log"; tail -n 200 /var/log/nginx/error.log 2>&1
"""


def snapshot(env: str, into: Path, when: float | None = None) -> tuple[Path, dict[str, str]]:
    """A diagnostics bundle of every host (units, logs, nginx's error log, disk, top processes), each line
    redacted, saved as a 0600 tar.gz in `into`. Returns (its path, {host: why it could not be read})."""
    inventory = load_inventory(env)
    load_for_masking(env)
    app = app_name(inventory)
    repository = find_repository(inventory)
    monitor = monitor_host(inventory)

    def ask(transport, host: Host) -> str:
        answer = transport.run(script(SNAPSHOT, app), timeout=120)
        text = answer.stdout + answer.stderr
        if repository is not None and host.name == repository.host.name:
            # What incident.status reads there: pgBackRest's info, the newest WAL's arrival, the last drill.
            held = transport.run(status_command(repository), timeout=120)
            text += "\n===== backup repository =====\n" + held.stdout + held.stderr
        if monitor is not None and host.name == monitor.name:
            firing = transport.run(firing_command(), timeout=90)
            text += "\n===== alerts firing (Alertmanager) =====\n" + firing.stdout + firing.stderr
        return "\n".join(mask_log_line(line) for line in text.splitlines()) + "\n"

    answers = on_hosts(inventory, inventory.select(None), ask)
    when = when if when is not None else time.time()
    into.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = unique_path(into, f"snapshot-{env}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(when))}", ".tar.gz")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        with tarfile.open(fileobj=handle, mode="w:gz") as archive:
            for host, answer in sorted(answers.items()):
                text = (answer if isinstance(answer, str) else f"could not be read: {answer}\n").encode()
                member = tarfile.TarInfo(f"{path.name.removesuffix('.tar.gz')}/{host}.txt")
                member.size, member.mtime, member.mode = len(text), int(when), 0o600
                archive.addfile(member, io.BytesIO(text))
    return path, unreachable(answers)
