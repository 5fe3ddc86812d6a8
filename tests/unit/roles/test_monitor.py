"""roles/monitor: the probe's decisions (pure), its checks and posts on loopback, and the role's files per layout.

The probe (roles/monitor/files/vigil-probe) is imported from its file. Each transition case is a
run of steps: what the checks found, whether the webhook takes posts, and exactly which alerts
reached it on that run.
"""

import datetime
import json
import re
import socket
import ssl

import pytest

from tests.support.inventories import layout
from tests.support.loopback import LoopbackServer
from tests.support.scripts import load_script
from vigil.core.errors import ConfigError
from vigil.core.paths import REPO_ROOT
from vigil.core.playbook import build_host_plans
from vigil.core.roles import load_role
from vigil.facts.files import FileState
from vigil.operations.files import File
from vigil.sandbox.ca import host_certificate

PROBE = REPO_ROOT / "roles" / "monitor" / "files" / "vigil-probe"
START = datetime.datetime(2026, 11, 26, 5, 40, tzinfo=datetime.timezone.utc)
IDENTITY = {"env": "sandbox", "host": "vps1"}
WEBHOOK = "https://hooks.example.test/services/T0SECRET/B0SECRET/tokenvalue1234567890"


probe = load_script(PROBE, "vigil_probe")


# --- transitions: what is posted, run after run -------------------------------------------------

OK = {"backend": "ok", "frontend": "ok"}
BACKEND_502 = {"backend": "fail", "frontend": "ok"}
MAINTENANCE = {"backend": "maintenance", "frontend": "maintenance"}
# (name, down_after, steps); a step: (minute, checks' results, the webhook ("up", "down" or None: none
# configured), posted).
CASES = [
    ("first run, all ok: nothing", 1, [(0, OK, "up", [])]),
    ("ok -> down: one down", 1, [(0, OK, "up", []), (1, BACKEND_502, "up", ["backend down"])]),
    ("a first run that finds it down posts it", 1, [(0, BACKEND_502, "up", ["backend down"])]),
    (
        "down -> down: nothing more",
        1,
        [
            (0, BACKEND_502, "up", ["backend down"]),
            (1, BACKEND_502, "up", []),
            (2, BACKEND_502, "up", []),
        ],
    ),
    (
        "down -> ok: recovered",
        1,
        [
            (0, OK, "up", []),
            (1, BACKEND_502, "up", ["backend down"]),
            (4, OK, "up", ["backend recovered"]),
            (5, OK, "up", []),
        ],
    ),
    (
        "maintenance is planned: nothing",
        1,
        [
            (0, OK, "up", []),
            (1, MAINTENANCE, "up", []),
            (2, MAINTENANCE, "up", []),
            (3, OK, "up", []),
        ],
    ),
    (
        "down, then maintenance, then up: recovered",
        1,
        [
            (0, BACKEND_502, "up", ["backend down"]),
            (1, MAINTENANCE, "up", []),
            (2, OK, "up", ["backend recovered"]),
        ],
    ),
    (
        "a failed post stays pending and is delivered once",
        1,
        [
            (0, OK, "up", []),
            (1, BACKEND_502, "down", []),
            (2, BACKEND_502, "down", []),
            (3, BACKEND_502, "up", ["backend down"]),
            (4, BACKEND_502, "up", []),
        ],
    ),
    (
        "pending alerts go in order",
        1,
        [
            (0, BACKEND_502, "down", []),
            (1, OK, "down", []),
            (2, OK, "up", ["backend down", "backend recovered"]),
            (3, OK, "up", []),
        ],
    ),
    ("no webhook: logged, not kept for later", 1, [(0, BACKEND_502, None, []), (1, BACKEND_502, "up", [])]),
    (
        "down_after 2 needs two failures in a row",
        2,
        [
            (0, OK, "up", []),
            (1, BACKEND_502, "up", []),
            (2, OK, "up", []),
            (3, BACKEND_502, "up", []),
            (4, BACKEND_502, "up", ["backend down"]),
            (5, OK, "up", ["backend recovered"]),
        ],
    ),
    (
        "maintenance breaks a failure streak",
        2,
        [(0, BACKEND_502, "up", []), (1, MAINTENANCE, "up", []), (2, BACKEND_502, "up", [])],
    ),
]


