"""Facts by subsystem: each a read-only command and a pure parser (vigil.core.facts is the framework).

One module per subsystem (files, apt, users, systemd, host, ufw, postgresql, nodejs), as pyinfra keeps
its facts; tests/unit/facts/cases/<module>.yml holds each parser's cases.
"""
