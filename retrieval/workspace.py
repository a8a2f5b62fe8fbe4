"""Workspace files worth indexing: .gitignore-aware walk that never reads secrets or leaves the root.

The rules live in one place (``WorkspaceFilter``) so the full walk, the incremental update of one
file, priming and the eval see the same set of files and the same text. Secrets are kept out twice:
by name (``SECRET_PATTERNS``: never read) and by content (a private key skips the file; a line
that holds a credential, found by :mod:`titans_lsp.retrieval.secrets`, is redacted), and the
filter counts what it redacted and skipped for the status command.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pathspec

from .secrets import redact

log = logging.getLogger(__name__)
DEFAULT_MAX_BYTES = 1_000_000

# Code and text a completion model benefits from. Data formats (json, csv) are left out on purpose:
# they are often large, generated, and they push real code out of the top-k.
INDEXED_EXTENSIONS = frozenset({
    ".py", ".pyi", ".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".java", ".kt", ".scala", ".cs", ".go",
    ".rs", ".c", ".h", ".cc", ".cpp", ".hpp", ".cxx", ".m", ".swift", ".rb", ".php", ".lua", ".sh", ".bash",
    ".md", ".rst", ".txt", ".toml", ".yaml", ".yml", ".cfg", ".sql", ".proto", ".vue", ".svelte",
})

# Directories that never hold the user's own source (caches, dependencies, VCS metadata, our state).
SKIPPED_DIRS = frozenset({
    ".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".nox", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".idea", ".vscode", ".titans-lsp", ".eggs",
})

# Files that commonly hold secrets: never indexed, whatever the ignore files say (matched on the
# lower-cased base name).
SECRET_PATTERNS = (
    ".env", ".env.*", "*.env", "*.env.*", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa*",
    "id_dsa*", "id_ecdsa*", "id_ed25519*", "*credentials*", ".netrc", ".pgpass", ".npmrc", ".pypirc", ".htpasswd",
    "secrets.*",
)
PRIVATE_KEY_MARKER = b"PRIVATE KEY-----"

# Config files import resolution reads (never indexed): package.json, tsconfig*.json, jsconfig*.json.
CONFIG_PATTERNS = ("package.json", "tsconfig*.json", "jsconfig*.json")


def is_secret_name(name: str) -> bool:
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, pattern) for pattern in SECRET_PATTERNS)


@dataclass(frozen=True)
class WorkspaceFile:
    path: Path  # absolute path inside the workspace
    rel: str  # POSIX path relative to the workspace root
    text: str


def decode_source(data: bytes) -> str:
    """UTF-8 (BOM stripped) when valid, otherwise replacement characters: never raises."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="replace")


