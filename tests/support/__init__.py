"""What the tests share: a loopback HTTP server, a load generator, the host programs as modules, the
sandbox driven as a person drives it, and the case-file readers for facts and operations."""
