"""The journal role: every host's journal shipped to the monitor host as it is written, so a host that
died still has its last lines there (incident.logs --archive).

Debian's systemd-journal-upload on each host posts to systemd-journal-remote on the monitor host over
HTTPS, checking the monitor host's certificate against the env's private CA (vigil.vault.derived_ca,
from the MONITORING_TLS_SEED secret): the journals go to no other machine. Debian builds journal-remote
without client-certificate checks (its --trust is "not available"), so it is the firewall that lets only
the env's hosts post (firewall_group_rules); each uploader still presents its own certificate.
journal-remote keeps one file per host, named by the address it posts from: remote-<private address>.journal.
Nothing happens where the inventory has no monitor host.
"""

from vigil.core.topology import monitor_host
from vigil.operations.apt import AptPackages
from vigil.operations.files import Directory, File
from vigil.operations.systemd import DaemonReload, ServiceAction, SocketRestart, SystemdUnit
from vigil.operations.users import User
from vigil.vault.derived_ca import derive_ca, derive_certificate

PACKAGE = "systemd-journal-remote"
SEED = "MONITORING_TLS_SEED"
TLS_DIR = "/etc/ssl/vigil-journal"
CA_FILE = f"{TLS_DIR}/ca.crt"
# Where journal-remote keeps what it receives (its unit's LogsDirectory): remote-<address>.journal.
ARCHIVE_DIR = "/var/log/journal/remote"
UPLOAD_USER, REMOTE_USER = "systemd-journal-upload", "systemd-journal-remote"
SIZE = r"[0-9]+[KMGT]?"


def tls_files(vars, user: str, addresses: list[str], restart: str) -> list:
    """The env CA's certificate, and this host's certificate and key (readable by `user` alone)."""
    seed, env = vars.secret(SEED), vars.string("vigil_env")
    issued = derive_certificate(seed, env, vars.host.name, addresses)
    return [
        Directory(TLS_DIR, mode="0755"),
        File(CA_FILE, derive_ca(seed, env).certificate, notify=(restart,),
             name="Ensure the env's private CA is trusted for the journal."),
        File(f"{TLS_DIR}/{vars.host.name}.crt", issued.certificate, notify=(restart,),
             name=f"Ensure {vars.host.name}'s journal certificate is in place."),
        File(f"{TLS_DIR}/{vars.host.name}.key", issued.key.value, owner=user, group=user, mode="0600", secret=True,
             notify=(restart,), name=f"Ensure {vars.host.name}'s journal key is in place, for {user} alone."),
    ]


def receiving(vars) -> list:
    """The monitor host: journal-remote on its socket, one file per host, bounded on disk."""
    port = vars.integer("journal_remote_port", minimum=1)
    restart = f"restart {REMOTE_USER}"
    drop_in = ("# Managed by vigil (roles/journal).\n[Remote]\nSplitMode=host\n"
               f"ServerKeyFile={TLS_DIR}/{vars.host.name}.key\nServerCertificateFile={TLS_DIR}/{vars.host.name}.crt\n"
               f"MaxUse={vars.string('journal_remote_max_use', SIZE)}\n"
               f"KeepFree={vars.string('journal_remote_keep_free', SIZE)}\n")
    socket = f"# Managed by vigil (roles/journal).\n[Socket]\nListenStream=\nListenStream={port}\n"
    return [
        AptPackages([PACKAGE], name="Ensure systemd-journal-remote is installed."),
        *tls_files(vars, REMOTE_USER, [vars.private_address()], restart),
        Directory("/etc/systemd/journal-remote.conf.d", mode="0755"),
        File("/etc/systemd/journal-remote.conf.d/vigil.conf", drop_in, notify=(restart,),
             name="Ensure journal-remote keeps one file per host, on a bounded share of the disk."),
        Directory("/etc/systemd/system/systemd-journal-remote.socket.d", mode="0755"),
        # A new port is listened on only once the socket restarts (SystemdUnit below reloads systemd first).
        File("/etc/systemd/system/systemd-journal-remote.socket.d/vigil.conf", socket,
             notify=("reload systemd", restart), name=f"Ensure journal-remote listens on port {port}."),
        SystemdUnit("systemd-journal-remote.socket", enabled=True, running=True),
    ]


def sending(vars, monitor) -> list:
    """Every other host: journal-upload posting to the monitor host as entries are written."""
    port = vars.integer("journal_remote_port", minimum=1)
    restart = f"restart {UPLOAD_USER}"
    drop_in = ("# Managed by vigil (roles/journal).\n[Upload]\n"
               f"URL=https://{vars.address_of(monitor.name)}:{port}\n"
               f"ServerKeyFile={TLS_DIR}/{vars.host.name}.key\nServerCertificateFile={TLS_DIR}/{vars.host.name}.crt\n"
               f"TrustedCertificateFile={CA_FILE}\n")
    return [
        AptPackages([PACKAGE], name="Ensure systemd-journal-upload is installed."),
        # Its unit runs as a dynamic user of this name; a static one makes the key's owner stable.
        User(UPLOAD_USER, shell="/usr/sbin/nologin", home="/nonexistent", system=True,
             name=f"Ensure {UPLOAD_USER} exists, to own the journal key."),
        *tls_files(vars, UPLOAD_USER, [], restart),
        # Debian's unit retries a failed upload with a growing delay, but five failures in ten seconds
        # (the monitor host rebooting) would stop it for good: no limit, so it resumes from its saved
        # cursor once the monitor host is back, and nothing written meanwhile is lost.
        Directory(f"/etc/systemd/system/{UPLOAD_USER}.service.d", mode="0755"),
        File(f"/etc/systemd/system/{UPLOAD_USER}.service.d/vigil.conf",
             "# Managed by vigil (roles/journal).\n[Unit]\nStartLimitIntervalSec=0\n", notify=("reload systemd",),
             name="Ensure journal-upload keeps retrying while the monitor host is away."),
        Directory("/etc/systemd/journal-upload.conf.d", mode="0755"),
        File("/etc/systemd/journal-upload.conf.d/vigil.conf", drop_in, notify=(restart,),
             name=f"Ensure the journal is shipped to the monitor host {monitor.name} over TLS."),
        SystemdUnit(f"{UPLOAD_USER}.service", enabled=True, running=True),
    ]


def tasks(role, vars):
    """The journal role's operations for one host, in order."""
    monitor = monitor_host(vars.inventory) if vars.inventory is not None else None
    if monitor is None:
        return []
    return receiving(vars) if vars.host.name == monitor.name else sending(vars, monitor)


def handlers(role, vars):
    if vars.inventory is None or monitor_host(vars.inventory) is None:
        return {}
    return {
        "reload systemd": DaemonReload(),
        f"restart {REMOTE_USER}": SocketRestart(f"{REMOTE_USER}.socket"),
        f"restart {UPLOAD_USER}": ServiceAction(f"{UPLOAD_USER}.service", "restart"),
    }
