"""vigil's onboarding of one host, written as a pyinfra 3 user writes a deploy.

What the host must be comes from the manifest bench/peers/export.py wrote (the inventory sets its path
as host data `manifest`). Each item is applied with pyinfra's own operations: apt.packages, server.user
(keys, ~/.ssh), files.directory/put/link/file, systemd.service, postgres.role/database/sql. files.put
has no validation step, so sshd_config and the sudoers files go through checked_put below (upload
beside, `sshd -t -f` / `visudo -c -q -f`, rename). Where pyinfra has no operation (ufw, pg_hba.conf's
block, ALTER SYSTEM settings, guarded commands, the Node.js version, clock and swap outside containers)
the deploy reads facts with host.get_fact and adds server.shell / postgres.sql / files.put only for what
differs, so those items are checked on every run but are operations only when something must change.
Handlers are operations run with `_if=any_changed(...)` of the operations that notify them: the
systemd reload before the services, the others at the end. --diff is never used: it would print file
contents, secret ones included.

Speed, as pyinfra documents it: run with -y, so there is no separate change-detection pass (each
operation reads its facts once, as it runs); --no-wait lets each host go on without waiting for the
others at every operation; files.put skips its parent-directory check (create_remote_dir=False: the
directories are ensured first); one connection per host (paramiko), all hosts in parallel (the
default). Nothing slows it on purpose.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.api.util import get_file_sha1
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File, Link, Sha1File
from pyinfra.facts.postgres import PostgresRoles
from pyinfra.facts.server import Command
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, files, postgres, python, server, systemd
from pyinfra.operations.util import any_changed
from pyinfra.operations.util import files as file_utils
from pyinfra.operations.util.files import ensure_mode_int

with open(host.data.manifest, encoding="utf-8") as source:
    manifest = json.load(source)

AS_POSTGRES = {"_sudo_user": "postgres"}
# Operations that notify each handler (by the manifest's names); handlers run if any of them changed.
notified: dict[str, list] = {}


def notify(names, op):
    for name in names or ():
        notified.setdefault(name, []).append(op)
    return op


def as_user(user):
    """Global arguments running a command as the manifest's user: root (sudo), another user, or the login user."""
    if user is None:
        return {"_sudo": False}
    return {} if user == "root" else {"_sudo_user": user}


def status_of(command: str, user="root") -> bool:
    """Whether `command` succeeds on the host (a fact: read now, changes nothing)."""
    answer = host.get_fact(Command, command=f"if {command} >/dev/null 2>&1; then echo yes; else echo no; fi",
                           **as_user(user))
    return answer == "yes"


@operation()
def checked_put(src: str, dest: str, user: str, group: str, mode: str, validate: list[str], backup: bool = False):
    """files.put for a file whose new content `validate` must accept first (sshd -t -f, visudo -c -q -f):
    uploaded beside `dest`, checked there, then renamed over it; `backup` keeps the old file as
    DEST.vigil-previous (what the ssh login check restores)."""
    mode = ensure_mode_int(mode)
    remote = host.get_fact(File, path=dest)
    if remote and host.get_fact(Sha1File, path=dest) == get_file_sha1(src):
        if remote["mode"] != mode:
            yield file_utils.chmod(dest, mode)
        if (remote["user"], remote["group"]) != (user, group):
            yield file_utils.chown(dest, user, group)
        return
    # A name sshd never reads and sudo skips (it ignores names holding a dot).
    staged = f"{dest}.pyinfra-new"
    yield FileUploadCommand(src, staged, remote_temp_filename=host.get_temp_filename(staged))
    yield file_utils.chown(staged, user, group)
    yield file_utils.chmod(staged, mode)
    yield StringCommand(*map(QuoteString, validate), QuoteString(staged), "||",
                        "{", "rm", "-f", QuoteString(staged), ";", "exit", "1", ";", "}")
    if backup and remote:
        yield StringCommand("cp", "-p", QuoteString(dest), QuoteString(f"{dest}.vigil-previous"))
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(dest))


