"""Operations by subsystem: each reads facts first and plans only the difference (vigil.core.operations
is the framework).

One module per subsystem (files, apt, users, systemd, system, guarded, ufw, postgresql, nodejs), as
pyinfra keeps its operations; tests/unit/operations/cases/<module>.yml holds each plan's cases (or,
where a plan needs code to set up, tests/unit/operations/test_<module>.py).
"""
