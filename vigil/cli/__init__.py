"""The Invoke task collections, one module per concern: each task parses its flags, calls the concern's
functions and reports through vigil.core.output. tasks.py at the top composes them."""
