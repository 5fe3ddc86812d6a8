"""Audits: the security and the performance checklists, run against the live hosts, one line per item
with pass or fail and its evidence. Each host answers one read-only question; the site is asked from
this machine as a visitor would; every verdict is a pure function of the answers.

checklist: the Item a line is; security: `audit.security`; performance: `audit.performance`.
"""
