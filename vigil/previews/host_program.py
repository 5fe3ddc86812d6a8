"""The program `preview.*` runs on a preview host: as root, by `python3 -I -c`, one action a visit, its
configuration (the preview's env files among it) as JSON on stdin. Standard library only: shipped as text
(vigil/previews/lifecycle.py) and imported by the unit tests for its pure parts.

  list     every preview's record (<records>/<slug>.json), with the memory its units use now
  install  a preview put in place from the archives already on the host (<root>/.incoming/): its releases
           unpacked, its env files written (0600, the app's user), its migrations run against its own
           database, its units started, both answering on their ports (the health gate), its own
           certificate obtained (certbot, HTTP-01) where it gets one, its site enabled (nginx -t first),
           and its record written last. A step that fails removes everything
           the preview has on this host, and the answer says which step.
  remove   everything a preview has on this host, whatever state it is in: units, site, certificate, files,
           env files, record. Nothing there: nothing done (the answer says so).

Every answer is one JSON line on stdout; a failure is a JSON line on stderr and exit 3.
"""

import grp
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.request

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,48}-[0-9a-f]{8}$")
RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class Failed(Exception):
    def __init__(self, what, detail=""):
        super().__init__(what)
        self.what, self.detail = what, detail


def run(*argv, check=True):
    done = subprocess.run(argv, capture_output=True, text=True, cwd="/")
    if check and done.returncode != 0:
        raise Failed(" ".join(argv[:3]), (done.stderr or done.stdout)[-600:])
    return done


