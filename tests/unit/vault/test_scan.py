"""Scanning for plaintext secrets in the tree and in history."""

import subprocess
from pathlib import Path

from vigil.core.paths import REPO_ROOT
from vigil.vault.scan import scan_forms, scan_repository

REPO = REPO_ROOT


# --- scanning --------------------------------------------------------------------------


def git_in(repo: Path):
    """git(*args) in `repo`, as a committer named t."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                              capture_output=True)
    return git


def test_scan_finds_values_and_tokens_in_the_tree_and_in_history(tmp_path, schema):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = git_in(repo)
    git("init", "-q")
    secret = "Kq8vN2xLr5tY7wZ1aB3cD6eF9gH0jM4p"
    (repo / "config.js").write_text(f"const jwt = '{secret}';\n")
    git("add", "."), git("commit", "-qm", "oops")
    (repo / "config.js").write_text("const jwt = process.env.JWT_SECRET;\n")
    (repo / "notes.txt").write_text("token ghp_" + "a" * 36 + "\n")
    git("add", "."), git("commit", "-qm", "fix")
    forms = scan_forms({"production": {"JWT_SECRET": secret, "NODE_ENV": "production"}}, schema)
    findings = scan_repository(repo, forms, history=True)
    whats = {(f.where.split(":")[-1] if "(history)" not in f.where else "history", f.what) for f in findings}
    assert ("history", "the value of production JWT_SECRET") in whats
    assert any(f.where.startswith("notes.txt:1") and f.what == "a GitHub token" for f in findings)
    assert not any("NODE_ENV" in f.what for f in findings)
    assert all(secret not in f.where + f.what for f in findings)
    assert scan_repository(repo, forms, history=False) == [f for f in findings if "(history)" not in f.where]


def test_scan_sees_merges_unicode_paths_and_misnamed_plaintext(tmp_path, schema):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = git_in(repo)
    secret = "Kq8vN2xLr5tY7wZ1aB3cD6eF9gH0jM4p"
    git("init", "-q", "-b", "main")
    (repo / "a.txt").write_text("base\n")
    git("add", "."), git("commit", "-qm", "base")
    git("checkout", "-qb", "side")
    (repo / "b.txt").write_text("side\n")
    git("add", "."), git("commit", "-qm", "side")
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "--no-commit", "side")
    (repo / "café.md").write_text(f"pasted {secret}\n")  # added only in the merge commit
    git("add", "."), git("commit", "-qm", "merge")
    git("rm", "-q", "café.md"), git("commit", "-qm", "remove")
    (repo / "production.env.age").write_text(f"JWT_SECRET={secret}\n")  # plaintext despite its name
    forms = scan_forms({"production": {"JWT_SECRET": secret}}, schema)
    findings = scan_repository(repo, forms, history=True)
    assert any("café.md (history)" in f.where for f in findings)
    assert any(f.where.startswith("production.env.age:1") for f in findings)