def run_steps(steps, down_after):
    """Each step through transition() and deliver() as main() chains them; what reached the webhook per step."""
    state, posted_per_step, saved = {}, [], []
    for minute, results, webhook, _ in steps:
        now = START + datetime.timedelta(minutes=minute)
        found = {check: {"result": result, "detail": "HTTP 502 in 3 ms" if result == "fail" else "fine"}
                 for check, result in results.items()}
        state, _ = probe.transition(state, found, now, IDENTITY, down_after)
        posted = []

        def send(document, webhook=webhook, posted=posted):
            if webhook == "down":
                raise probe.DeliveryError("HTTP 503")
            posted.append(document)

        state = probe.deliver(state, send if webhook else None, saved.append, now, say=lambda line: None)
        posted_per_step.append(posted)
        state = json.loads(json.dumps(state))  # what the state file keeps: JSON, nothing more
    return state, posted_per_step


@pytest.mark.parametrize("name, down_after, steps", CASES, ids=[case[0] for case in CASES])
def test_transitions_post_only_changes_and_each_once(name, down_after, steps):
    state, posted_per_step = run_steps(steps, down_after)
    for (minute, *_, expected), posted in zip(steps, posted_per_step):
        assert [f"{p['vigil']['check']} {p['vigil']['event']}" for p in posted] == expected, f"minute {minute}"
    assert state["pending"] == [] or steps[-1][2] == "down"


def test_alert_texts_and_machine_fields():
    _, posted = run_steps([(0, OK, "up", []), (1, BACKEND_502, "up", []), (4, OK, "up", [])], 1)
    down, recovered = posted[1][0], posted[2][0]
    assert down["text"] == ":red_circle: [sandbox] vps1 backend is down: HTTP 502 in 3 ms (since 2026-11-26T05:41:00Z)"
    assert down["vigil"] == {
        "env": "sandbox",
        "host": "vps1",
        "check": "backend",
        "event": "down",
        "detail": "HTTP 502 in 3 ms",
        "at": "2026-11-26T05:41:00Z",
        "since": "2026-11-26T05:41:00Z",
        "id": "sandbox/vps1/backend/down/2026-11-26T05:41:00Z",
    }
    assert recovered["text"] == ":large_green_circle: [sandbox] vps1 backend recovered after 3 min"
    assert recovered["vigil"]["event"] == "recovered"


def test_a_late_delivery_says_so_and_markup_in_details_is_escaped():
    state, _ = probe.transition({}, {"backend": {"result": "fail", "detail": "<!channel> & co"}}, START, IDENTITY, 1)
    (pending,) = state["pending"]
    assert "&lt;!channel&gt; &amp; co" in pending["text"]
    late = probe.payload(pending, START + datetime.timedelta(minutes=12))
    assert late["text"].endswith("(reported 12 min late: earlier posts to the webhook failed)")
    assert probe.payload(pending, START + datetime.timedelta(seconds=30))["text"] == pending["text"]


def test_a_state_file_someone_edited_badly_does_not_stop_the_probe():
    broken = {"checks": {"backend": {"state": "down", "failures": "many"}}, "pending": ["junk", {"text": 1}]}
    state, alerts = probe.transition(broken, {"backend": {"result": "ok", "detail": "fine"}}, START, IDENTITY, 1)
    assert [a["vigil"]["event"] for a in alerts] == ["recovered"] and state["pending"] == alerts


# --- settings -----------------------------------------------------------------------------------

SETTINGS = {
    "env": "sandbox",
    "host": "vps1",
    "checks": ["backend", "frontend"],
    "timeout": 10,
    "down_after": 1,
    "state_file": "/var/lib/vigil/probe-state.json",
    "events_file": "/var/lib/vigil/probe-events.jsonl",
    "webhook_env_file": "/etc/vigil/probe.env",
    "site": {
        "server_name": "app.example.org",
        "port": 443,
        "backend_path": "/api/health",
        "frontend_path": "/",
        "maintenance_flag": "/var/www/together-pray/maintenance.on",
    },
}