# --- packages ------------------------------------------------------------------------------------
# The cache is refreshed (if older than an hour) only when something is to be installed.
installed = host.get_fact(DebPackages)
apt.packages(
    name="Ensure the packages are installed",
    packages=manifest["packages"],
    update=any(package not in installed for package in manifest["packages"]),
    cache_time=3600,
    no_recommends=True,
)

# --- users ---------------------------------------------------------------------------------------
for user in manifest["users"]:
    server.user(
        name=f"Ensure user {user['user']}",
        user=user["user"],
        shell=user["shell"],
        home=user["home"] or f"/home/{user['user']}",
        system=user["system"],
        groups=user["groups"] or None,
        append=True,
        create_home=True,
        # The keys file, read by pyinfra: exactly these keys (delete_keys), ~/.ssh 0700, the file 0600.
        public_keys=[user["authorized_keys"]] if user["authorized_keys"] else None,
        delete_keys=True,
    )

# --- directories, files, links, absent paths -------------------------------------------------------
for directory in manifest["directories"]:
    notify(directory["notify"], files.directory(
        name=f"Ensure directory {directory['path']}",
        path=directory["path"], user=directory["owner"], group=directory["group"], mode=directory["mode"],
    ))

for item in manifest["files"]:
    if not item["replace"] and host.get_fact(File, path=item["path"]) is not None:
        continue  # a seed: created when missing, then owned by something else (deploys)
    common = dict(src=item["src"], dest=item["path"], user=item["owner"], group=item["group"], mode=item["mode"])
    if item["validate"]:
        op = checked_put(name=f"Ensure {item['path']} (checked by {item['validate'][0]})",
                         validate=item["validate"], backup=item["backup"], **common)
    else:
        op = files.put(name=f"Ensure {item['path']}", create_remote_dir=False, **common)
    notify(item["notify"], op)

for link in manifest["links"]:
    notify(link["notify"], files.link(
        name=f"Ensure {link['path']} links to {link['target']}", path=link["path"], target=link["target"],
    ))

for absent in manifest["absent"]:
    # files.file removes a file, files.link a link; a directory there is an error, as in vigil.
    remove = files.link if host.get_fact(Link, path=absent["path"]) else files.file
    notify(absent["notify"], remove(name=f"Ensure {absent['path']} is absent", path=absent["path"], present=False))


# --- handlers --------------------------------------------------------------------------------------
def confirm_login(state, host):
    """A fresh SSH login (the run's own key, user and pinned host key) must work after sshd changed;
    else the previous sshd_config comes back (kept as .vigil-previous) and sshd reloads."""
    # pyinfra's own SSH client, as a pyinfra user reaches for it: only there when pyinfra runs this file.
    from pyinfra.connectors.sshuserclient import SSHClient  # noqa: PLC0415

    kwargs = host.connector.make_paramiko_kwargs()
    client = SSHClient()
    try:
        client.connect(kwargs.pop("hostname"), **kwargs)
    except Exception as error:
        host.run_shell_command(StringCommand(
            "sh", "-c", QuoteString('if [ -e "$1.vigil-previous" ]; then mv -f -- "$1.vigil-previous" "$1"; fi; '
                                    "systemctl reload ssh.service"), "sh", "/etc/ssh/sshd_config"), _sudo=True)
        raise DeployError(f"a fresh SSH login failed after sshd changed ({error}): previous sshd_config restored")
    finally:
        client.close()


HANDLERS = {
    "reload systemd": lambda **when: systemd.daemon_reload(name="handler: reload systemd", **when),
    "reload ssh": lambda **when: server.shell(name="handler: reload ssh",
                                              commands=["sshd -t", "systemctl reload ssh.service"], **when),
    "confirm ssh login": lambda **when: python.call(name="handler: confirm ssh login", function=confirm_login,
                                                    **when),
    "restart fail2ban": lambda **when: systemd.service(name="handler: restart fail2ban", service="fail2ban.service",
                                                       restarted=True, **when),
    "reload nginx": lambda **when: server.shell(name="handler: reload nginx",
                                                commands=["nginx -t -q", "systemctl reload nginx.service"], **when),
    "restart postgresql": lambda **when: systemd.service(name="handler: restart postgresql",
                                                         service="postgresql.service", restarted=True, **when),
    "reload postgresql": lambda **when: systemd.service(name="handler: reload postgresql",
                                                        service="postgresql.service", reloaded=True, **when),
}


