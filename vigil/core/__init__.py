"""The engine: commands as data, inventory and roles, facts and operations as frameworks, connectors,
the runner, fan-out, topology and output. It imports nothing from the rest of vigil."""
