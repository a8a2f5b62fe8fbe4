"""Repository-grouped code for memory training: one repository = one directory or one PyPI package.

Files are read and ordered by the server's own rules (retrieval/workspace.py: ignore files, secrets,
definitions first: shallower paths first, ``__init__`` first), so the memory sees a package's
top-level modules before the code that uses them, exactly as a primed workspace would. Repositories are split into train and held-out sets by repository, never by file.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from titans_lsp.retrieval.packages import PackageError, fetch_pypi

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".py",)


class DataError(RuntimeError):
    """Unusable training data (nothing readable, a failed download). The CLI turns it into a UserError."""


@dataclass
class SourceFile:
    path: str  # relative to the repository root, POSIX separators
    text: str


@dataclass
class Repository:
    name: str
    files: list[SourceFile] = field(default_factory=list)
    source: str = ""  # how to get it again: a directory path or a pinned PyPI spec

    @property
    def num_chars(self) -> int:
        return sum(len(f.text) for f in self.files)


def read_repository(root: str | os.PathLike, name: str | None = None,
                    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS) -> Repository:
    """Read the repository's source files by the server's workspace rules (ignore files, secrets,
    size, binaries: :mod:`titans_lsp.retrieval.workspace`), in the server's priming order, so
    training primes the memory with what a workspace would give it and in the same order."""
    from titans_lsp.retrieval.workspace import iter_workspace_files, priming_order

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    ordered = priming_order(iter_workspace_files(root, extensions=set(extensions)))
    files = [SourceFile(f.rel, f.text) for f in ordered if f.text.strip()]
    return Repository(name or root.name, files, str(root.resolve()))


def module_names(path: str) -> set[str]:
    """Dotted module names a file can be imported as (every suffix of its path, e.g. ``pkg.sub.mod``
    and ``sub.mod``), so imports resolve whether or not the repository has a ``src/`` layout."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return {".".join(parts[i:]) for i in range(len(parts))} - {""}


def imported_modules(text: str) -> set[str]:
    """Absolute dotted names a Python file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import is intra-repository by definition
                names.add("." * node.level + (node.module or ""))
            elif node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def has_intra_repo_imports(repo: Repository) -> bool:
    """True when some file imports another module of the same repository."""
    own = set()
    for f in repo.files:
        if f.path.endswith(".py"):
            own |= module_names(f.path)
    for f in repo.files:
        if not f.path.endswith(".py"):
            continue
        mine = module_names(f.path)
        for name in imported_modules(f.text):
            if name.startswith(".") or (name in own and name not in mine):
                return True
    return False


# ---- loading and splitting ----------------------------------------------------------------------

def load_repositories(data_dirs: list[str] | None = None, pypi: list[str] | None = None, cache_root: Path | None = None,
                      extensions: tuple[str, ...] = DEFAULT_EXTENSIONS, require_intra_imports: bool = False,
                      min_files: int = 2) -> list[Repository]:
    """Every data directory and every pinned PyPI package becomes one repository.

    Repositories with fewer than ``min_files`` source files are dropped (the memory has nothing to carry
    from one file to the next); with ``require_intra_imports`` so are those whose files never import each other.
    Raises DataError when nothing usable is left, naming why.
    """
    repos = []
    for d in data_dirs or []:
        repos.append(read_repository(d, extensions=extensions))
    for spec in pypi or []:
        if cache_root is None:
            raise DataError("a cache directory is needed to download PyPI packages")
        try:
            src = fetch_pypi(spec, cache_root)
        except PackageError as exc:
            raise DataError(str(exc)) from exc
        repo = read_repository(src, name=spec, extensions=extensions)
        repo.source = f"pypi:{spec}"
        repos.append(repo)
    if not repos:
        raise DataError("no training data given: pass --data DIR ... or --pypi NAME==VERSION ...")
    kept, dropped = [], []
    for repo in repos:
        if len(repo.files) < min_files:
            dropped.append(f"{repo.name} ({len(repo.files)} readable {'/'.join(extensions)} files)")
        elif require_intra_imports and not has_intra_repo_imports(repo):
            dropped.append(f"{repo.name} (no intra-repository imports)")
        else:
            kept.append(repo)
    for reason in dropped:
        log.warning("dropping repository %s", reason)
    if not kept:
        raise DataError("no usable repository: " + "; ".join(dropped))
    return kept


def load_sources(sources: list[str], cache_root: Path | None, extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
                 min_files: int = 2) -> list[Repository]:
    """Repositories from ``Repository.source`` strings (``pypi:NAME==VERSION`` or a directory), e.g. a run's held-out set."""
    dirs = [s for s in sources if not s.startswith("pypi:")]
    specs = [s[len("pypi:"):] for s in sources if s.startswith("pypi:")]
    return load_repositories(dirs, specs, cache_root, extensions, min_files=min_files)


def split_repositories(repos: list[Repository], heldout: float | int, seed: int) -> tuple[list[Repository], list[Repository]]:
    """Held-out split by repository: ``heldout`` is a fraction (< 1) or a count. Deterministic in ``seed``
    and independent of the order the repositories were given in."""
    ordered = sorted(repos, key=lambda r: hashlib.sha256(f"{seed}:{r.name}".encode()).hexdigest())
    n = int(round(heldout * len(repos))) if heldout < 1 else int(heldout)
    if heldout > 0 and len(repos) > 1:
        n = max(1, n)
    n = min(n, len(repos) - 1)
    return ordered[n:], ordered[:n]


def tokenize_repository(repo: Repository, tokenizer, max_tokens: int, max_files: int | None = None,
                        add_path_header: bool = True) -> list[list[int]]:
    """Token ids of the repository's files (truncated to ``max_tokens``, at most ``max_files`` files),
    each starting with a ``# path`` comment line so the model knows which file it is reading."""
    out = []
    for f in repo.files[:max_files]:
        text = f"# {f.path}\n{f.text}" if add_path_header else f.text
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        if len(ids) >= 2:
            out.append(ids)
    return out


def shuffled(items: list, seed: int) -> list:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items