def run_handlers(*names):
    """The handlers (in HANDLERS' order) whose notifying operations so far changed anything."""
    for name in HANDLERS:
        if (not names or name in names) and notified.get(name):
            HANDLERS[name](_if=any_changed(*notified.pop(name)))


# Unit files first take effect, then the units are enabled and started.
run_handlers("reload systemd")

# --- services --------------------------------------------------------------------------------------
for service in manifest["services"]:
    systemd.service(
        name=f"Ensure {service['unit']} is {'enabled' if service['enabled'] else 'as it is'} and "
             f"{'running' if service['running'] else 'as it is'}",
        service=service["unit"], running=service["running"], enabled=service["enabled"],
    )

# --- firewall (ufw) --------------------------------------------------------------------------------
UFW_POLICY = {"drop": "deny", "accept": "allow", "reject": "reject"}
firewall = manifest["firewall"]
if firewall:
    ufw = host.get_fact(Command, command=(
        "command -v ufw >/dev/null || exit 0; ufw status | head -n 1; . /etc/default/ufw; "
        'echo "incoming=$DEFAULT_INPUT_POLICY outgoing=$DEFAULT_OUTPUT_POLICY"; ufw show added')) or ""
    rules = [line[4:].strip() for line in ufw.splitlines() if line.startswith("ufw ")]
    policies = dict(re.findall(r"(incoming|outgoing)=(\w+)", ufw))
    commands = []
    for rule in firewall["rules"]:
        if rule not in rules:
            # First match wins: a rule for one source goes before the port's general rule.
            commands.append(f"ufw prepend {rule}" if " from " in rule and rules else f"ufw {rule}")
    commands += [f"ufw delete {rule}" for rule in rules if rule not in firewall["rules"]]
    for direction in ("incoming", "outgoing"):
        if UFW_POLICY.get(policies.get(direction, "").lower()) != firewall[direction]:
            commands.append(f"ufw default {firewall[direction]} {direction}")
    if "Status: active" not in ufw:
        commands.append("ufw --force enable")
    if commands:
        server.shell(name=f"Ensure ufw allows exactly: {', '.join(firewall['rules'])}", commands=commands)

