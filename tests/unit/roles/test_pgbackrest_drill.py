"""/usr/local/lib/vigil/vigil-pgbackrest-drill (roles/pgbackrest/files): how it reads pgBackRest's
answers and decides whether a drill passed. Its run against a real repository is e2e
(test_recovery_repository)."""

import json

import pytest

from tests.support.scripts import load_script
from vigil.core.paths import REPO_ROOT

drill = load_script(REPO_ROOT / "roles" / "pgbackrest" / "files" / "vigil-pgbackrest-drill", "vigil_drill")

# pgbackrest verify --output=text --verbose --log-level-console=info, as 2.55 prints them.
VERIFIED = """stanza: together-pray
status: ok
  archiveId: 17-1, total WAL checked: 6, total valid WAL: 6
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261203-171903F, status: valid, total files checked: 1271, total valid files: 1271
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
"""
DAMAGED = """2026-12-03 17:19:29.016 P00   INFO: verify command begin 2.55.1: --output=text --set=20261203-171903F
2026-12-03 17:19:29.068 P01   INFO: invalid checksum '20261203-171903F/bundle/1'
2026-12-03 17:19:29.281 P00   INFO: stanza: together-pray
stanza: together-pray
status: error
  archiveId: 17-1, total WAL checked: 2, total valid WAL: 2
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261203-171903F, status: invalid, total files checked: 1271, total valid files: 1270
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
"""
MISSING_WAL = """2026-12-03 17:30:00.100 P01   INFO: missing '17-1/0000000100000000/000000010000000000000007-abc.zst'
stanza: together-pray
status: error
"""


@pytest.mark.parametrize("report, damage", [
    (VERIFIED, None),
    (DAMAGED, ["invalid checksum '20261203-171903F/bundle/1'"]),
    (MISSING_WAL, ["missing '17-1/0000000100000000/000000010000000000000007-abc.zst'"]),
    # An error status whose lines name nothing is still damage.
    ("stanza: together-pray\nstatus: error\n", []),
    # No status at all (verify stopped early) is not a pass.
    ("", []),
])
def test_verify_passes_only_on_its_ok_status_and_names_each_damaged_file(report, damage):
    assert drill.verify_problems(report) == damage


def test_the_markers_answer_gives_the_counts_and_not_its_own_lines():
    answer = ("paused|1796309000.1\npublic.prayers|1042\npublic.users|7\npoint|1796309000.2|0/5000A8\n"
              "resumed|1796309000.2\n")
    assert drill.parse_counts(answer) == {"public.prayers": 1042, "public.users": 7}


INFO = [{"name": "together-pray", "db": [{"id": 1, "version": "15"}, {"id": 2, "version": "17"}],
         "backup": [{"label": "20261129-023000F", "database": {"id": 2}},
                    {"label": "20261129-023000F_20261130-023000I", "database": {"id": 2}}]}]


def test_the_drill_takes_the_newest_backup_and_the_postgresql_it_came_from():
    backup, version = drill.newest_backup(INFO)
    assert (backup["label"], version) == ("20261129-023000F_20261130-023000I", "17")


@pytest.mark.parametrize("info, message", [
    ([{"name": "together-pray", "backup": []}], "holds no backup yet"),
    ([], "holds no backup yet"),
    ([{"name": "x", "db": [], "backup": [{"label": "../etc", "database": {"id": 1}}]}],
     "not one the drill understands"),
])
def test_nothing_to_drill_is_said(info, message):
    with pytest.raises(drill.Failed, match=message):
        drill.newest_backup(info)


SETTINGS = {"stanza": "together-pray", "database": "together_pray", "owner": "together_pray",
        "peer_address": "10.0.0.5", "peer_port": 22,
            "ssh": "/usr/local/lib/vigil/pgbackrest-ssh", "scratch": "/var/lib/pgbackrest/drill/scratch",
            "result": "/var/lib/pgbackrest/drill/last.json", "lock": "/var/lib/pgbackrest/lock/vigil-drill.lock",
            "port": 5499, "lock_wait_seconds": 10, "recovery_deadline_seconds": 3600}


