"""secrets.rotate keeping the value it replaces: a key with previous: in the schema keeps the old value and
the time up to which the app accepts what it signed, so a rotation of JWT_SECRET logs nobody out."""

from datetime import datetime, timezone

import pytest

from vigil.vault.paths import SecretsError
from vigil.vault.rotation import kept_previous
from vigil.vault.schema import KeyRule, Previous, load_schema

NOW = datetime(2026, 12, 5, 22, 0, 0, tzinfo=timezone.utc)
WITH_PREVIOUS = KeyRule("JWT_SECRET", ["backend"], previous=Previous("JWT_SECRET_PREVIOUS", "JWT_SECRET_PREVIOUS_UNTIL",
                                                                       900))
WITHOUT = KeyRule("JWT_REFRESH_SECRET", ["backend"])


@pytest.mark.parametrize(("rule", "values", "grace", "kept"), [
    (WITH_PREVIOUS, {"JWT_SECRET": "old"}, None,
     {"JWT_SECRET_PREVIOUS": "old", "JWT_SECRET_PREVIOUS_UNTIL": "2026-12-05T22:15:00Z"}),
    (WITH_PREVIOUS, {"JWT_SECRET": "old"}, 30,
     {"JWT_SECRET_PREVIOUS": "old", "JWT_SECRET_PREVIOUS_UNTIL": "2026-12-05T22:00:30Z"}),
    # After a leak: the old value is kept, already expired, so nothing it signed is accepted.
    (WITH_PREVIOUS, {"JWT_SECRET": "old"}, 0,
     {"JWT_SECRET_PREVIOUS": "old", "JWT_SECRET_PREVIOUS_UNTIL": "2026-12-05T22:00:00Z"}),
    # Rotated again: the value before is replaced, not kept twice.
    (WITH_PREVIOUS, {"JWT_SECRET": "second", "JWT_SECRET_PREVIOUS": "first"}, None,
     {"JWT_SECRET_PREVIOUS": "second", "JWT_SECRET_PREVIOUS_UNTIL": "2026-12-05T22:15:00Z"}),
    (WITH_PREVIOUS, {}, None, {}),  # the first value: nothing to keep
    (WITHOUT, {"JWT_REFRESH_SECRET": "old"}, None, {}),
])
def test_a_rotation_keeps_the_replaced_value_for_its_grace(rule, values, grace, kept):
    assert kept_previous(rule, values, grace, NOW) == kept


@pytest.mark.parametrize(("rule", "grace", "message"), [
    (WITHOUT, 60, "--grace: JWT_REFRESH_SECRET keeps no previous value"),
    (WITH_PREVIOUS, -1, "--grace: expected seconds, 0 or more"),
])
def test_a_grace_that_cannot_apply_is_refused(rule, grace, message):
    with pytest.raises(SecretsError, match=message):
        kept_previous(rule, {rule.key: "old"}, grace, NOW)


def test_the_schema_keeps_jwt_secrets_previous_value_for_an_access_tokens_life():
    previous = load_schema().keys["JWT_SECRET"].previous
    assert previous == Previous("JWT_SECRET_PREVIOUS", "JWT_SECRET_PREVIOUS_UNTIL", 900)


BASE = "app: {user: tp, config_dir: /etc/tp}\nservices: {api: {hosts: web}}\nkeys:\n"
KEPT = "  P: {services: [api], required: false}\n  U: {services: [api], required: false, secret: false}\n"


@pytest.mark.parametrize(("keys", "message"), [
    ("  S: {services: [api], previous: P}\n" + KEPT, "keys.S.previous: expected {key: KEY, until: KEY"),
    ("  S: {services: [api], previous: {key: P, until: U}}\n" + KEPT, "keys.S.previous: expected"),
    ("  S: {services: [api], previous: {key: P, until: U, grace_seconds: -5}}\n" + KEPT, "keys.S.previous: expected"),
    ("  S: {services: [api], previous: {key: P, until: U, grace_seconds: true}}\n" + KEPT,
     "keys.S.previous: expected"),
    ("  S: {services: [api], previous: {key: Q, until: U, grace_seconds: 60}}\n" + KEPT,
     "keys.S.previous: unknown key 'Q'"),
    ("  S: {services: [api], previous: {key: P, until: U, grace_seconds: 60}}\n"
     "  P: {services: [api]}\n  U: {services: [api], required: false, secret: false}\n",
     "keys.S.previous: P must be required: false"),
    ("  S: {services: [api], previous: {key: P, until: U, grace_seconds: 60}}\n"
     "  P: {services: [api], required: false}\n  U: {services: [api], required: false}\n",
     "keys.S.previous: U must be secret: false"),
])
def test_a_previous_rule_that_cannot_work_names_its_key(paths, keys, message):
    paths.schema.write_text(BASE + keys)
    with pytest.raises(SecretsError, match=message.replace("{", r"\{")):
        load_schema(paths)
