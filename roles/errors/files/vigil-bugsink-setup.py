"""Managed by vigil (roles/errors): the admin account, the team, the project (its id and DSN key pinned,
so the app's DSN is known before Bugsink answers) and a read-only API token for vigil's status screens.

Run inside `bugsink-manage shell` as the bugsink user, with the wanted values in SETUP_FILE (root and
bugsink read it). VIGIL_BUGSINK_SETUP=check exits 1 when anything differs and changes nothing;
=apply makes it so. Passwords and tokens are never printed.
"""

import json
import os
import sys
import uuid

from bsmain.models import AuthToken
from django.contrib.auth import get_user_model
from django.db import transaction
from projects.models import Project, ProjectMembership, ProjectRole
from teams.models import Team, TeamMembership, TeamRole

SETUP_FILE = "/etc/bugsink/vigil-setup.json"
# What vigil's screens read; nothing they could change or delete.
TOKEN_RIGHTS = {"issues_read": True, "events_read": True, "releases_read": True, "projects_read": True}

with open(SETUP_FILE) as handle:
    wanted = json.load(handle)
mode = os.environ.get("VIGIL_BUGSINK_SETUP", "check")
differences = []
User = get_user_model()


def ensure_admin_of(membership, field: str, scope, role) -> None:
    """The admin account an accepted admin of `scope` (a team or a project), once both exist."""
    if scope is None or admin is None or not admin.pk:
        return
    if not membership.objects.filter(**{field: scope}, user=admin, role=role, accepted=True).exists():
        differences.append(f"admin's {field} membership")
        if mode == "apply":
            membership.objects.update_or_create(**{field: scope}, user=admin, defaults={"role": role, "accepted": True})


with transaction.atomic():
    admin = User.objects.filter(username=wanted["admin_email"]).first()
    if admin is None or not admin.is_superuser or not admin.check_password(wanted["admin_password"]):
        differences.append("admin account")
        if mode == "apply":
            admin = admin or User(username=wanted["admin_email"], email=wanted["admin_email"])
            admin.is_superuser = admin.is_staff = admin.is_active = True
            admin.set_password(wanted["admin_password"])
            admin.save()

    team = Team.objects.filter(name=wanted["team"]).first()
    if team is None:
        differences.append(f"team {wanted['team']}")
        if mode == "apply":
            team = Team.objects.create(name=wanted["team"])
    ensure_admin_of(TeamMembership, "team", team, TeamRole.ADMIN)

    key = uuid.UUID(wanted["project_key"])
    project = Project.objects.filter(id=wanted["project_id"]).first()
    if project is None or project.sentry_key != key or project.name != wanted["project"] or project.team != team:
        differences.append(f"project {wanted['project']} (id {wanted['project_id']})")
        if mode == "apply":
            project = project or Project(id=wanted["project_id"], slug=wanted["project_slug"])
            project.name, project.sentry_key, project.team = wanted["project"], key, team
            project.save()
    ensure_admin_of(ProjectMembership, "project", project, ProjectRole.ADMIN)

    tokens = AuthToken.objects.filter(description=wanted["token_description"])
    if [(token.token, *(getattr(token, right) for right in TOKEN_RIGHTS)) for token in tokens] != [
            (wanted["token"], *TOKEN_RIGHTS.values())]:
        differences.append("vigil's API token")
        if mode == "apply":
            tokens.delete()  # a replaced seed's token stops working at once
            AuthToken.objects.create(token=wanted["token"], description=wanted["token_description"], **TOKEN_RIGHTS)

print(("made: " if mode == "apply" else "differs: ") + ", ".join(differences) if differences else "in place")
sys.exit(1 if differences and mode == "check" else 0)
