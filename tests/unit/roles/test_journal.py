"""roles/journal: each host's journal shipped to the monitor host over TLS from the env's private CA,
and the firewall rule that lets only the env's hosts reach it."""

from __future__ import annotations

import subprocess

import pytest
from cryptography import x509

from tests.support.inventories import layout
from vigil.core.playbook import build_host_plans

GROUPS = {"web": ["web1", "web2"], "db": ["db1"], "monitor": ["mon1"]}
SEED = "journal-seed-" + "s" * 40


def plan(host: str, groups=None, secrets=None, roles=("journal",)):
    values = {"MONITORING_TLS_SEED": SEED} if secrets is None else secrets
    return build_host_plans(layout(groups or GROUPS), "onboard", host, {}, lambda: values, only_roles=list(roles))[0]


def content(operations, path: str) -> str:
    return next(op.content.decode() for op in operations if getattr(op, "path", "") == path)


def test_each_host_uploads_to_the_monitor_hosts_private_address_with_its_own_certificate(tmp_path):
    operations = plan("web2").operations
    drop_in = content(operations, "/etc/systemd/journal-upload.conf.d/vigil.conf")
    # It posts to the monitor host only once that host's certificate checks out against the env's CA.
    assert "URL=https://203.0.113.4:19532\n" in drop_in
    assert "TrustedCertificateFile=/etc/ssl/vigil-journal/ca.crt\n" in drop_in
    certificate = x509.load_pem_x509_certificate(content(operations, "/etc/ssl/vigil-journal/web2.crt").encode())
    assert certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "web2"
    key = next(op for op in operations if getattr(op, "path", "") == "/etc/ssl/vigil-journal/web2.key")
    assert (key.owner, key.mode, key.secret) == ("systemd-journal-upload", "0600", True)
    # The CA the monitor host trusts signed it.
    (tmp_path / "ca.crt").write_text(content(operations, "/etc/ssl/vigil-journal/ca.crt"))
    (tmp_path / "web2.crt").write_text(content(operations, "/etc/ssl/vigil-journal/web2.crt"))
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "web2.crt")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_an_upload_keeps_retrying_while_the_monitor_host_is_away():
    drop_in = content(plan("web1").operations, "/etc/systemd/system/systemd-journal-upload.service.d/vigil.conf")
    assert "[Unit]\nStartLimitIntervalSec=0\n" in drop_in


def test_the_monitor_host_receives_one_file_per_host_on_a_bounded_share_of_its_disk():
    operations = plan("mon1").operations
    drop_in = content(operations, "/etc/systemd/journal-remote.conf.d/vigil.conf")
    assert "SplitMode=host\n" in drop_in and "MaxUse=4G\n" in drop_in and "KeepFree=1G\n" in drop_in
    server = x509.load_pem_x509_certificate(content(operations, "/etc/ssl/vigil-journal/mon1.crt").encode())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(address) for address in names.get_values_for_type(x509.IPAddress)] == ["203.0.113.4"]
    assert any(getattr(op, "unit", "") == "systemd-journal-remote.socket" for op in operations)


def test_a_change_to_the_receiver_restarts_its_socket_with_the_service_stopped_first():
    host = plan("mon1")
    restart = host.handlers["restart systemd-journal-remote"]
    commands = [command.display() for command in restart.plan({}).commands]
    # One systemctl call stops both, the service before its socket; only then is the port listened on again.
    assert commands[0] == "systemctl stop systemd-journal-remote.socket systemd-journal-remote.service"
    assert commands[1].endswith(" start systemd-journal-remote.socket")
    # Its certificate, its settings and its port each take effect only through that restart.
    notifying = {op.path for op in host.operations if "restart systemd-journal-remote" in op.notify}
    assert notifying == {"/etc/ssl/vigil-journal/ca.crt", "/etc/ssl/vigil-journal/mon1.crt",
                         "/etc/ssl/vigil-journal/mon1.key", "/etc/systemd/journal-remote.conf.d/vigil.conf",
                         "/etc/systemd/system/systemd-journal-remote.socket.d/vigil.conf"}


def test_the_same_seed_gives_the_same_bytes_so_a_second_run_changes_nothing():
    first, second = plan("web1").operations, plan("web1").operations
    assert [getattr(op, "content", None) for op in first] == [getattr(op, "content", None) for op in second]
    other = plan("web1", secrets={"MONITORING_TLS_SEED": "another-seed-" + "x" * 40}).operations
    assert content(other, "/etc/ssl/vigil-journal/ca.crt") != content(first, "/etc/ssl/vigil-journal/ca.crt")


def test_without_a_monitor_host_nothing_and_without_the_seed_the_host_is_refused_naming_it():
    assert plan("web1", groups={"web": ["web1"], "db": ["web1"]}).operations == []
    refused = plan("web1", secrets={})
    assert refused.refused is not None and "MONITORING_TLS_SEED" in refused.refused.reason


@pytest.mark.parametrize("host, opened", [
    ("mon1", {"19532/tcp from 203.0.113.1", "19532/tcp from 203.0.113.2", "19532/tcp from 203.0.113.3"}),
    ("web1", set()),
])
def test_only_the_envs_hosts_reach_the_journal_port(host, opened):
    operations = plan(host, roles=("firewall",)).operations
    rules = next(op.rules for op in operations if type(op).__name__ == "Firewall")
    found = {f"19532/tcp from {rule.split()[2]}" for rule in rules if "port 19532" in rule}
    assert found == opened
