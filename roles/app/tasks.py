"""The app role: where each service's releases live on a web host, owned by the deploy user.

Deploys unpack releases there as the deploy user; the app's runtime user reads
them through its group and writes nothing there.
"""

from vigil.build import app_sources
from vigil.operations import Directory


def tasks(role, vars):
    """The app role's operations for one host, in order."""
    root = vars.path("app_root")
    deploy, app = vars.user("app_owner"), vars.user("app_group")
    services = app_sources(vars["app_services"], vars.where("app_services"))
    operations = [Directory(root, mode="0755", name=f"Ensure {root} exists.")]
    for service in services:
        for path in (f"{root}/{service}", f"{root}/{service}/releases"):
            operations.append(Directory(path, owner=deploy, group=app, mode="0750",
                                        name=f"Ensure {path} belongs to {deploy}, readable by {app}."))
    return operations