@pytest.mark.parametrize("change, message", [
    ({"database": "app; drop table x"}, "database 'app; drop table x' is not valid"),
    ({"stanza": "../x"}, "stanza '../x' is not valid"),
    ({"scratch": "relative/dir"}, "scratch must be an absolute path"),
    ({"port": "5499"}, "port must be a positive whole number"),
])
def test_settings_that_would_reach_sql_or_paths_unchecked_are_refused_naming_the_key(tmp_path, monkeypatch,
                                                                                      change, message):
    path = tmp_path / "drill.json"
    path.write_text(json.dumps({**SETTINGS, **change}))
    monkeypatch.setattr(drill, "CONFIG", str(path))
    with pytest.raises(drill.Failed, match=message):
        drill.load_config()


def rigged(monkeypatch, tmp_path, live: dict, restored: dict) -> dict:
    """The drill's steps with its tools answered: the live counts at the marker, the restored ones."""
    settings = {**SETTINGS, "scratch": str(tmp_path / "scratch"), "result": str(tmp_path / "last.json"),
                "lock": str(tmp_path / "lock")}
    info = json.dumps([{"name": "together-pray", "db": [{"id": 1, "version": "17"}],
                        "backup": [{"label": "20261129-023000F", "database": {"id": 1}}]}])
    monkeypatch.setattr(drill, "pgbackrest", lambda config, *args, **kw: info if "info" in args else "")
    monkeypatch.setattr(drill.os.path, "exists", lambda path: path.endswith("/bin/postgres"))
    monkeypatch.setattr(drill, "mark", lambda config, point: {"point": point, "at": 1796309000.0, "counts": live,
                                                             "writes_paused_ms": 3})
    monkeypatch.setattr(drill, "verify", lambda config, label: None)
    monkeypatch.setattr(drill, "start_scratch", lambda config, bin_dir: None)
    monkeypatch.setattr(drill, "wait_promoted", lambda config, deadline: None)
    monkeypatch.setattr(drill, "remove_scratch", lambda config, bin_dir: None)
    monkeypatch.setattr(drill.os, "makedirs", lambda *args, **kw: None)
    answer = "".join(f"{table}|{rows}\n" for table, rows in restored.items())
    monkeypatch.setattr(drill, "scratch_psql", lambda config, database, sql, check=True: type("Done", (), {
        "stdout": answer})())
    return settings


def test_a_restore_with_the_live_rows_passes_and_records_its_rto(monkeypatch, tmp_path):
    settings = rigged(monkeypatch, tmp_path, {"public.prayers": 10, "public.users": 2},
                      {"public.prayers": 10, "public.users": 2})
    result = {}
    drill.drill(settings, result)
    assert result["backup"] == "20261129-023000F" and result["verified"]
    assert (result["tables"], result["rows"]) == (2, 12)
    assert result["restore_point"].startswith("vigil-drill-") and result["rto_seconds"] >= 0


@pytest.mark.parametrize("restored, message", [
    ({"public.prayers": 9, "public.users": 2}, "public.prayers: 9 restored, 10 live"),
    ({"public.prayers": 10}, "public.users: missing restored, 2 live"),
    ({"public.prayers": 10, "public.users": 2, "public.extra": 1}, "public.extra: 1 restored, none live"),
])
def test_a_restore_whose_rows_differ_from_the_live_database_at_the_marker_fails_naming_the_table(
        monkeypatch, tmp_path, restored, message):
    settings = rigged(monkeypatch, tmp_path, {"public.prayers": 10, "public.users": 2}, restored)
    with pytest.raises(drill.Failed, match=message):
        drill.drill(settings, {})


def test_arguments_are_refused_before_anything_runs(capsys):
    assert drill.main(["--now"]) == 64
    assert "usage" in capsys.readouterr().err
