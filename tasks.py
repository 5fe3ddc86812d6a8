"""vigil: the Together Pray ops repository. `invoke --list` shows every task."""

from invoke import Collection

from vigil.cli import audit, backup, bench, ci, deploy, env, incident, monitor, preview, provision, sandbox, vault

ns = Collection()
ns.add_collection(sandbox.ns)
ns.add_collection(env.ns)
ns.add_collection(provision.ns)
ns.add_collection(vault.ns)  # secrets.*
ns.add_collection(deploy.ns)
ns.add_collection(backup.ns)
ns.add_collection(preview.ns)
ns.add_collection(incident.ns)
ns.add_collection(monitor.ns)
ns.add_collection(ci.ns)
ns.add_collection(audit.ns)
ns.add_task(bench.bench)
