"""roles/previews: on the preview hosts only, and only when previews have a domain: the capped unit each
preview is an instance of, its migrations against its own database, the shared rate limit."""

import pytest

from tests.support.inventories import layout
from vigil.core.errors import ConfigError
from vigil.core.roles import load_role

ROLES = ("app", "nginx", "previews")


def planned(groups: dict, host: str = "web1", **overrides) -> dict:
    inventory = layout(groups)
    roles = [load_role(name) for name in ROLES]
    settings = {"previews_domain": "preview.together-pray.test", "nginx_tls": "certbot", **overrides}
    vars = inventory.vars_for(inventory.hosts[host], roles, settings)
    role = roles[-1]
    return {getattr(op, "path", ""): op for op in role.tasks(role, vars)}


def test_each_previews_units_are_capped_hardened_and_read_its_own_files():
    files = planned({"web": ["web1"], "db": ["web1"]}, previews_memory_max="256M", previews_cpu_quota="25%")
    backend = files["/etc/systemd/system/together-pray-preview-backend@.service"].content.decode()
    for line in ("MemoryMax=256M", "CPUQuota=25%", "User=together-pray", "ProtectSystem=strict",
                 "WorkingDirectory=/srv/together-pray/previews/%i/backend/current",
                 "EnvironmentFile=/etc/together-pray/previews/%i/backend.env", "ExecStart=/usr/bin/node dist/main.js"):
        assert line in backend.splitlines(), line
    frontend = files["/etc/systemd/system/together-pray-preview-frontend@.service"].content.decode()
    assert "ExecStart=/usr/bin/node server.js" in frontend
    migrate = files["/etc/systemd/system/together-pray-preview-migrate@.service"].content.decode()
    assert "EnvironmentFile=/etc/together-pray/previews/%i/backend.env" in migrate.splitlines()
    assert "ExecStart=/usr/bin/node node_modules/typeorm/cli.js migration:run -d dist/data-source.js" in migrate
    limits = files["/etc/nginx/conf.d/together-pray-previews.conf"].content.decode()
    assert "zone=together_pray_previews:10m rate=10r/s;" in limits
    assert files["/var/lib/vigil/previews"].mode == "0700"


@pytest.mark.parametrize("groups, host, overrides", [
    ({"web": ["web1"], "db": ["web1"]}, "web1", {"previews_domain": ""}),  # previews off
    ({"web": ["web1", "web2"], "db": ["web1"], "preview": ["web2"]}, "web1", {}),  # another host runs them
    ({"web": ["web1"], "db": ["db1"]}, "db1", {}),  # not a web host
])
def test_nothing_is_installed_where_no_preview_runs(groups, host, overrides):
    assert planned(groups, host, **overrides) == {}


@pytest.mark.parametrize("groups, host, overrides, message", [
    ({"web": ["web1"], "db": ["web1"], "preview": ["box1"]}, "box1", {}, "box1: in group preview but not in web"),
    ({"web": ["web1"], "db": ["web1"]}, "web1", {"previews_port_base": 65530}, "would pass 65535"),
    ({"web": ["web1"], "db": ["web1"]}, "web1", {"previews_domain": "Preview_Domain"}, "previews_domain"),
    ({"web": ["web1"], "db": ["web1"]}, "web1", {"previews_memory_max": "lots"}, "previews_memory_max"),
])
def test_bad_settings_are_refused_naming_the_host_or_key(groups, host, overrides, message):
    with pytest.raises(ConfigError, match=message):
        planned(groups, host, **overrides)
