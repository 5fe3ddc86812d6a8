"""The users role: an admin user for provisioning, a deploy user whose sudo covers deploys only, the app's user.

The admin user (the inventory's `admin_user`) has root through sudo: vigil
plans every onboarding step as root. The deploy user (the inventory's `user`)
may run, as root, only a helper that acts on the app's systemd units, a
helper that switches an upstream's color, the two commands that check and
reload nginx, and a helper that backs up the app's database: a leaked deploy
key can restart the app, not own the host.
"""

from vigil.core.audit_log import RECORD_ACTION, REMOTE_ACTIONS_LOG, TRAIL_LINES
from vigil.core.connectors.ssh import public_key_of
from vigil.core.errors import ConfigError
from vigil.core.operations import render_template
from vigil.operations.files import File
from vigil.operations.users import User

KEY_LINE = r"(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?"
# A systemd unit name, or a shell glob of them; no spaces, slashes or a leading dash.
UNIT_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9@._*:-]*\.service"
APP_UNIT_HELPER = "/usr/local/sbin/vigil-app-unit"
# Installed by the nginx role on the web hosts; allowed here so the sudoers file is the same everywhere.
SWITCH_HELPER = "/usr/local/sbin/vigil-switch-upstream"
# Installed by the pgbackrest role on a database host with a backup host: a restore point before a
# migration (or its revert), with one of two fixed words.
RESTORE_POINT_HELPER = "/usr/local/sbin/vigil-restore-point"


def tasks(role, vars):
    """The users role's operations for one host, in order."""
    admin, deploy, app = vars.user("users_admin_user"), vars.user("users_deploy_user"), vars.user("users_app_user")
    if len({admin, deploy, app}) != 3:
        raise ConfigError(f"{vars.where('users_admin_user')}: the admin, deploy and app users must be three different "
                          f"users (got {admin}, {deploy}, {app}); the deploy user's sudo is scoped to deploys")
    admin_keys = keys_of(vars, "users_admin_authorized_keys", admin)
    deploy_keys = keys_of(vars, "users_deploy_authorized_keys", deploy)
    host = vars.host
    if host.user != admin:
        raise ConfigError(
            f"{vars.where('users_admin_user')}: {host.name} is provisioned as {host.user}, not as the admin "
            f"user {admin}; set admin_user: {admin} in the inventory (defaults or hosts.{host.name}), since "
            f"{deploy}'s sudo only covers deploys"
        )
    if host.ssh_key is not None and host.ssh_key.is_file():
        # The key vigil provisions with must stay authorized, or the next run is locked out.
        own = public_key_of(host.ssh_key)
        if not any(line.split()[:2] == own.split() for line in admin_keys):
            raise ConfigError(
                f"{vars.where('users_admin_authorized_keys')}: does not hold the public half of "
                f"{host.ssh_key.name}, the key vigil logs in as {admin} with; the next run would be locked out"
            )
    units = vars.string_list("users_deploy_units", UNIT_PATTERN)
    return [
        User(
            admin,
            shell="/bin/bash",
            authorized_keys=admin_keys,
            name=f"Ensure the admin user {admin} has the admins' keys.",
        ),
        File(
            f"/etc/sudoers.d/vigil-{admin}",
            render_template(role.template("sudoers-admin.j2"), {"user": admin}),
            mode="0440",
            validate=("visudo", "-c", "-q", "-f"),
            name=f"Ensure {admin} may use sudo without a password.",
        ),
        User(
            app,
            shell="/usr/sbin/nologin",
            home=f"/var/lib/{app}",
            system=True,
            name=f"Ensure the app user {app} exists and cannot log in.",
        ),
        # The app's group: deploys hand their releases to it. Not systemd-journal (the whole journal:
        # sudo lines, sshd, PostgreSQL): a deploy reads its own units' logs through the unit helper.
        User(
            deploy,
            shell="/bin/bash",
            groups=[app],
            not_groups=["systemd-journal"],
            authorized_keys=deploy_keys,
            name=f"Ensure the deploy user {deploy} has the team's keys and the app's group, not the journal.",
        ),
        File(
            APP_UNIT_HELPER,
            render_template(role.template("vigil-app-unit.j2"), {
                "units": units, "record": RECORD_ACTION, "trail": REMOTE_ACTIONS_LOG, "trail_lines": TRAIL_LINES}),
            mode="0755",
            name=f"Ensure {APP_UNIT_HELPER} acts on the app's units only.",
        ),
        File(
            f"/etc/sudoers.d/vigil-{deploy}",
            render_template(
                role.template("sudoers-deploy.j2"),
                {
                    "user": deploy,
                    "helper": APP_UNIT_HELPER,
                    "switch_helper": SWITCH_HELPER,
                    "restore_point_helper": RESTORE_POINT_HELPER,
                },
            ),
            mode="0440",
            validate=("visudo", "-c", "-q", "-f"),
            name=f"Ensure {deploy}'s sudo covers the app's units, an nginx reload and a database restore point, "
                 "nothing else.",
        ),
    ]


def keys_of(vars, key: str, user: str) -> list[str]:
    keys = vars.string_list(key, KEY_LINE)
    if not keys:
        raise ConfigError(f"{vars.where(key)}: no key for {user}: nobody could log in as {user}")
    return keys
