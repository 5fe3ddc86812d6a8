"""The one read-only question `incident.status` (and audit.performance) asks each host, and its answer
parsed: units, failed units, disks, memory, load, the certificate's end, the last backup, maintenance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from vigil.core.commands import Command, script
from vigil.core.facts import sections

# One round trip per host, read-only. $1: units to ask systemd about (space-separated); $2: the
# TLS certificate (or ""); $3: the backup directory (or ""); the rest: directories whose filesystems matter.
HOST_STATUS = r'''
units=$1; certificate=$2; backups=$3; shift 3
echo "@units"; for unit in $units; do printf '%s %s\n' "$unit" "$(systemctl is-active -- "$unit" 2>/dev/null)"; done
echo "@failed"; systemctl list-units --state=failed --no-legend --plain 2>/dev/null | awk '{print $1}'
echo "@disk"; for dir in / "$@"; do [ -d "$dir" ] && df -P -- "$dir" | awk -v d="$dir" 'NR==2 {print d, $5}'; done
echo "@memory"; awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {print t, a}' /proc/meminfo
echo "@load"; printf '%s %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)"
echo "@certificate"; [ -n "$certificate" ] && openssl x509 -enddate -noout -in "$certificate" 2>/dev/null | cut -d= -f2
echo "@backup"; cat /var/lib/vigil/backup-status.json 2>/dev/null | tr -d '\n'; echo
# The newest dump on disk, for when the status file lost track (a full disk can leave it empty).
echo "@newest-backup"; [ -n "$backups" ] && ls -t -- "$backups"/*.dump 2>/dev/null | head -1 | while read -r dump; do
    printf '%s %s\n' "$(date -u -d "@$(stat -c %Y -- "$dump")" +%Y-%m-%dT%H:%M:%SZ)" "$(basename -- "$dump" .dump)"
done
echo "@maintenance"; [ -e /var/www/together-pray/maintenance.on ] && echo on
echo "@now"; date -u +%Y-%m-%dT%H:%M:%SZ
echo "@end"
'''


def host_status_command(units: list[str], certificate: str, directories: list[str], backups: str = "") -> Command:
    """HOST_STATUS for these units, this certificate, the backups in `backups` and the filesystems of
    these directories."""
    return script(HOST_STATUS, " ".join(units), certificate, backups, *directories)


@dataclass
class HostFacts:
    """One host's answer to HOST_STATUS."""

    units: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    disks: dict[str, int] = field(default_factory=dict)  # directory -> % used
    memory: tuple[int, int] = (0, 0)  # kB total, available
    load: tuple[float, int] = (0.0, 1)  # 1-minute load, cores
    certificate_end: str = ""
    backup: dict = field(default_factory=dict)
    # (when, id) of the newest backup file on disk; ("", "") when none or not asked.
    newest_backup: tuple[str, str] = ("", "")
    maintenance: bool = False
    now: str = ""


def parse_host_status(stdout: str) -> HostFacts:
    facts = HostFacts()
    for section, text in sections(stdout):
        if section == "units":
            unit, _, state = text.partition(" ")
            facts.units[unit] = state or "unknown"
        elif section == "failed":
            facts.failed.append(text)
        elif section == "disk":
            directory, _, used = text.rpartition(" ")
            if used.rstrip("%").isdigit():
                facts.disks[directory] = int(used.rstrip("%"))
        elif section == "memory" and len(text.split()) == 2:
            total, available = text.split()
            facts.memory = (int(total), int(available))
        elif section == "load" and len(text.split()) == 4:
            one, _, _, cores = text.split()
            facts.load = (float(one), int(cores))
        elif section == "certificate":
            facts.certificate_end = text
        elif section == "backup":
            try:
                facts.backup = json.loads(text)
            except ValueError:
                facts.backup = {"unreadable": text[:100]}
        elif section == "newest-backup" and len(text.split()) == 2:
            when, backup_id = text.split()
            facts.newest_backup = (when, backup_id)
        elif section == "maintenance":
            facts.maintenance = text == "on"
        elif section == "now":
            facts.now = text
    return facts
