"""vigil: the engine behind Together Pray's ops repository.

Layers, each importing only those below it (pyproject.toml's import contract checks this):
vigil.cli (Invoke tasks) > the concerns (audit, ci, incident, backup, deploy, vault, sandbox)
> vigil.operations > vigil.facts > vigil.core. docs/architecture.md says where each kind of change goes.
"""
