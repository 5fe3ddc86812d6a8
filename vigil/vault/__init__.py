"""The vault: each environment's secrets, age-encrypted in git (secrets/<env>.env.age), validated by
secrets/schema.yml, pushed to the hosts as env files and never printed. `invoke secrets.*` drives it.

paths: where the files are; keys: age identities and recipients; env_files: the dotenv format;
masking: every spelling of a value the redactor must know; schema: what each key must be and where the
app's services run; store: decrypt, validate, encrypt; generate: random values; derive: values computed
per host (DATABASE_URL); push: the hosts' env files; rotation: a new value everywhere, in order; scan:
plaintext secrets in git.
(Not `vigil/secrets`: it would shadow the standard library's `secrets`, which ruff's A005 refuses.)
"""