class WorkspaceFilter:
    """The indexing rules for one workspace root: ignore files (nested), secrets, size, symlinks."""

    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, extensions: Iterable[str] | None = None):
        self.root = Path(root).resolve()
        self.max_bytes = max_bytes
        self.extensions = frozenset(extensions) if extensions is not None else INDEXED_EXTENSIONS
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}  # dir rel ("" = root) -> its .gitignore
        self.redacted: dict[str, int] = {}  # rel -> lines redacted as possible secrets (last read)
        self.skipped_secrets: set[str] = set()  # rels skipped for holding a private key

    def secrets_summary(self) -> dict[str, int]:
        """For status: how many files had lines redacted (and how many lines), and files skipped."""
        return {"redactedFiles": len(self.redacted), "redactedLines": sum(self.redacted.values()),
                "skippedFiles": len(self.skipped_secrets)}

    def clean(self, rel: str, text: str) -> str | None:
        """``text`` of ``rel`` as it may be indexed or primed: None when it holds a private key,
        else with every line that looks like a secret redacted."""
        self.redacted.pop(rel, None)
        if PRIVATE_KEY_MARKER.decode() in text:
            if rel not in self.skipped_secrets:
                log.info("%s holds a private key: not indexed", rel)
            self.skipped_secrets.add(rel)
            return None
        self.skipped_secrets.discard(rel)
        result = redact(text)
        if result.lines:
            self.redacted[rel] = result.lines
            log.info("%s: %d line(s) redacted as possible secrets (%s)", rel, result.lines, ", ".join(result.kinds))
        return result.text

    def _spec_for(self, dir_rel: str) -> pathspec.GitIgnoreSpec | None:
        if dir_rel not in self._specs:
            lines: list[str] = []
            base = self.root / dir_rel if dir_rel else self.root
            sources = [base / ".gitignore"] + ([self.root / ".git" / "info" / "exclude"] if not dir_rel else [])
            for source in sources:
                try:
                    lines += source.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError:
                    pass
            self._specs[dir_rel] = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None
        return self._specs[dir_rel]

    def is_ignored(self, rel: str, is_dir: bool = False) -> bool:
        """Git semantics: the deepest .gitignore with a matching pattern decides; a parent directory
        that is ignored hides everything below it."""
        parts = rel.split("/")
        for depth in range(1, len(parts)):  # an ignored ancestor directory excludes the path
            if self._ignored_here("/".join(parts[:depth]), True):
                return True
        return self._ignored_here(rel, is_dir)

    def _ignored_here(self, rel: str, is_dir: bool) -> bool:
        parts = rel.split("/")
        decision = None
        for depth in range(len(parts)):  # root first, deeper ignore files override
            spec = self._spec_for("/".join(parts[:depth]))
            if spec is None:
                continue
            sub = "/".join(parts[depth:]) + ("/" if is_dir else "")
            result = spec.check_file(sub)
            if result.include is not None:
                decision = result.include
        return bool(decision)

    def skip_dir(self, rel: str, name: str) -> bool:
        return name in SKIPPED_DIRS or self._ignored_here(rel, True)

    def accepts_name(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return Path(name).suffix.lower() in self.extensions and not is_secret_name(name)

    def load(self, path: str | Path, check_ignored: bool = True) -> WorkspaceFile | None:
        """The file as a WorkspaceFile, or None when the rules exclude it (or it is unreadable)."""
        path = Path(path)
        if not path.is_absolute():
            path = self.root / path
        try:
            rel = path.absolute().relative_to(self.root).as_posix()
        except ValueError:
            try:
                rel = path.resolve().relative_to(self.root).as_posix()
            except ValueError:
                return None
        if not self.accepts_name(rel) or any(part in SKIPPED_DIRS for part in rel.split("/")[:-1]):
            return None
        if check_ignored and self.is_ignored(rel):
            return None
        try:
            real = path.resolve(strict=True)
            real.relative_to(self.root)  # symlink escapes raise here
            if not real.is_file() or real.stat().st_size > self.max_bytes:
                return None
            data = real.read_bytes()
        except (OSError, ValueError, RuntimeError):
            return None
        if len(data) > self.max_bytes or b"\x00" in data[:8192]:
            return None
        text = self.clean(rel, decode_source(data))
        return None if text is None else WorkspaceFile(path=self.root / rel, rel=rel, text=text)

    def load_config(self, rel: str) -> str | None:
        """The text of a config file import resolution reads (``CONFIG_PATTERNS``), by relative path;
        None when it is absent, another kind of file, under a skipped directory (node_modules),
        ignored, too large or a link out of the workspace."""
        name = rel.rsplit("/", 1)[-1]
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in CONFIG_PATTERNS):
            return None
        if any(part in SKIPPED_DIRS or part in ("", ".", "..") for part in rel.split("/")[:-1]) or self.is_ignored(rel):
            return None
        try:
            real = (self.root / rel).resolve(strict=True)
            real.relative_to(self.root)
            if not real.is_file() or real.stat().st_size > self.max_bytes:
                return None
            return decode_source(real.read_bytes())
        except (OSError, ValueError, RuntimeError):
            return None

    def iter_rel_paths(self) -> Iterator[str]:
        """Candidate relative paths, in a deterministic order, without reading file contents."""
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dir_rel = Path(dirpath).relative_to(self.root).as_posix()
            dir_rel = "" if dir_rel == "." else dir_rel
            kept = []
            for name in sorted(dirnames):
                sub = f"{dir_rel}/{name}" if dir_rel else name
                if os.path.islink(os.path.join(dirpath, name)) or self.skip_dir(sub, name):
                    continue
                kept.append(name)
            dirnames[:] = kept
            for name in sorted(filenames):
                rel = f"{dir_rel}/{name}" if dir_rel else name
                if self.accepts_name(rel) and not self._ignored_here(rel, False):
                    yield rel


def iter_workspace_files(root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES,
                         extensions: Iterable[str] | None = None) -> Iterator[WorkspaceFile]:
    """Every file of the workspace worth indexing (see WorkspaceFilter for the rules)."""
    rules = WorkspaceFilter(root, max_bytes, extensions)
    for rel in rules.iter_rel_paths():
        loaded = rules.load(rules.root / rel, check_ignored=False)  # the walk already applied the ignore files
        if loaded is not None:
            yield loaded


def priming_order(files: Iterable) -> list:
    """Definitions before users: shallower paths first, then by name, a directory's entry files
    first (``__init__.py``, ``index.ts``, ``mod.rs``: the registry's ``index_files``), then type
    TypeScript declaration files (``.d.ts``), which hold only definitions.

    Accepts WorkspaceFile objects or relative path strings and returns them in that order.
    """
    from .ecmascript import is_declaration_file
    from .languages import INDEX_FILES

    def key(item):
        rel = item if isinstance(item, str) else item.rel
        parts = rel.split("/")
        return (len(parts), parts[:-1], parts[-1] not in INDEX_FILES, not is_declaration_file(parts[-1]), parts[-1])

    return sorted(files, key=key)
