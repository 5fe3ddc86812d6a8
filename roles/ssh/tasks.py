"""The ssh role: sshd_config per Mozilla modern, checked by `sshd -t` before it replaces the old one."""

from vigil.core.commands import cmd, script
from vigil.core.connectors.ssh import public_key_of
from vigil.core.errors import ConfigError
from vigil.core.operations import ConfirmLogin, render_template
from vigil.operations.files import File
from vigil.operations.systemd import ServiceAction

ALGORITHMS = r"[A-Za-z0-9@.,_-]+"
# The file vigil writes; the previous one stays beside it for the lock-out check to restore.
SSHD_CONFIG = "/etc/ssh/sshd_config"


def tasks(role, vars):
    """The ssh role's operations for one host, in order."""
    port = vars.integer("ssh_port", minimum=1)
    if port != vars.host.port:
        raise ConfigError(f"{vars.where('ssh_port')}: {port} is not the port vigil logs in on ({vars.host.port}); "
                          "move sshd and the inventory's port in separate, deliberate steps")
    config = render_template(role.template("sshd_config.j2"), {
        "port": port,
        "kex": vars.string("ssh_kex_algorithms", ALGORITHMS),
        "ciphers": vars.string("ssh_ciphers", ALGORITHMS),
        "macs": vars.string("ssh_macs", ALGORITHMS),
        "extra": vars.string_list("ssh_extra_config", r"[A-Za-z][A-Za-z0-9]* [^\n]+"),
    })
    return [
        File(SSHD_CONFIG, config, mode="0644", validate=("sshd", "-t", "-f"), backup=True,
             notify=("reload ssh", "confirm ssh login"), name="Ensure sshd allows only keys, no root, modern crypto."),
    ]


def deploy_login_to_confirm(vars) -> tuple[str, ...]:
    """The deploy user, when the key vigil logs in with is also one of its keys (the users role's vars)."""
    deploy, keys = vars.get("users_deploy_user"), vars.get("users_deploy_authorized_keys") or []
    key = vars.host.ssh_key
    if not deploy or key is None or not key.is_file():
        return ()
    own = public_key_of(key).split()
    return (deploy,) if any(isinstance(line, str) and line.split()[:2] == own for line in keys) else ()


def handlers(role, vars):
    return {
        "reload ssh": ServiceAction(
            "ssh.service",
            "reload",
            check=cmd("sshd", "-t"),
            name="Reload sshd after `sshd -t` accepts the configuration.",
        ),
        "confirm ssh login": ConfirmLogin(
            [
                # Restore what was there before this run (if anything was), and reload either way.
                script(
                    'if [ -e "$1.vigil-previous" ]; then mv -f -- "$1.vigil-previous" "$1"; fi; '
                    "systemctl reload ssh.service",
                    SSHD_CONFIG,
                ),
            ],
            also_users=deploy_login_to_confirm(vars),
            name=(
                "Confirm fresh logins (the admin user, and deploy with our key) work, "
                "else restore the previous sshd_config."
            ),
        ),
    }
