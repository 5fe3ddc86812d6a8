"""The one read-only question `incident.status` (and audit.performance) asks each host, and its answer
parsed: units, failed units, disks, memory, load, the certificate's end, maintenance."""

from __future__ import annotations

from dataclasses import dataclass, field

from vigil.core.commands import Command, script
from vigil.core.facts import sections

# One round trip per host, read-only. $1: units to ask systemd about (space-separated); $2: the
# TLS certificate (or ""); the rest: directories whose filesystems matter.
HOST_STATUS = r'''
units=$1; certificate=$2; shift 2
echo "@units"; for unit in $units; do printf '%s %s\n' "$unit" "$(systemctl is-active -- "$unit" 2>/dev/null)"; done
echo "@failed"; systemctl list-units --state=failed --no-legend --plain 2>/dev/null | awk '{print $1}'
echo "@disk"; for dir in / "$@"; do [ -d "$dir" ] && df -P -- "$dir" | awk -v d="$dir" 'NR==2 {print d, $5}'; done
echo "@memory"; awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {print t, a}' /proc/meminfo
echo "@load"; printf '%s %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)"
echo "@certificate"; [ -n "$certificate" ] && openssl x509 -enddate -noout -in "$certificate" 2>/dev/null | cut -d= -f2
echo "@maintenance"; [ -e /var/www/together-pray/maintenance.on ] && echo on
echo "@now"; date -u +%Y-%m-%dT%H:%M:%SZ
echo "@end"
'''


def host_status_command(units: list[str], certificate: str, directories: list[str]) -> Command:
    """HOST_STATUS for these units, this certificate and the filesystems of these directories (and /)."""
    return script(HOST_STATUS, " ".join(units), certificate, *directories)


@dataclass
class HostFacts:
    """One host's answer to HOST_STATUS."""

    units: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    disks: dict[str, int] = field(default_factory=dict)  # directory -> % used
    memory: tuple[int, int] = (0, 0)  # kB total, available
    load: tuple[float, int] = (0.0, 1)  # 1-minute load, cores
    certificate_end: str = ""
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
        elif section == "maintenance":
            facts.maintenance = text == "on"
        elif section == "now":
            facts.now = text
    return facts
