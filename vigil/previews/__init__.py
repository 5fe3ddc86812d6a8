"""Preview environments: a branch or pull request served at its own HTTPS address beside an env (staging),
with its own database copied from the env's and its own secrets, created and removed by `preview.*`."""
