"""Environments as a whole: a new one written from the servers a team has (`env.new`), and the preflight
before its first onboarding (`env.check`)."""
