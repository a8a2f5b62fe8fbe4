"""Per workspace-folder state: settings, the snippet index, the memory and what was primed.

Shared by the language server and ``titans-lsp prime``, so priming ahead of time and priming in the
editor write the same files in the same per-workspace state directory
(``titans_lsp.paths.workspace_cache_dir``) and a restart resumes from them:

  index.json, index.npz       the retrieval index, JSON + numpy arrays (never pickle; owned by
  dense-*.npz                 titans_lsp.retrieval.index), checked field by field when loaded
  memory-<tag>.safetensors    the memory state for one model + memory checkpoint (<tag>); loaded only
                              when its shapes, dtypes and values fit the live model
  primed-<tag>.json           {relative path: mtime_ns} of the files written into that memory

The priming loop that fills the memory is :mod:`titans_lsp.priming`. Nothing here knows about LSP;
indexing reports through a ``progress(done, total)`` callback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from titans_lsp.engine import CompletionEngine, CompletionSettings, Workspace
from titans_lsp.paths import workspace_cache_dir

log = logging.getLogger(__name__)


Progress = Callable[[int, int], None]


class FolderState:
    """One workspace folder (or, with ``root=None``, the files outside every folder)."""

    def __init__(self, uri: str, root: Path | None, cache_dir: str | None = None):
        self.uri = uri
        self.root = root.resolve() if root is not None else None
        self.cache_dir = cache_dir
        self.state_dir = workspace_cache_dir(self.root, cache_dir) if self.root is not None else None
        self.settings = CompletionSettings()
        self.workspace = Workspace(root=self.root)
        self.primed: dict[str, int] = {}  # rel -> mtime_ns of the version written into memory
        self.memory_loaded_for: str | None = None  # tag whose persisted memory was loaded
        # Counters and progress the status command and the titans/status notification show.
        self.indexing: tuple[int, int] | None = None
        self.priming: tuple[int, int] | None = None
        self.index_updates = 0
        self.prime_writes = 0
        self.last_indexed: str | None = None
        self.last_primed: str | None = None
        self.lock = threading.RLock()
        # What a failed write of the state (disk full, read-only cache) does: None raises (`titans-lsp prime`,
        # whose job is the state); the server reports it and goes on with the state in memory.
        self.on_save_error: Callable[[OSError], None] | None = None

    @property
    def name(self) -> str:
        return self.root.name if self.root is not None else "(no folder)"

    @property
    def index(self):
        return self.workspace.index

    # ---- settings --------------------------------------------------------------------------
    def apply_settings(self, values: dict | None) -> tuple[list[str], list[str]]:
        """Apply the editor's ``titansLsp`` section. Keys absent from ``values`` go back to their
        defaults; an invalid value keeps the previous one. Returns (changed fields, error messages)."""
        self.settings, changed, errors = self.settings.merge_editor(values)
        return changed, errors

    # ---- the index --------------------------------------------------------------------------
    def load_index(self, progress: Progress | None = None, dense_model: str | None = "default") -> None:
        """Load the persisted index and catch up with the disk, or build it."""
        if self.root is None:
            return
        from titans_lsp.retrieval.index import WorkspaceIndex

        def report(done: int, total: int) -> None:
            self.indexing = (done, total)
            if progress is not None:
                progress(done, total)

        self.indexing = (0, 0)
        try:
            self.workspace.index = WorkspaceIndex.load_or_build(self.root, self.state_dir, progress=report,
                                                                on_save_error=self.on_save_error,
                                                                dense_model=dense_model, dense_sync_limit=0)
        finally:
            n = len(self.workspace.index.files()) if self.workspace.index is not None else 0
            self.indexing = (n, n)

    def rel(self, path: str | os.PathLike) -> str | None:
        """``path`` relative to the folder (links resolved), None when it is outside."""
        if self.root is None:
            return None
        path = Path(path)
        try:
            path = path.resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13): the link itself
            path = path.absolute()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return None

    def reindex(self, path: Path) -> bool:
        """Re-index one changed (or deleted) file; returns whether it is now indexed."""
        index = self.workspace.index
        if index is None:
            return False
        rel = self.rel(path)
        was_indexed = rel in set(index.files())
        if path.exists():
            indexed = index.update_file(path)
        else:
            index.remove_file(path)
            indexed = False
        if not indexed:
            self.primed.pop(rel or "", None)
        if indexed or was_indexed:  # editor swap files and other excluded paths do not count
            self.index_updates += 1
            self.last_indexed = rel
        return indexed

    def save_index(self) -> None:
        if self.workspace.index is not None and self.state_dir is not None:
            with self._saving():
                self.workspace.index.save()

    @contextlib.contextmanager
    def _saving(self) -> Iterator[None]:
        """A write of the persisted state, failing as ``on_save_error`` says."""
        try:
            yield
        except OSError as exc:
            if self.on_save_error is None:
                raise
            self.on_save_error(exc)

    # ---- memory -------------------------------------------------------------------------------
    @staticmethod
    def memory_tag(engine: CompletionEngine) -> str:
        source = getattr(engine.loaded, "source", None)
        ident = f"{getattr(source, 'label', source)}|{engine.memory_checkpoint}"
        config = getattr(engine, "memory_config", None)
        if config is not None:  # another memory config (e.g. update_rule) keeps its own state file
            ident += "|" + config.to_json()
        return hashlib.sha1(ident.encode()).hexdigest()[:10]

    def _memory_paths(self, engine: CompletionEngine) -> tuple[Path, Path]:
        tag = self.memory_tag(engine)
        return self.state_dir / f"memory-{tag}.safetensors", self.state_dir / f"primed-{tag}.json"

    def ensure_memory(self, engine: CompletionEngine) -> None:
        """Give the workspace a memory state: the persisted one when there is one, else a fresh one."""
        with self.lock:  # the inference and background threads may both get here first
            self._ensure_memory(engine)

    def _ensure_memory(self, engine: CompletionEngine) -> None:
        patch = engine.ensure_memory()
        tag = self.memory_tag(engine)
        if self.workspace.memory is not None and self.memory_loaded_for == tag:
            return
        self.memory_loaded_for = tag
        if self.state_dir is not None:
            memory_path, primed_path = self._memory_paths(engine)
            if memory_path.exists() and primed_path.exists():
                try:
                    from titans_lsp.model.memory import MemoryState

                    loaded = MemoryState.load(memory_path, device=engine.loaded.device)
                    # layers, shapes and dtypes of this patch's memory config, every value finite: a state
                    # saved under another config, or a corrupted one, is never served (start fresh)
                    loaded.check_like(patch.new_state())
                    primed = json.loads(primed_path.read_text())
                    if not isinstance(primed, dict):
                        raise ValueError(f"{primed_path.name} is not an object")
                    self.primed = {str(k): int(v) for k, v in primed.items()}
                    with engine.model_lock:
                        self.workspace.set_memory(loaded)
                    log.info("%s: resumed memory with %d primed files from %s", self.name, len(self.primed), memory_path)
                    return
                except Exception as exc:  # noqa: BLE001 - a damaged state means: start over
                    log.warning("%s: memory state %s rejected (%s: %s); starting fresh",
                                self.name, memory_path, type(exc).__name__, exc)
        with engine.model_lock:
            self.workspace.set_memory(patch.new_state())
        self.primed = {}

    def save_memory(self, engine: CompletionEngine) -> None:
        """Persist memory and the primed-file map atomically (a crash leaves the previous pair).
        Saves the newest memory (priming's unpublished working copy when there is one), which is
        what ``primed`` describes."""
        if self.state_dir is None or self.workspace.memory is None:
            return
        memory_path, primed_path = self._memory_paths(engine)
        with self._saving():
            memory_path.parent.mkdir(parents=True, exist_ok=True)
            with engine.model_lock:  # no priming writes while the state is serialized
                self.workspace.latest_memory.save(memory_path)  # atomic (temp file + rename)
            tmp_json = primed_path.with_name(primed_path.name + ".tmp")
            tmp_json.write_text(json.dumps(self.primed, sort_keys=True))
            os.replace(tmp_json, primed_path)

    def reset_memory(self, engine: CompletionEngine) -> None:
        self.ensure_memory(engine)
        with engine.model_lock:
            engine.reset_memory(self.workspace)
        self.primed = {}
        self.save_memory(engine)

    # ---- status -------------------------------------------------------------------------------------
    def memory_summary(self, engine: CompletionEngine | None) -> dict:
        """Gate values and a fingerprint of this folder's memory (for the status command)."""
        summary: dict = {"version": self.workspace.memory_version, "loaded": self.workspace.memory is not None,
                         "gates": None, "fingerprint": None}
        patch = getattr(engine, "patch", None) if engine is not None else None
        if patch is not None:
            gates = getattr(patch, "gate_values", None)
            try:
                summary["gates"] = _plain(gates() if callable(gates) else gates)
            except Exception as exc:  # noqa: BLE001 - status must not fail
                summary["gates"] = f"unavailable: {exc}"
        memory = self.workspace.memory  # the published snapshot: what completions read
        if memory is not None:
            summary["fingerprint"] = _fingerprint(memory)
            summary["tokensWritten"] = getattr(memory, "tokens_written", None)
            summary["updates"] = getattr(memory, "updates", None)
            pending = self.workspace.pending
            summary["unpublishedTokens"] = (pending.tokens_written - memory.tokens_written) if pending is not None else 0
        return summary


def _plain(value):
    """JSON-friendly copy of gate values (tensors, dicts, lists)."""
    if value is None:
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _fingerprint(memory) -> float | None:
    """Sum of absolute values of the memory's weights: changes whenever the memory is written."""
    weights = getattr(memory, "weights", None)
    if not isinstance(weights, dict):
        return None
    total = sum(float(w.detach().float().abs().sum()) for ws in weights.values() for w in ws)
    return round(total, 6)