@pytest.mark.parametrize("change, message", [
    ({}, None),
    ({"checks": ["backend", "disk"]}, "checks must be a list"),
    ({"host": "vps1; reboot"}, "host must be a plain name"),
    ({"site": {**SETTINGS["site"], "server_name": "a b"}}, "site.server_name"),
    ({"site": {**SETTINGS["site"], "backend_path": "api/health"}}, "site.backend_path"),
    ({"timeout": 0}, "timeout must be"),
    ({"down_after": 0}, "down_after must be"),
    # The dump-era backup check is gone: settings that still name it are refused, not half-run.
    ({"checks": ["backend", "backup"]}, "checks must be a list"),
    ({"state_file": "probe-state.json"}, "state_file must be an absolute path"),
])
def test_settings_are_checked(tmp_path, change, message):
    path = tmp_path / "probe.json"
    path.write_text(json.dumps({**SETTINGS, **change}))
    if message is None:
        assert probe.load_settings(str(path))["checks"] == ["backend", "frontend"]
    else:
        with pytest.raises(probe.SettingsError, match=re.escape(message)):
            probe.load_settings(str(path))


@pytest.mark.parametrize("content, url", [
    (f"ALERT_WEBHOOK_URL={WEBHOOK}\n", WEBHOOK),
    (f"# comment\nALERT_WEBHOOK_URL='{WEBHOOK}'\n", WEBHOOK),
    ("# No ALERT_WEBHOOK_URL in the sandbox secrets\nALERT_WEBHOOK_URL=\n", ""),
    (None, ""),
])
def test_the_webhook_is_read_from_the_env_file(tmp_path, content, url):
    path = tmp_path / "probe.env"
    if content is not None:
        path.write_text(content)
    assert probe.read_webhook(str(path)) == url


