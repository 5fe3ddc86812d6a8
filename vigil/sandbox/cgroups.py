"""Each VPS's own control group: what `machine-NAME.scope` is to a container that systemd starts.

systemd-nspawn puts the container's init in `payload` and itself in `supervisor`, under the cgroup nspawn was
started in, and the container's systemd sees that as its root. This machine runs no systemd, so every nspawn
started from its root cgroup shared one `payload`, and the same unit on two VPSes was one cgroup. Seen: vps7's
`systemctl disable --now postgresql@17-main` sat in stop-sigterm until its 1 h TimeoutStopSec, waiting for a
cgroup vps8's and vps1's PostgreSQL kept populated: the Patroni hand-over CI saw hang now and then. So each
nspawn is started in a cgroup of its own, in each hierarchy a systemd tracks its units in: cgroup2, and the
named v1 `systemd` one where the machine mounts cgroups hybrid (the resource controllers' hierarchies are left
as they are).
"""

from __future__ import annotations

from pathlib import Path

from vigil.sandbox.paths import SandboxError

# Under each tracking hierarchy's root: vigil-sandbox/<VPS name>.
SANDBOX_CGROUP = "vigil-sandbox"
MOUNTS = Path("/proc/self/mounts")
# The one command nspawn is started through: it moves itself into each cgroup.procs given before `--`, then
# becomes the command after it (same pid, so nspawn's argv is what the sandbox's facts find).
ENTER = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; exec "$@"'


def tracking_hierarchies(mounts: str) -> list[Path]:
    """Where the cgroup hierarchies a systemd tracks units in are mounted, from /proc/self/mounts' text:
    every cgroup2 mount, and a v1 cgroup mount named systemd."""
    found = []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        _, target, kind, options = fields[:4]
        if kind == "cgroup2" or (kind == "cgroup" and "name=systemd" in options.split(",")):
            found.append(Path(target.replace("\\040", " ")))
    return found


def vps_cgroups(name: str, mounts: str | None = None) -> list[Path]:
    """The cgroup directories of VPS `name`, one per tracking hierarchy of this machine."""
    text = MOUNTS.read_text() if mounts is None else mounts
    return [hierarchy / SANDBOX_CGROUP / name for hierarchy in tracking_hierarchies(text)]


def in_own_cgroups(name: str, argv: list[str], mounts: str | None = None) -> list[str]:
    """`argv` started inside VPS `name`'s own cgroups, made here first (none where none is mounted)."""
    cgroups = vps_cgroups(name, mounts)
    for cgroup in cgroups:
        try:
            cgroup.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SandboxError(f"{name}: cannot make its own cgroup {cgroup}: {error.strerror or error}") from None
    if not cgroups:
        return argv
    return ["sh", "-c", ENTER, "vigil-cgroup", *(str(cgroup / "cgroup.procs") for cgroup in cgroups), "--", *argv]


def remove_vps_cgroups(name: str, mounts: str | None = None) -> None:
    """Remove VPS `name`'s cgroups once it is down: deepest first (nspawn's payload and supervisor), each only
    if empty (the kernel refuses otherwise), then the sandbox's own directory once no VPS uses it."""
    for cgroup in vps_cgroups(name, mounts):
        for directory in sorted((path for path in cgroup.rglob("*") if path.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir(directory)
        _rmdir(cgroup)
        _rmdir(cgroup.parent)


def _rmdir(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not there, or still holding a process: left for the next down
