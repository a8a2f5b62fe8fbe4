"""Where titans-lsp keeps converted models, indexes and memory states.

One cache root, outside any repository: ``$TITANS_LSP_CACHE`` if set, else
``$XDG_CACHE_HOME/titans-lsp``, else ``~/.cache/titans-lsp``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache directory (not created here)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("TITANS_LSP_CACHE"):
        return Path(os.environ["TITANS_LSP_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "titans-lsp"


def workspace_cache_dir(workspace_root: str | os.PathLike, override: str | os.PathLike | None = None) -> Path:
    """Per-workspace state directory (indexes, memory states), keyed by the resolved root path."""
    resolved = str(Path(workspace_root).resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    return cache_root(override) / "workspaces" / f"{Path(resolved).name}-{digest}"


def cache_sharing_models(directory: str | os.PathLike) -> Path:
    """An empty cache dir of its own (workspace state) whose ``models/`` links to the user's cache,
    so tests and benchmarks get fresh workspace state without converting the model again."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    models = cache_root() / "models"
    models.mkdir(parents=True, exist_ok=True)
    if not (directory / "models").exists():
        (directory / "models").symlink_to(models)
    return directory