# --- on loopback: the site through "nginx", posts to a webhook -----------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def serve():
    """serve(answer, tls=None) -> a loopback server on its own thread; `tls` an SSLContext for HTTPS."""
    servers = []

    def start(answer, tls=None):
        servers.append(LoopbackServer(answer, tls=tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def site_tls(tmp_path):
    issued = host_certificate("site", ["app.example.org"], directory=tmp_path / "ca")
    (tmp_path / "site.pem").write_bytes(issued.chain + issued.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "site.pem")
    return context


@pytest.mark.parametrize("answer, want_status_ok, result, detail", [
    ((200, b'{"status":"ok","release":"r1","database":"up"}'), True, "ok", r"HTTP 200 in \d+ ms"),
    ((503, b'{"status":"error","database":"down"}'), True, "fail", r"HTTP 503 in \d+ ms"),
    ((200, b'{"status":"starting"}'), True, "fail", r"HTTP 200 in \d+ ms, status 'starting'"),
    ((200, b"<html>maintenance</html>"), True, "fail", r"HTTP 200 in \d+ ms, not JSON"),
    ((200, b"<html></html>"), False, "ok", r"HTTP 200 in \d+ ms"),
    ((502, b"bad gateway"), False, "fail", r"HTTP 502 in \d+ ms"),
])
def test_web_checks_go_through_loopback_with_the_sites_name(serve, site_tls, answer, want_status_ok, result, detail):
    server = serve(answer, site_tls)
    site = {"server_name": "app.example.org", "port": server.port}
    got, said = probe.check_https(site, "/api/health", 5, want_status_ok)
    assert got == result and re.fullmatch(detail, said)
    assert server.names == ["app.example.org"]  # the TLS server name nginx picks the site by
    assert server.seen == [{"host": f"app.example.org:{server.port}", "path": "/api/health"}]


def test_a_site_that_does_not_answer_is_down():
    assert probe.check_https({"server_name": "app.example.org", "port": closed_port()}, "/", 5, False) == (
        "fail", "connection refused")


def test_maintenance_checks_nothing_on_the_web(tmp_path):
    flag = tmp_path / "maintenance.on"
    flag.touch()
    settings = {**SETTINGS, "site": {**SETTINGS["site"], "port": closed_port(), "maintenance_flag": str(flag)}}
    assert {check: found["result"] for check, found in probe.run_checks(settings).items()} == {
        "backend": "maintenance", "frontend": "maintenance"}


@pytest.mark.parametrize("target", ["closed port", "HTTP 500", "redirect"])
def test_a_failed_post_never_shows_the_url(serve, target, capsys):
    if target == "closed port":
        url = f"http://127.0.0.1:{closed_port()}/services/T0SECRET/B0SECRET/tokenvalue1234567890"
    else:
        server = serve((500, b"no") if target == "HTTP 500" else (302, b""))
        url = f"http://127.0.0.1:{server.port}/services/T0SECRET/B0SECRET/tokenvalue1234567890"
    with pytest.raises(probe.DeliveryError) as raised:
        probe.post(url, {"text": "hi"}, 5)
    message = str(raised.value)
    assert message == {"closed port": "connection refused", "HTTP 500": "HTTP 500", "redirect": "HTTP 302"}[target]
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert "tokenvalue" not in message + "".join(capsys.readouterr())


def test_a_post_is_slack_compatible_json(serve):
    server = serve((200, b"ok"))
    probe.post(f"http://127.0.0.1:{server.port}/hook", {"text": "hi", "vigil": {"event": "down"}}, 5)
    assert server.seen == [
        {"path": "/hook", "type": "application/json", "json": {"text": "hi", "vigil": {"event": "down"}}}
    ]


def test_a_whole_run_logs_each_check_posts_the_change_and_never_prints_the_url(tmp_path, serve, site_tls, monkeypatch):
    site = serve((502, b"bad gateway"), site_tls)
    hook = serve((500, b"no"))
    url = f"http://127.0.0.1:{hook.port}/services/T0SECRET/B0SECRET/tokenvalue1234567890"
    (tmp_path / "probe.env").write_text(f"ALERT_WEBHOOK_URL={url}\n")
    settings = {
        **SETTINGS,
        "state_file": str(tmp_path / "state" / "probe-state.json"),
        "events_file": str(tmp_path / "state" / "probe-events.jsonl"),
        "webhook_env_file": str(tmp_path / "probe.env"),
        "site": {**SETTINGS["site"], "port": site.port, "maintenance_flag": str(tmp_path / "off")},
    }
    (tmp_path / "probe.json").write_text(json.dumps(settings))
    monkeypatch.setattr(probe, "SETTINGS", str(tmp_path / "probe.json"))
    lines = []
    assert probe.main(now=lambda: START, say=lines.append) == 0
    assert [re.sub(r"\d+ ms", "N ms", line) for line in lines] == [
        'check=backend result=fail state=down failures=1 detail="HTTP 502 in N ms"',
        'check=frontend result=fail state=down failures=1 detail="HTTP 502 in N ms"',
        'alert=down check=backend at=2026-11-26T05:40:00Z sent=no pending=2 error="HTTP 500" '
        'text=":red_circle: [sandbox] vps1 backend is down: HTTP 502 in N ms (since 2026-11-26T05:40:00Z)"',
    ]
    state = json.loads((tmp_path / "state" / "probe-state.json").read_text())
    assert [p["vigil"]["check"] for p in state["pending"]] == ["backend", "frontend"]
    # The webhook works again: both go, in order, once.
    hook.answer = (200, b"ok")
    lines.clear()
    assert probe.main(now=lambda: START + datetime.timedelta(minutes=1), say=lines.append) == 0
    assert [p["json"]["vigil"]["check"] for p in hook.seen] == ["backend", "backend", "frontend"]  # the first refused
    assert [line.split(" text=")[0] for line in lines[2:]] == [
        "alert=down check=backend at=2026-11-26T05:40:00Z sent=yes",
        "alert=down check=frontend at=2026-11-26T05:40:00Z sent=yes",
    ]
    assert json.loads((tmp_path / "state" / "probe-state.json").read_text())["pending"] == []
    assert not any("tokenvalue" in line for line in lines)
    # The host's history: each change once, whatever happened to its post.
    events = [json.loads(line) for line in (tmp_path / "state" / "probe-events.jsonl").read_text().splitlines()]
    assert [(e["host"], e["check"], e["event"], e["at"]) for e in events] == [
        ("vps1", "backend", "down", "2026-11-26T05:40:00Z"), ("vps1", "frontend", "down", "2026-11-26T05:40:00Z")]


def test_the_event_history_keeps_its_newer_half_past_its_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "EVENTS_LIMIT", 1000)
    path = tmp_path / "probe-events.jsonl"
    old = [{"vigil": {"n": n, "event": "down"}} for n in range(40)]
    for item in old:
        probe.record_events(str(path), [item])
    numbers = [json.loads(line)["n"] for line in path.read_text().splitlines()]
    assert 0 < numbers[0] and numbers == list(range(numbers[0], 40)) and path.stat().st_size <= 1000 + 30


def test_unusable_settings_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "probe.json").write_text("{not json")
    monkeypatch.setattr(probe, "SETTINGS", str(tmp_path / "probe.json"))
    assert probe.main(say=lambda line: None) == 2
    assert "unreadable: JSONDecodeError" in capsys.readouterr().err


