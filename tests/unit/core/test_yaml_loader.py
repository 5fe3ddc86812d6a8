"""The one YAML loader: YAML 1.2 values, the line of every key, errors that name file, line and column, and
the cache of what a file parsed to."""

import datetime

import pytest

from vigil.core import yaml_loader
from vigil.core.errors import ConfigError
from vigil.core.yaml_loader import parse_yaml, read_yaml, yaml_value


@pytest.mark.parametrize("text, data", [
    # YAML 1.2: only true/false are booleans, so a runbook's `on:` and `state: off` stay words.
    ("on: failing\nstate: off\nenabled: true", {"on": "failing", "state": "off", "enabled": True}),
    ("yes: no", {"yes": "no"}),
    ("mode: 0o644\nhex: 0x1f\nzero: 0\nquoted: '0644'", {"mode": 420, "hex": 31, "zero": 0, "quoted": "0644"}),
    # A merge key brings the anchor's keys in; the map's own win.
    ("base: &base {port: 22, user: deploy}\nweb2: {<<: *base, port: 2222}",
     {"base": {"port": 22, "user": "deploy"}, "web2": {"port": 2222, "user": "deploy"}}),
    ("ratio: 1.5\nnothing: ~\nempty:", {"ratio": 1.5, "nothing": None, "empty": None}),
    ("script: |\n  echo one\n  echo two\n", {"script": "echo one\necho two\n"}),
    ("hosts: [web1, {db1: {port: 22}}]", {"hosts": ["web1", {"db1": {"port": 22}}]}),
    ("", None),
])
def test_values_come_back_as_plain_python_data(text, data):
    parsed = parse_yaml(text, "inventory/x.yml").data
    assert parsed == data
    # Plain types, not ruamel's style-keeping subclasses: equal values must also dump and compare plainly.
    assert repr(parsed) == repr(data)


def test_every_key_and_item_keeps_its_line():
    text = "name: disk\nsteps:\n  - check: disk\n    on: failing\n  - action: notify\n"
    document = parse_yaml(text, "runbooks/d.yml")
    assert [document.line("name"), document.line("steps"), document.line("steps", 0), document.line("steps", 0, "on"),
            document.line("steps", 1)] == [1, 2, 3, 4, 5]
    assert document.at("steps", 1) == "runbooks/d.yml:5"
    assert document.line("no", "such", "key") == 1
    merged = parse_yaml("base: &base {port: 22}\nhosts:\n  web1:\n    <<: *base\n    address: a\n", "x.yml")
    # A merged key is placed at the map that merges it.
    assert (merged.line("hosts", "web1", "address"), merged.line("hosts", "web1", "port")) == (5, 3)


@pytest.mark.parametrize("text, message", [
    ("a: 1\nb: 2\na: 3\n", r"^inventory/x.yml:3:1: YAML error: duplicate key 'a'$"),
    ("hosts:\n  web1: {}\n  web1: {}\n", r"^inventory/x.yml:3:3: YAML error: duplicate key 'web1'$"),
    ("a: [1, 2\n", r"^inventory/x.yml:2:1: YAML syntax error: "),
    ("a: b: c\n", r"^inventory/x.yml:1:5: YAML syntax error: mapping values are not allowed here"),
    ("\tkey: 1\n", r"^inventory/x.yml:1:1: YAML syntax error: "),
    # 0644 is octal to YAML 1.1 (420) and decimal to 1.2 (644): refused, not guessed.
    ("hosts:\n  web1:\n    mode: 0644\n", r'^inventory/x.yml:3: 0644 has a leading zero: quote it \("0644"\) for '
                                         r"text, or write 0o644 \(octal\) or 644 \(decimal\) for a number$"),
])
def test_errors_name_the_file_line_and_column(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_yaml(text, "inventory/x.yml")


def test_a_duplicate_key_error_does_not_show_either_value():
    with pytest.raises(ConfigError) as raised:
        parse_yaml("DATABASE_PASSWORD: hunter2-first\nDATABASE_PASSWORD: hunter2-second\n", "secrets/x.yml")
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("content, message", [
    (None, r"^inventory/missing.yml: file not found$"),
    (b"a: \xff\xfe\n", r"^inventory/missing.yml: not UTF-8 text \(byte 3\)$"),
])
def test_unreadable_files_are_named(tmp_path, content, message):
    path = tmp_path / "missing.yml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_yaml(path, "inventory/missing.yml")


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("true", True), ("on", "on"), ("[a, b]", ["a", "b"]), ("a: [", "a: ["), ("Europe/Paris", "Europe/Paris"),
])
def test_a_command_line_value_reads_as_yaml_or_stays_text(text, value):
    assert yaml_value(text) == value


# --- the parse cache --------------------------------------------------------------------------------

@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state" / "cache" / "yaml"


def test_a_file_parsed_once_is_read_from_the_cache_with_its_lines(tmp_path, state, monkeypatch):
    path = tmp_path / "staging.yml"
    path.write_text("hosts:\n  web1:\n    address: 10.0.0.5\n")
    first = read_yaml(path, "inventory/staging.yml")
    assert len(list(state.iterdir())) == 1
    # A second read parses nothing: the parser is out of reach.
    monkeypatch.setattr(yaml_loader, "parse_yaml", lambda *args: pytest.fail("parsed again"))
    again = read_yaml(path, "inventory/staging.yml")
    assert again == first and again.at("hosts", "web1", "address") == "inventory/staging.yml:3"


def test_a_changed_file_is_parsed_anew_never_answered_from_the_cache(tmp_path, state):
    path = tmp_path / "defaults.yml"
    path.write_text("nginx_port: 80\n")
    assert read_yaml(path).data == {"nginx_port": 80}
    path.write_text("nginx_port: 8080\n")
    assert read_yaml(path).data == {"nginx_port": 8080}


@pytest.mark.parametrize("text, data", [
    ("1: one\n", {1: "one"}),  # JSON would make the key "1"
    ("when: 2026-12-05\n", {"when": datetime.date(2026, 12, 5)}),  # JSON has no dates
])
def test_a_document_json_would_change_is_not_kept(tmp_path, state, text, data):
    path = tmp_path / "odd.yml"
    path.write_text(text)
    assert read_yaml(path).data == data and read_yaml(path).data == data
    assert not state.exists() or list(state.iterdir()) == []


def test_a_cache_that_cannot_be_written_costs_only_the_parse(tmp_path, monkeypatch):
    blocked = tmp_path / "file-not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("VIGIL_STATE_DIR", str(blocked))
    path = tmp_path / "play.yml"
    path.write_text("- name: onboard\n")
    assert read_yaml(path).data == [{"name": "onboard"}]
