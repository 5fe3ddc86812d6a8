"""What the tests share: a loopback HTTP server (loopback), a load generator (load), the host programs as
modules (scripts), the sandbox driven as a person drives it (sandbox_hosts), inventories written for a
test (inventories), and the case-file readers for facts and operations (cases)."""