# --- the role: which checks each host gets, and the webhook kept secret ---------------------------


def monitor_operations(groups, host, secret=WEBHOOK, **overrides):
    role = load_role("monitor")
    inventory = layout(groups)
    secrets = {} if secret is None else {"ALERT_WEBHOOK_URL": secret}
    return role.tasks(role, inventory.vars_for(inventory.hosts[host], [role], overrides, lambda: secrets))


SPLIT = {"web": ["web1"], "db": ["db1"]}
SHARED = {"web": ["vps1"], "db": ["vps1"]}


@pytest.mark.parametrize("groups, host, checks", [
    (SPLIT, "web1", ["backend", "frontend"]),
    (SPLIT, "db1", ["postgresql"]),
    (SHARED, "vps1", ["backend", "frontend", "postgresql"]),  # one probe, both kinds of checks
    ({"web": ["web1"], "db": ["db1"], "bastion": ["jump1"]}, "jump1", []),
])
def test_each_host_gets_the_checks_of_what_onboarding_installs(groups, host, checks):
    files = {op.path: op for op in monitor_operations(groups, host) if isinstance(op, File)}
    settings = json.loads(files["/etc/vigil/probe.json"].content)
    assert settings["checks"] == checks and settings["host"] == host and settings["env"] == "sandbox"
    assert ("site" in settings) is ("backend" in checks)
    assert not [key for key in settings if key.startswith("backup")]
    assert files["/usr/local/sbin/vigil-probe"].mode == "0755"
    assert "OnUnitActiveSec=60\n" in files["/etc/systemd/system/vigil-probe.timer"].content.decode()


@pytest.mark.parametrize("groups", [SPLIT, SHARED])
def test_every_host_gets_exactly_one_probe_from_onboarding(groups):
    plans = build_host_plans(
        layout(groups), "onboard", None, {}, lambda: {"ALERT_WEBHOOK_URL": WEBHOOK}, only_roles=["monitor"]
    )
    for plan in plans:
        assert [getattr(op, "path", "") for op in plan.operations].count("/etc/vigil/probe.json") == 1, plan.host.name


def test_the_site_is_probed_by_the_name_nginx_serves():
    files = {op.path: op for op in monitor_operations(SPLIT, "web1", nginx_server_name="app.example.org")
             if isinstance(op, File)}
    assert json.loads(files["/etc/vigil/probe.json"].content)["site"] == {
        "server_name": "app.example.org", "port": 443, "backend_path": "/api/health", "frontend_path": "/",
        "maintenance_flag": "/var/www/together-pray/maintenance.on"}
    defaulted = {op.path: op for op in monitor_operations(SPLIT, "web1") if isinstance(op, File)}
    assert json.loads(defaulted["/etc/vigil/probe.json"].content)["site"]["server_name"] == "203.0.113.1"


@pytest.mark.parametrize("overrides, message", [
    ({"monitor_timeout": 20}, "monitor_timeout: 20 s is too long for runs every 60 s"),
    ({"monitor_down_after": 0}, "monitor_down_after: expected a whole number >= 1"),
    ({"monitor_state_file": "probe-state.json"}, "monitor_state_file"),
    ({"nginx_server_name": "app.example.org; reboot"}, "nginx_server_name"),
])
def test_bad_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        monitor_operations(SPLIT, "web1", **overrides)


