"""Incidents: what is wrong at a glance, scripted runbooks, their records and the post-mortem.

status: one read-only question per host plus the site over HTTPS, judged by pure rules; endpoints: the
site as a visitor reaches it; logs: every host's journal merged by time; records: an incident's timeline on
this machine and its post-mortem; runbooks: runbooks as data, validated and sequenced (pure); library,
checks and actions: the runbook steps on real hosts, in explicit registries; runs: a runbook run,
recorded; snapshot: a diagnostics bundle. Maintenance mode is the deploy concern's (vigil.deploy.maintenance).
"""
