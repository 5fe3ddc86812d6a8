"""Scanning: plaintext secrets in the working tree and git history, by known value and by token shape.
Findings name where and what kind, never the value."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vigil.vault.masking import forms_of, password_forms
from vigil.vault.paths import SecretsError, child_environment
from vigil.vault.schema import Schema

AGE_HEADER = b"age-encryption.org/v1\n"
TOKEN_PATTERNS = {
    "an age private key": re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{58}"),
    "a private key block": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "a GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    "a GitLab token": re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "a Slack token": re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    "a Slack webhook": re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/]{20,}"),
    "a Stripe key": re.compile(r"\b[sr]k_(?:live|test)_[0-9a-zA-Z]{24,}"),
    "an OpenAI key": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}"),
    "a JSON Web Token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}
# Values this short are ordinary words; scanning for them would only cry wolf.
SCAN_MIN_LENGTH = 12


@dataclass(frozen=True)
class Finding:
    """A leak: where (path:line, and the commit for history) and what kind; never the value."""

    where: str
    what: str


def scan_text(text: str, where: str, forms: dict[str, str]) -> list[Finding]:
    """Findings in one text: known secret values ({spelling: 'env KEY'}) and token patterns, by line."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for form, label in forms.items():
            if form in line:
                found.append(Finding(f"{where}:{number}", f"the value of {label}"))
        for what, pattern in TOKEN_PATTERNS.items():
            if pattern.search(line):
                found.append(Finding(f"{where}:{number}", what))
    return found


def scan_forms(values_by_env: dict[str, dict[str, str]], schema: Schema) -> dict[str, str]:
    """{spelling: 'env KEY'} of every secret value worth scanning for."""
    forms = {}
    for env, values in values_by_env.items():
        for key, value in values.items():
            rule = schema.keys.get(key)
            spellings = forms_of(value) if rule is None or rule.secret else password_forms(value)
            for form in spellings:
                if len(form) >= SCAN_MIN_LENGTH:
                    forms[form] = f"{env} {key}"
    return forms


def scan_repository(repo: Path, forms: dict[str, str], history: bool) -> list[Finding]:
    """Plaintext secrets and token patterns in the working tree and, with `history`, every commit's additions."""
    findings: list[Finding] = []
    git = ["git", "-c", "core.quotePath=false"]
    listing = subprocess.run([*git, "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True,
                             env=child_environment())
    if listing.returncode != 0:
        raise SecretsError(f"secrets.scan: {repo} is not a git work tree")
    listed = listing.stdout.decode().split("\0")
    for name in filter(None, listed):
        path = repo / name
        if not path.is_file() or path.stat().st_size > 1_000_000:
            continue
        data = path.read_bytes()
        if data.startswith(AGE_HEADER) or b"\0" in data:
            continue  # really encrypted (whatever its name), or binary
        findings += scan_text(data.decode(errors="replace"), name, forms)
    if history:
        # Merges too (first-parent diff); encrypted files show as "Binary files differ".
        log = subprocess.run(
            [
                *git,
                "log",
                "--all",
                "-p",
                "--diff-merges=first-parent",
                "--no-color",
                "--no-ext-diff",
                "-U0",
                "--format=@@commit %h",
            ],
            cwd=repo,
            capture_output=True,
            check=True,
            env=child_environment(),
        ).stdout.decode(errors="replace")
        commit, path = "", ""
        for line in log.splitlines():
            if line.startswith("@@commit "):
                commit = line.split()[1]
            elif line.startswith("+++ "):
                path = line[6:] if line.startswith("+++ b/") else line[4:]
            elif line.startswith("+") and not line.startswith("+++"):
                for finding in scan_text(line[1:], f"{commit}:{path}", forms):
                    findings.append(Finding(finding.where.rsplit(":", 1)[0] + " (history)", finding.what))
    return sorted(set(findings), key=lambda f: (f.where, f.what))
