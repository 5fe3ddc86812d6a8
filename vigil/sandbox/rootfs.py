"""Writing inside a VPS's root: the files that make one image this VPS, written so that a symlink in the image
can never turn a write into one on this machine."""

from __future__ import annotations

import os
from pathlib import Path

from vigil.sandbox.paths import SandboxError

# The CAs this machine's administrator added (Debian's place for them), and the bundle OpenSSL reads.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
# The stamps systemd-update-done leaves after a boot that followed an update of /usr (systemd-update-done(8)).
UPDATE_STAMPS = ("etc/.updated", "var/.updated")


def rootfs_path(root: Path, relative: str) -> Path:
    """`relative` inside a VPS root; SandboxError if a directory on the way is a symlink out of it."""
    path = root
    for part in Path(relative.lstrip("/")).parts[:-1]:
        path = path / part
        # An image symlink would make us write on the host instead of inside the VPS.
        if path.is_symlink():
            raise SandboxError(f"{path} is a symlink; refusing to write through it")
    return root / relative.lstrip("/")


def write_into_rootfs(root: Path, relative: str, content: str, mode: int = 0o644) -> None:
    """Write a file inside a VPS root, replacing a file or symlink there without following it."""
    target = rootfs_path(root, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), "w") as stream:
        stream.write(content)
    os.chmod(target, mode)


def mark_first_boot_done(root: Path) -> None:
    """Stamp /etc and /var as up to date with the image's /usr, as a provider's image is.

    Without the stamps every VPS's first boot runs the ConditionNeedsUpdate= units (ldconfig, hwdb, the
    journal catalog) while the others boot on the same two cores; ldconfig once failed there (CI31, vps2), and a
    failed unit is a failed host to incident.status. debootstrap already left /etc/ld.so.cache current.
    """
    usr = rootfs_path(root, "usr").stat()
    for relative in UPDATE_STAMPS:
        write_into_rootfs(root, relative, f"TIMESTAMP_NSEC={usr.st_mtime_ns}\n")
        os.utime(rootfs_path(root, relative), ns=(usr.st_mtime_ns, usr.st_mtime_ns), follow_symlinks=False)


def trust_local_cas(root: Path, local: Path = LOCAL_CAS) -> list[str]:
    """Have the VPS trust the CAs this machine's administrator added (LOCAL_CAS): its traffic leaves through
    this machine, whose egress may be a proxy that re-signs TLS (pip on a VPS reaching PyPI otherwise fails
    to verify it). Each goes where Debian keeps local CAs and into the bundle OpenSSL reads, as
    update-ca-certificates would put it. Returns the names added."""
    found = sorted(path for path in local.glob("*.crt") if path.is_file()) if local.is_dir() else []
    pems = {path.name: path.read_text() for path in found}
    pems = {name: pem for name, pem in pems.items() if "BEGIN CERTIFICATE" in pem and "PRIVATE KEY" not in pem}
    if not pems:
        return []
    for name, pem in pems.items():
        write_into_rootfs(root, f"usr/local/share/ca-certificates/{name}", pem)
    bundle = rootfs_path(root, CA_BUNDLE)
    current = bundle.read_text() if bundle.is_file() and not bundle.is_symlink() else ""
    missing = [pem.strip() + "\n" for pem in pems.values() if pem.strip() not in current]
    if missing:
        write_into_rootfs(root, CA_BUNDLE, current + "".join(missing))
    return list(pems)
