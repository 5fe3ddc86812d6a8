"""Incidents: what is wrong at a glance, scripted runbooks, their records and the post-mortem.

- services: the services an incident names and the hosts that run them (through the topology);
- status, host_status, status_rules: one read-only question per host (host_status), judged by pure
  rules (status_rules), plus the site over HTTPS (endpoints: the site as a visitor reaches it);
- logs: every host's journal merged by time; snapshot: a diagnostics bundle;
- records: an incident's timeline on this machine, and its post-mortem;
- runbooks: runbooks as data, validated and sequenced (pure); engine: the run of one, on any library;
- hosts, library, checks, actions: the runbook steps on an env's real hosts, in explicit registries
  (checks.CHECKS, actions.ACTIONS); runs: a runbook run, recorded.
Maintenance mode is the deploy concern's (vigil.deploy.maintenance).
"""