@pytest.mark.parametrize("secret, line", [(WEBHOOK, f"ALERT_WEBHOOK_URL={WEBHOOK}"), (None, "ALERT_WEBHOOK_URL=")])
def test_the_webhook_env_file_is_for_root_and_the_probe_only_and_never_displayed(secret, line):
    operations = monitor_operations(SHARED, "vps1", secret=secret)
    (env_file,) = [op for op in operations if isinstance(op, File) and op.path == "/etc/vigil/probe.env"]
    assert (env_file.secret, env_file.mode, env_file.owner, env_file.group) == (True, "0640", "root", "vigil-probe")
    assert line in env_file.content.decode().splitlines()
    shown = []
    for op in operations:
        if not isinstance(op, File):
            shown.append(op.name)
            continue
        for before in (
            FileState(None),
            FileState("file", "0644", "root", "root", 5, "0" * 64, content=b"ALERT_WEBHOOK_URL=x\n"),
        ):
            plan = op.plan(
                {
                    f"file:{op.path}": before,
                    "file:" + op.path.rsplit("/", 1)[0]: FileState("directory", "0755", "root", "root"),
                }
            )
            shown += [op.name, plan.summary, plan.reason, plan.diff or "", *(c.display("ops") for c in plan.commands)]
    text = "\n".join(shown)
    assert "probe.env" in text and "tokenvalue" not in text and WEBHOOK not in text


def test_the_probe_runs_as_its_own_user_writing_only_its_own_directory():
    operations = monitor_operations(SHARED, "vps1")
    (unit,) = [op for op in operations if isinstance(op, File) and op.path == "/etc/systemd/system/vigil-probe.service"]
    text = unit.content.decode()
    assert "\nUser=vigil-probe\n" in text and "\nReadWritePaths=/var/lib/vigil/probe\n" in text
    assert "\nCapabilityBoundingSet=\n" in text
    settings = json.loads(next(op for op in operations if isinstance(op, File) and op.path == "/etc/vigil/probe.json")
                          .content)
    assert (settings["state_file"], settings["events_file"]) == ("/var/lib/vigil/probe/state.json",
                                                                   "/var/lib/vigil/probe/events.jsonl")


def test_a_state_file_outside_the_probes_directory_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="monitor_state_file.*keep it in /var/lib/vigil/probe"):
        monitor_operations(SHARED, "vps1", monitor_state_file="/var/lib/vigil/probe-state.json")


NOW = 1796309000


@pytest.mark.parametrize("run, result, detail", [
    ({"Result": "success", "ExecMainStatus": "0", "ExecMainExitTimestamp": f"@{NOW - 120}"}, "ok",
     "WAL reached the repository 2 min ago"),
    # pgbackrest check failed: the segment did not reach the backup host within its wait.
    ({"Result": "exit-code", "ExecMainStatus": "82", "ExecMainExitTimestamp": f"@{NOW - 30}"}, "fail",
     "pgbackrest check failed 30 s ago (exit 82): WAL is not reaching the backup host's repository"),
    # The check itself stopped running: its timer is gone or stuck.
    ({"Result": "success", "ExecMainStatus": "0", "ExecMainExitTimestamp": f"@{NOW - 3600}"}, "fail",
     "WAL archiving last checked 60 min ago: the archive check's timer has stopped"),
    ({"Result": "success", "ExecMainStatus": "0", "ExecMainExitTimestamp": ""}, "ok",
     "the archive check has not run yet"),
])
def test_wal_archiving_is_down_when_its_check_fails_or_stops_running(run, result, detail):
    assert probe.judge_wal_archive(run, NOW, 900) == (result, detail)


