"""The users role: the deploy user with the team's keys and passwordless sudo, and the app's runtime user."""

from vigil.errors import ConfigError
from vigil.transport import public_key_of
from vigil.operations import File, User, render_template

KEY_LINE = r"(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?"


def tasks(role, vars):
    """The users role's operations for one host, in order."""
    deploy = vars.user("users_deploy_user")
    keys = vars.string_list("users_deploy_authorized_keys", KEY_LINE)
    if not keys:
        raise ConfigError(f"{vars.where('users_deploy_authorized_keys')}: no key for {deploy}: onboarding would lock everyone out")
    host = vars.host
    if host.user == deploy and host.ssh_key is not None and host.ssh_key.is_file():
        # The key vigil logs in with must stay authorized, or the next run is locked out.
        own = public_key_of(host.ssh_key)
        if not any(line.split()[:2] == own.split() for line in keys):
            raise ConfigError(f"{vars.where('users_deploy_authorized_keys')}: does not hold the public half of "
                              f"{host.ssh_key.name}, the key vigil logs in as {deploy} with; the next run would be locked out")
    app = vars.user("users_app_user")
    return [
        User(deploy, shell="/bin/bash", authorized_keys=keys, name=f"Ensure the deploy user {deploy} has the team's keys."),
        File(f"/etc/sudoers.d/vigil-{deploy}", render_template(role.template("sudoers.j2"), {"user": deploy}),
             mode="0440", validate=("visudo", "-c", "-q", "-f"),
             name=f"Ensure {deploy} may use sudo without a password."),
        User(app, shell="/usr/sbin/nologin", home=f"/var/lib/{app}", system=True,
             name=f"Ensure the app user {app} exists and cannot log in."),
    ]