class Preview:
    def __init__(self, config):
        self.config = config
        self.slug = config["slug"]
        if not SLUG.fullmatch(self.slug):
            raise Failed("the preview's name", f"{self.slug!r} is not a preview name")
        self.root = f"{config['root']}/{self.slug}"
        self.env_dir = f"{config['config_dir']}/{self.slug}"
        self.record = f"{config['records']}/{self.slug}.json"
        self.site = f"/etc/nginx/sites-available/{config['app']}-preview-{self.slug}.conf"
        self.enabled = f"/etc/nginx/sites-enabled/{config['app']}-preview-{self.slug}.conf"
        self.units = [unit.replace("@.service", f"@{self.slug}.service") for unit in config["units"].values()]
        self.migrate = config["migrate_unit"].replace("@.service", f"@{self.slug}.service")
        self.certificate = config.get("certificate")
        if self.certificate and not self.certificate["name"].startswith(self.slug + "."):
            raise Failed("the preview's certificate", f"{self.certificate['name']!r} is not {self.slug}'s name")

    def install(self):
        done = []
        try:
            for service, release in self.config["releases"].items():
                self.unpack(service, release)
            done.append("releases")
            self.write_env_files()
            done.append("env files")
            if self.config.get("migrate"):
                self.run_migrations()
                done.append("migrations")
            run("systemctl", "enable", "--quiet", *self.units)
            run("systemctl", "restart", *self.units)
            self.health_gate()
            done.append("health gate")
            if self.certificate:
                self.obtain_certificate()
                done.append("certificate")
            self.enable_site()
            done.append("site")
            self.write_record()
        except Failed as failure:
            # A certificate obtained stays for the next try: each issue counts against the CA's rate limits.
            removed = self.remove(keep_certificate=True)
            failure.detail = f"{failure.detail} (then removed: {', '.join(removed) or 'nothing'})"
            raise
        return {"installed": self.slug, "steps": done}

    def unpack(self, service, release):
        if not RELEASE.fullmatch(release["id"]):
            raise Failed(f"the {service} release's id", release["id"])
        incoming = f"{self.config['root']}/.incoming/{self.slug}-{service}.tar.gz"
        releases = f"{self.root}/{service}/releases"
        target = f"{releases}/{release['id']}"
        os.makedirs(releases, exist_ok=True)
        for path in (self.config["root"], self.root, f"{self.root}/{service}", releases):
            shutil.chown(path, "root", self.config["user"])
            os.chmod(path, 0o750)
        if not os.path.isdir(target):
            partial = target + ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            os.makedirs(partial)
            with tarfile.open(incoming) as archive:
                archive.extractall(partial, filter="data")
            for directory, subdirectories, files in os.walk(partial):
                for name in [directory, *(os.path.join(directory, entry) for entry in subdirectories + files)]:
                    os.chown(name, 0, grp.getgrnam(self.config["user"]).gr_gid, follow_symlinks=False)
                    if not os.path.islink(name):
                        os.chmod(name, (os.stat(name).st_mode & 0o750) | (0o050 if os.path.isdir(name) else 0o040))
            os.rename(partial, target)
        link = f"{self.root}/{service}/current"
        temporary = link + ".new"
        if os.path.lexists(temporary):
            os.unlink(temporary)
        os.symlink(f"releases/{release['id']}", temporary)
        os.replace(temporary, link)
        os.unlink(incoming)

    def write_env_files(self):
        os.makedirs(self.env_dir, exist_ok=True)
        shutil.chown(self.env_dir, "root", self.config["user"])
        os.chmod(self.env_dir, 0o750)
        for service, text in self.config["env_files"].items():
            path = f"{self.env_dir}/{service}.env"
            descriptor = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
            shutil.chown(path + ".new", self.config["user"], self.config["user"])
            os.replace(path + ".new", path)
        if self.config.get("database_certificate"):  # public: the server's, to verify it from this host
            path = f"{self.env_dir}/database-server.crt"
            with open(path + ".new", "w") as handle:
                handle.write(self.config["database_certificate"])
            os.chmod(path + ".new", 0o644)
            os.replace(path + ".new", path)

    def run_migrations(self):
        done = run("systemctl", "start", self.migrate, check=False)
        if done.returncode != 0:
            log = run("journalctl", "--no-pager", "-q", "-n", "20", "-u", self.migrate, check=False).stdout
            raise Failed("the migrations", log[-600:])

    def health_gate(self):
        deadline = time.monotonic() + self.config["health_timeout"]
        for service, check in self.config["health"].items():
            url = f"http://127.0.0.1:{check['port']}{check['path']}"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=5) as answer:
                        body = answer.read(65536).decode(errors="replace")
                        if answer.status == 200 and check.get("contains", "") in body:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    unit = [u for u in self.units if f"-{service}@" in u][0]
                    log = run("journalctl", "--no-pager", "-q", "-n", "15", "-u", unit, check=False).stdout
                    raise Failed(f"the health gate ({service} at {url})", log[-600:])
                time.sleep(0.5)

    def obtain_certificate(self):
        """The preview's own certificate, by HTTP-01 through the env's site on port 80 (its default server
        serves every name's challenges from acme_root), as the env's own is obtained (roles/nginx)."""
        wanted = self.certificate
        if os.path.exists(f"/etc/letsencrypt/live/{wanted['name']}/fullchain.pem"):
            return
        server = ["--server", wanted["server"]] if wanted["server"] else []
        run("certbot", "certonly", "--non-interactive", "--agree-tos", "--email", wanted["email"], "--webroot",
            "-w", wanted["acme_root"], "-d", wanted["name"], "--cert-name", wanted["name"], *server)

    def enable_site(self):
        with open(self.site + ".new", "w") as handle:
            handle.write(self.config["site"])
        os.replace(self.site + ".new", self.site)
        if not os.path.lexists(self.enabled):
            os.symlink(self.site, self.enabled)
        checked = run("nginx", "-t", "-q", check=False)
        if checked.returncode != 0:
            raise Failed("nginx -t with the preview's site", checked.stderr[-600:])
        run("systemctl", "reload", "nginx.service")
        self.wait_until_served()

    def wait_until_served(self, timeout=30, address=("127.0.0.1", 443)):
        """nginx's reload returns before its new workers take over: the site is served once a TLS handshake for
        the preview's name gets the certificate its site names (else the env's site answers it)."""
        served = self.config["served"]
        with open(served["certificate"]) as handle:
            first = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", handle.read(), re.S)
        wanted = ssl.PEM_cert_to_DER_cert(first.group(0))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # compared below, byte for byte
        deadline, got = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(address, timeout=5) as raw, \
                        context.wrap_socket(raw, server_hostname=served["name"]) as tls:
                    got = tls.getpeercert(binary_form=True)
            except OSError as error:
                got = error
            if got == wanted:
                return
            time.sleep(0.2)
        why = f": {got}" if isinstance(got, OSError) else ""
        raise Failed("nginx serving the preview's site",
                     f"{served['name']} still gets another certificate after {timeout}s{why}")

    def write_record(self):
        os.makedirs(self.config["records"], mode=0o700, exist_ok=True)
        with open(self.record + ".new", "w") as handle:
            json.dump(self.config["record"], handle)
        os.replace(self.record + ".new", self.record)

    def remove(self, keep_certificate=False):
        """Everything of the preview on this host, record first (it is no longer listed whatever follows)."""
        removed = []
        if os.path.exists(self.record):
            os.unlink(self.record)
            removed.append("record")
        present = [unit for unit in [*self.units, self.migrate]
                   if run("systemctl", "is-enabled", unit, check=False).stdout.strip() == "enabled"
                   or run("systemctl", "is-active", unit, check=False).stdout.strip() not in ("inactive", "unknown")]
        if present:
            run("systemctl", "disable", "--now", "--quiet", *present, check=False)
            run("systemctl", "reset-failed", *present, check=False)
            removed.append("units")
        if os.path.lexists(self.enabled) or os.path.exists(self.site):
            for path in (self.enabled, self.site):
                if os.path.lexists(path):
                    os.unlink(path)
            run("systemctl", "reload", "nginx.service", check=False)
            removed.append("site")
        renewal = f"/etc/letsencrypt/renewal/{self.certificate['name']}.conf" if self.certificate else ""
        if renewal and not keep_certificate and os.path.exists(renewal):
            run("certbot", "delete", "--non-interactive", "--cert-name", self.certificate["name"], check=False)
            removed.append("certificate")
        for path, what in ((self.root, "files"), (self.env_dir, "env files")):
            if os.path.lexists(path):
                shutil.rmtree(path)
                removed.append(what)
        for service in self.config["units"]:
            incoming = f"{self.config['root']}/.incoming/{self.slug}-{service}.tar.gz"
            if os.path.exists(incoming):
                os.unlink(incoming)
        return removed