@pytest.mark.parametrize("groups, host, checks", [
    ({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]}, "db1", ["postgresql", "wal-archive"]),
    ({"web": ["web1"], "db": ["db1"]}, "db1", ["postgresql"]),
    ({"web": ["web1"], "db": ["db1"], "backup": ["backup1"]}, "backup1", ["repository", "drill"]),
])
def test_the_database_end_of_a_repository_watches_its_wal_archiving(tmp_path, groups, host, checks):
    plans = build_host_plans(layout(groups), "onboard", host, {}, lambda: {
        "PGBACKREST_CIPHER_PASS": "c" * 40, "PGBACKREST_SSH_SEED": "s" * 40, "DB_PASSWORD": "d" * 30},
        only_roles=["monitor"])
    settings = json.loads(next(op.content for op in plans[0].operations
                               if getattr(op, "path", "") == "/etc/vigil/probe.json"))
    assert settings["checks"] == checks
    if "wal-archive" in checks:
        assert (settings["wal_archive_unit"], settings["wal_archive_max_age_seconds"]) == (
            "vigil-pgbackrest-check.service", 900)
    if "repository" in checks:
        assert settings["repository_path"] == "/var/lib/pgbackrest/repository"
        assert (settings["repository_max_age_hours"], settings["repository_disk_max_percent"]) == (26, 85)
    if "drill" in checks:
        assert (settings["drill_result_file"], settings["drill_max_age_days"]) == (
            "/var/lib/pgbackrest/drill/last.json", 8)
    # The probe accepts what the role writes.
    written = tmp_path / "probe.json"
    written.write_text(json.dumps(settings))
    assert probe.load_settings(str(written))["checks"] == checks


def ran(result: str, hours_ago: float | None) -> dict:
    return {"Result": result, "ExecMainStatus": "0" if result == "success" else "1",
            "ExecMainExitTimestamp": "" if hours_ago is None else f"@{int(NOW - hours_ago * 3600)}"}


@pytest.mark.parametrize("runs, used, result, detail", [
    ([ran("success", 30), ran("success", 2)], 40.0, "ok", "last scheduled backup 2 h ago; disk 40% full"),
    # A stale repository: the timers stopped (or every run since fails) for longer than a day's schedule.
    ([ran("success", 264), ran("exit-code", 1)], 40.0, "fail",
     "the last scheduled backup succeeded 11 days ago (more than 26 h): the scheduled backups stopped"),
    ([ran("exit-code", 1), ran("success", None)], 40.0, "fail",
     "no scheduled backup has succeeded yet: every run failed"),
    ([ran("success", None), ran("success", None)], 40.0, "ok", "no scheduled backup has run yet; disk 40% full"),
    ([ran("success", 2), ran("success", 2)], 91.5, "fail", "the repository's disk is 92% full (more than 85%)"),
])
def test_the_repository_is_down_when_its_disk_fills_or_its_backups_stop(runs, used, result, detail):
    assert probe.judge_repository(runs, used, NOW, 26, 85) == (result, detail)


def drilled(days_ago: float, ok: bool = True, **more) -> dict:
    at = datetime.datetime.fromtimestamp(NOW - days_ago * 86400, datetime.timezone.utc)
    return {"at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "ok": ok, "backup": "20261129-023000F", "rto_seconds": 4.2,
            **more}


@pytest.mark.parametrize("result, verdict, detail", [
    (drilled(2), "ok", "the restore drill of 20261129-023000F passed 2 days ago, restored in 4.2s"),
    (None, "ok", "no restore drill has run yet"),
    (drilled(0.01, ok=False, error="pgbackrest verify found damage in the repository: invalid checksum "
                                   "'20261129-023000F/bundle/1'"), "fail",
     "the restore drill of 20261129-023000F failed 14 min ago: pgbackrest verify found damage in the repository: "
     "invalid checksum '20261129-023000F/bundle/1'"),
    # The drill's timer stopped: a pass long ago proves nothing about today's backups.
    (drilled(9), "fail", "the last restore drill passed 9 days ago (more than 8 days): the drill's timer has stopped"),
    ("its result /x cannot be read: Permission denied", "fail",
     "the restore drill cannot be judged: its result /x cannot be read: Permission denied"),
    ({"ok": True}, "fail", "the restore drill's result has no time: None"),
])
def test_the_drill_is_down_when_the_last_one_failed_or_none_passed_for_a_week(result, verdict, detail):
    assert probe.judge_drill(result, NOW, 8) == (verdict, detail)


def test_the_drills_result_file_is_read_or_its_problem_said(tmp_path):
    path = tmp_path / "last.json"
    assert probe.read_drill_result(str(path)) is None
    path.write_text('{"at": "2026-12-03T05:00:00Z", "ok": true}')
    assert probe.read_drill_result(str(path)) == {"at": "2026-12-03T05:00:00Z", "ok": True}
    path.write_text("[1]")
    assert probe.read_drill_result(str(path)).endswith("is not a JSON object")
