"""The one YAML loader for everything vigil reads: inventories, role defaults, playbooks, the secrets
schema and runbooks.

ruamel.yaml, YAML 1.2: only `true` and `false` are booleans, so a runbook's `on:` and `state: on` stay
words; `0644`, octal to YAML 1.1 and decimal to 1.2, is refused rather than guessed. A key given twice
is an error, where PyYAML keeps the last silently. Every error names the file, line and column; every
value comes back as plain Python data (dict, list, str, int, float, bool, None), and the line of each
key or item is kept beside it; a key merged in (`<<: *anchor`) has the line of the map merging it.

ruamel's round-trip parser is pure Python, and a task reads twenty or more files (every role's defaults,
the inventory, the schema) before it asks a host anything; so what `read_yaml` parsed once is kept as
JSON under .vigil/cache/yaml/, named by the SHA-256 of the file's text: a changed file is a new name,
never a stale answer. Files only (they are on disk already; nothing given as text is kept), and only a
document JSON holds exactly (string keys; no dates) is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.core.errors import ConfigError
from vigil.core.paths import LocalState, rel

DUPLICATE_KEY = re.compile(r'found duplicate key "(.*)" with value')
# Part of every cache entry's name: a change to what parsing returns must change it.
CACHE_FORMAT = "1"


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: its data, and the line where each key or item of it stands.

    where: how errors name the file. A path is the keys and indexes leading to a value.
    Example: document.line("steps", 0, "on") -> the line of the first step's `on:` key
    """

    data: Any
    where: str
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)

    def line(self, *path) -> int:
        """The line (1-based) of the key or item at `path`; the document's first line for the root."""
        return self.lines.get(tuple(path), 1)

    def at(self, *path) -> str:
        """`file:line` of the key or item at `path`, for an error message."""
        return f"{self.where}:{self.line(*path)}"


def _plain(node: Any, path: tuple, lines: dict[tuple, int], where: str) -> Any:
    """ruamel's round-trip objects as plain Python data, recording each key's and item's line."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq  # noqa: PLC0415 (as in parse_yaml)

    if isinstance(node, CommentedMap):
        plain = {}
        for key, value in node.items():
            key = _scalar(key, where, lines.get(path, 1))
            # A key merged in (`<<: *defaults`) stands where the merge does: the map's own line.
            position = node.lc.data.get(key)
            lines[path + (key,)] = position[0] + 1 if position else lines.get(path, 1)
            plain[key] = _plain(value, path + (key,), lines, where)
        return plain
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            lines[path + (index,)] = node.lc.item(index)[0] + 1
            items.append(_plain(value, path + (index,), lines, where))
        return items
    return _scalar(node, where, lines.get(path, 1))


def _scalar(value: Any, where: str, line: int) -> Any:
    from ruamel.yaml.scalarint import ScalarInt  # noqa: PLC0415 (as in parse_yaml)

    # YAML 1.1 (PyYAML, Ansible) read 0644 as octal 420, YAML 1.2 as decimal 644: refuse the guess.
    if type(value) is ScalarInt and (value._width or 0) > len(str(abs(int(value)))):
        written = f"{int(value):0{value._width}d}"
        raise ConfigError(f"{where}:{line}: {written} has a leading zero: quote it (\"{written}\") for text, or "
                          f"write 0o{written.lstrip('0') or '0'} (octal) or {int(value)} (decimal) for a number")
    # ruamel keeps a literal block or a hex number as a subclass that remembers its style.
    for plain_type in (bool, int, float, str):
        if isinstance(value, plain_type):
            return plain_type(value)
    return value


def parse_yaml(text: str, where: str) -> YamlDocument:
    """Parse YAML `text`; `where` names it in errors ("inventory/staging.yml").

    Example: parse_yaml("hosts: {web1: {address: 10.0.0.5}}", "inventory/staging.yml").data["hosts"]
    """
    # ruamel on first use: a run whose files are all in the cache (read_yaml) never parses one.
    from ruamel.yaml import YAML  # noqa: PLC0415
    from ruamel.yaml.constructor import DuplicateKeyError  # noqa: PLC0415
    from ruamel.yaml.error import MarkedYAMLError, YAMLError  # noqa: PLC0415

    loader = YAML(typ="rt", pure=True)
    try:
        raw = loader.load(text)
    except DuplicateKeyError as error:
        mark = error.problem_mark
        key = DUPLICATE_KEY.search(error.problem or "")
        # The error's own text quotes both values: a pasted secret must not reach the screen.
        raise ConfigError(
            f"{where}:{mark.line + 1}:{mark.column + 1}: YAML error: duplicate key {key.group(1)!r}"
            if key
            else f"{where}:{mark.line + 1}: YAML error: a key is given twice"
        ) from None
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        location = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise ConfigError(f"{location}: YAML syntax error: {error.problem or error}") from None
    except YAMLError as error:
        raise ConfigError(f"{where}: YAML error: {error}") from None
    lines: dict[tuple, int] = {}
    return YamlDocument(_plain(raw, (), lines, where), where, lines)


def read_yaml(path: Path, where: str | None = None) -> YamlDocument:
    """Read and parse a YAML file; `where` names it in errors (default: its path in the repository)."""
    where = where or rel(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot read: {error.strerror or error}") from None
    cached = _cache_path(text)
    try:
        kept = json.loads(cached.read_text())
        return YamlDocument(kept["data"], where, {tuple(path): line for path, line in kept["lines"]})
    except (OSError, ValueError, KeyError, TypeError):
        pass
    document = parse_yaml(text, where)
    _keep(cached, document)
    return document


def _cache_path(text: str) -> Path:
    digest = hashlib.sha256(f"{CACHE_FORMAT}\0{text}".encode()).hexdigest()
    return LocalState.default().root / "cache" / "yaml" / f"{digest}.json"


def _json_exact(value: Any) -> bool:
    """Whether JSON gives `value` back as it is (it turns an int key into a string, a date into an error)."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and _json_exact(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_json_exact(item) for item in value)
    return value is None or type(value) in (str, int, float, bool)


def _keep(cached: Path, document: YamlDocument) -> None:
    """The parsed document written beside the others, whole or not at all; a cache that cannot be written
    (a read-only checkout) only costs the next run its parse."""
    if not _json_exact(document.data) or not all(_json_exact(list(path)) for path in document.lines):
        return
    text = json.dumps({"data": document.data, "lines": [[list(path), line] for path, line in document.lines.items()]})
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        temporary.write_text(text)
        os.replace(temporary, cached)
    except OSError:
        pass


def load_yaml(path: Path) -> Any:
    """The data of a YAML file (read_yaml without the lines).

    Example: load_yaml(REPO_ROOT / "playbooks" / "onboard.yml")[0]["roles"]
    """
    return read_yaml(path).data


def yaml_value(text: str) -> Any:
    """A value given on the command line (`--var key=value`), read as YAML 1.2: `true` is a boolean,
    `3` a number, `[a, b]` a list; text that is not valid YAML stays the text.

    Example: yaml_value("3") -> 3; yaml_value("on") -> "on"
    """
    try:
        return parse_yaml(text, "--var").data
    except ConfigError:
        return text