def memory_of(unit):
    """The unit's memory in bytes: systemd's accounting where it keeps one, else its main process's resident
    memory (a container's systemd may account none)."""
    shown = run("systemctl", "show", "-p", "MemoryCurrent", "-p", "MainPID", unit, check=False).stdout
    values = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    if values.get("MemoryCurrent", "").isdigit():
        return int(values["MemoryCurrent"])
    pid = values.get("MainPID", "0")
    if not pid.isdigit() or pid == "0":
        return 0
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def listed(config):
    previews = []
    directory = config["records"]
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    for name in names:
        if not name.endswith(".json"):
            continue
        with open(f"{directory}/{name}") as handle:
            record = json.load(handle)
        memory = sum(memory_of(unit.replace("@.service", f"@{record.get('slug', '')}.service"))
                     for unit in config["units"].values())
        previews.append({**record, "memory": memory})
    return {"previews": previews}


def main():
    action = sys.argv[1]
    config = json.loads(sys.stdin.read())
    try:
        if action == "list":
            answer = listed(config)
        elif action == "install":
            answer = Preview(config).install()
        elif action == "remove":
            answer = {"removed": Preview(config).remove()}
        else:
            raise Failed(f"the action {action!r}")
    except Failed as failure:
        sys.stderr.write(json.dumps({"error": failure.what, "detail": failure.detail.strip()[-900:]}) + "\n")
        sys.exit(3)
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
