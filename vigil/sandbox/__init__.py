"""Sandbox VPSes: real systemd Debian 13 servers booted on this machine.

Each VPS is a systemd-nspawn container with its own network namespace, its own
cgroup (cgroups: as a machine's scope, so a unit on one VPS is not the same unit's
cgroup on another), a veth pair to the host, a /30 from 10.213.0.0/16, NAT out of the host's uplink,
a writable overlayfs on a cached debootstrap image, and a real sshd whose
freshly generated host key is pinned in inventory/sandbox.known_hosts.

The package is split the way the rest of vigil is:

- paths: every name, address and path, derived from a VPS's index;
- plan: pure planners that return argv lists or rendered text and do no I/O (unit tested);
- facts: readers that run one read-only command or read /proc, and parse it;
- apply: the steps that change this machine, through `run_command` (local_commands),
  except the long-running nspawn and debootstrap processes it starts and watches itself;
- lifecycle: `up`, `down`, `status`: read facts, plan the difference, then apply it;
- ca: the sandbox's own certificate authority, for real HTTPS;
- cgroups: each VPS's own cgroup, made before its nspawn starts and removed at `down`.

Everything vigil creates on the host is named so it can be found again after
a killed run: netns `vigil-vpsN`, links `vgl-vpsN` (`vgv-vpsN` before the peer
moves into its namespace), iptables rules commented `vigil-sandbox`, cgroups
`vigil-sandbox/vpsN`, mounts and directories under /var/lib/vigil/sandbox.
"""