# --- PostgreSQL --------------------------------------------------------------------------------------
pg = manifest["postgres"]
if pg:
    if pg.get("settings"):
        names = ", ".join(f"'{name}'" for name in sorted(pg["settings"]))
        current = host.get_fact(Command, command=(
            f'psql -X -tAc "select name, setting from pg_settings where name in ({names})" 2>/dev/null || true'),
            **AS_POSTGRES) or ""
        current = dict(line.split("|", 1) for line in current.splitlines() if "|" in line)
        for name, value in pg["settings"].items():
            if current.get(name) != value:
                notify(pg["settings_notify"], postgres.sql(
                    name=f"Ensure PostgreSQL's {name} = {value}",
                    sql=f"ALTER SYSTEM SET {name} = '{value}'", **AS_POSTGRES))
    if pg.get("role"):
        roles = host.get_fact(PostgresRoles, **AS_POSTGRES)
        if pg["role"] not in roles:
            postgres.role(name=f"Ensure PostgreSQL role {pg['role']} may log in", role=pg["role"], login=True,
                          **AS_POSTGRES)
        elif not roles[pg["role"]].get("canlogin"):
            # postgres.role leaves an existing role's LOGIN alone.
            postgres.sql(name=f"Ensure PostgreSQL role {pg['role']} may log in",
                         sql=f'ALTER ROLE "{pg["role"]}" LOGIN', **AS_POSTGRES)
    if pg.get("database"):
        postgres.database(name=f"Ensure database {pg['database']} owned by {pg['owner']}",
                          database=pg["database"], owner=pg["owner"], **AS_POSTGRES)
    if pg.get("hba"):
        hba = pg["hba"]
        answer = host.get_fact(Command, command=(
            'f=$(psql -X -tAc "show hba_file" 2>/dev/null) && [ -n "$f" ] || exit 0; echo "$f"; base64 -w0 -- "$f"'),
            **AS_POSTGRES)
        if answer is None:
            if hba["lines"]:
                raise DeployError("PostgreSQL does not answer: cannot find pg_hba.conf")
        else:
            path, _, encoded = answer.partition("\n")
            content = base64.b64decode(encoded).decode()
            kept, inside = [], False
            for line in content.splitlines():
                if line == hba["begin"]:
                    inside = True
                elif inside and line == hba["end"]:
                    inside = False
                elif not inside:
                    kept.append(line)
            while kept and not kept[-1].strip():
                kept.pop()
            while kept and not kept[0].strip():
                kept.pop(0)
            if hba["lines"]:  # first: pg_hba.conf's first matching line decides
                kept = [hba["begin"], *hba["lines"], hba["end"], "", *kept]
            wanted = "\n".join(kept) + "\n"
            if wanted != content:
                notify(hba["notify"], files.put(name=f"Ensure {path} allows exactly the app's clients",
                                                src=StringIO(wanted), dest=path, user="postgres", group="postgres",
                                                mode="0640", create_remote_dir=False))

# --- guarded commands --------------------------------------------------------------------------------
for guarded in manifest["guarded"]:
    if guarded["creates"] and host.get_fact(File, path=guarded["creates"]) is not None:
        continue
    if guarded["unless"] and status_of(shlex.join(guarded["unless"]["argv"]), guarded["unless"]["user"]):
        continue
    for command in guarded["commands"]:
        notify(guarded["notify"], server.shell(name=guarded["name"], commands=[shlex.join(command["argv"])],
                                               **as_user(command["user"])))

# --- Node.js ------------------------------------------------------------------------------------------
if manifest["node_ranges"]:
    version = host.get_fact(Command, command="command -v node >/dev/null && node --version || true")
    if version:  # not installed yet (a fresh host in a dry run): nothing to compare
        have = tuple(int(part) for part in version.strip().lstrip("v").split("."))
        for wanted in manifest["node_ranges"]:
            match = re.fullmatch(r">=\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", wanted.strip())
            if not match:
                raise DeployError(f"engines range {wanted!r} is not of the form >=X[.Y[.Z]]")
            if have < tuple(int(part or 0) for part in match.groups()):
                raise DeployError(f"Node.js {version.strip()} does not satisfy {wanted}")

# --- clock and swap: the outer host's business in a container -----------------------------------------
container = host.get_fact(Command, command="systemd-detect-virt --container || true")
if container == "none":
    if manifest["timesync"]:
        others = host.get_fact(SystemdStatus, services=["chrony.service", "ntpsec.service", "ntp.service",
                                                        "openntpd.service"])
        if not any(others.values()):
            apt.packages(name="Ensure systemd-timesyncd is installed", packages=["systemd-timesyncd"])
            systemd.service(name="Ensure systemd-timesyncd keeps the clock", service="systemd-timesyncd.service",
                            running=True, enabled=True)
    swap = manifest["swap"]
    if swap and not host.get_fact(Command, command="swapon --show=NAME --noheadings"):
        server.shell(name=f"Ensure a {swap['size_mb']} MiB swap file", commands=[
            f"fallocate -l {swap['size_mb']}M {swap['path']}", f"chmod 0600 {swap['path']}",
            f"mkswap {swap['path']}", f"swapon {swap['path']}"])
        files.line(name="Ensure the swap file is in /etc/fstab", path="/etc/fstab",
                   line=f"{swap['path']} none swap sw 0 0")

run_handlers()
