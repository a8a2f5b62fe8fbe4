"""Repository-grouped code for memory training: one repository = one directory or one PyPI package.

Files inside a repository are ordered definitions-first the way the study did it (shallower paths
first, then by path), so the memory sees a package's top-level modules before the code that uses
them. Repositories are split into train and held-out sets by repository, never by file.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import random
import subprocess
import sys
import zipfile
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".py",)
SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", "node_modules", "build", "dist", ".tox", ".eggs"}
MAX_FILE_BYTES = 200_000  # generated or vendored blobs teach the memory nothing about the repository


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


def definitions_first_key(path: str) -> tuple:
    """Shallower paths first; inside a directory ``__init__.py`` first, then by name."""
    parts = PurePosixPath(path).parts
    return (len(parts), parts[:-1], parts[-1] != "__init__.py", parts[-1])


def read_repository(root: str | os.PathLike, name: str | None = None,
                    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS) -> Repository:
    """Read the source files under ``root`` (unreadable or binary files are skipped with a log line)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.endswith(extensions):
                continue
            full = Path(dirpath) / filename
            try:
                if full.stat().st_size > MAX_FILE_BYTES:
                    continue
                text = full.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                log.info("skipping unreadable file %s: %s", full, exc)
                continue
            if text.strip():
                files.append(SourceFile(full.relative_to(root).as_posix(), text))
    files.sort(key=lambda f: definitions_first_key(f.path))
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


# ---- PyPI packages as repositories ------------------------------------------------------------

def pypi_cache_dir(cache_root: Path) -> Path:
    return cache_root / "pypi-sources"


def fetch_pypi_package(spec: str, cache_root: Path) -> Path:
    """Download one pinned package (``NAME==VERSION``) with ``pip download --no-deps`` and unpack it
    into the cache (outside any repository); returns the unpacked directory. Cached after the first call."""
    if "==" not in spec:
        raise DataError(f"{spec!r}: pin the version, e.g. {spec}==1.0.0 (training data must be reproducible)")
    name, version = (s.strip() for s in spec.split("==", 1))
    target = pypi_cache_dir(cache_root) / f"{name.lower()}-{version}"
    done = target / ".unpacked"
    if done.exists():
        return target / "src"
    downloads = pypi_cache_dir(cache_root) / "downloads" / f"{name.lower()}-{version}"
    downloads.mkdir(parents=True, exist_ok=True)
    if not any(downloads.iterdir()):
        # prefer a wheel: unpacking it needs no build step; fall back to the sdist
        for extra in (["--only-binary", ":all:"], ["--no-binary", ":all:", "--no-build-isolation"]):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(downloads), *extra, spec]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode == 0 and any(downloads.iterdir()):
                break
        else:
            raise DataError(f"pip download {spec} failed: {result.stderr.strip().splitlines()[-1:] or 'no file'}")
    archive = sorted(downloads.iterdir())[0]
    src = target / "src"
    src.mkdir(parents=True, exist_ok=True)
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(src)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(src, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot unpack {archive}: {exc}") from exc
    done.write_text(archive.name + "\n")
    return src


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
        src = fetch_pypi_package(spec, cache_root)
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
