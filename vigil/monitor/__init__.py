"""Monitoring from outside the hosts: Prometheus, its exporters and Alertmanager on a monitor host
(roles/monitoring), every server's exporters (roles/exporters).

textfile: the metrics vigil writes itself for the node exporter to publish (maintenance mode);
uptime: availability per service from the probes' history, against a target.
"""
