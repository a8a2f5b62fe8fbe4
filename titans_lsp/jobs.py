"""The server's background jobs for one workspace folder, run one at a time on the background
worker (:class:`titans_lsp.scheduling.Scheduler`): index on open, encode for dense retrieval,
prime the memory (:mod:`titans_lsp.priming`), reset it, and catch up with changed files.
Each reports progress to the editor and a ``titans/status`` when it ends."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from titans_lsp.folder import FolderState
from titans_lsp.priming import Primer
from titans_lsp.reporting import LspProgress
from titans_lsp.retrieval.index import DENSE_RETRIEVERS

if TYPE_CHECKING:
    from titans_lsp.server import TitansServer

log = logging.getLogger(__name__)


def needs_dense(state: FolderState) -> bool:
    return bool(set(state.settings.retriever) & set(DENSE_RETRIEVERS))


def unwanted(server: "TitansServer", state: FolderState) -> bool:
    """The server stops, or the folder left the workspace (``folders_changed``): its work is wasted."""
    return server.scheduler.stopping.is_set() or server.folders.get(state.uri) is not state


def open_folder(server: "TitansServer", state: FolderState) -> None:
    """Load or build the folder's index; then encode (dense retrievers) and prime (memory modes)."""
    if unwanted(server, state):
        return
    with LspProgress(server, f"Indexing {state.name}") as progress:
        def report(done: int, total: int) -> None:
            progress.report(done, total, "files")
            server.send_status(state)

        started = time.perf_counter()
        state.load_index(report)
        log.info("%s: %d files indexed (%d chunks) in %.1f s", state.name, len(state.index.files()),
                 state.index.num_chunks(), time.perf_counter() - started)
    state.indexing = None
    server.send_status(state, force=True)
    if needs_dense(state):
        encode_dense(server, state)
    if state.settings.primes:
        if server.memory_available(state):
            prime(server, state, False)
    else:
        engine = server.engine_if_loaded()
        if engine is not None and engine.patch is not None:
            state.ensure_memory(engine)


def encode_dense(server: "TitansServer", state: FolderState) -> None:
    if state.index is None:
        return
    with LspProgress(server, f"Encoding {state.name} for dense retrieval") as progress:
        encoded = state.index.build_dense(lambda done, total: progress.report(done, total, "chunks"))
    if encoded:
        state.save_index()
        log.info("%s: encoded %d chunks for dense retrieval", state.name, encoded)


def prime(server: "TitansServer", state: FolderState, force: bool, files: list[str] | None = None) -> dict:
    """Prime the folder's memory (every file not in memory at its current version, or ``files``)."""
    if state.index is None:
        return {"folder": state.uri, "primed": 0, "skipped": 0, "error": "not indexed"}
    engine = server.engine()
    primer = Primer(state, engine, server.scheduler.priming_policy())
    with LspProgress(server, f"Priming memory for {state.name}") as progress:
        def report(done: int, total: int) -> None:
            progress.report(done, total, "files")
            server.send_status(state)

        result = primer.run(files, force=force, progress=report, should_stop=lambda: unwanted(server, state))
    server.send_status(state, force=True)
    log.info("%s: primed %d files (%d already primed%s) in %.1f s", state.name, result.primed, result.skipped,
             ", stopped" if result.stopped else "", result.seconds)
    return {"folder": state.uri, "primed": result.primed, "skipped": result.skipped,
            "filesPrimed": len(state.primed), "stopped": result.stopped}


def reset(server: "TitansServer", state: FolderState) -> dict:
    state.reset_memory(server.engine())
    log.info("%s: memory reset", state.name)
    server.send_status(state, force=True)
    return {"folder": state.uri, "reset": True}


def files_changed(server: "TitansServer", state: FolderState, paths: set[Path]) -> None:
    """Re-index changed files; in priming modes write them into memory again."""
    if state.index is None or unwanted(server, state):
        return
    reindexed = []
    for path in sorted(paths):
        if state.rel(path) is None:
            continue
        try:
            if state.reindex(path):
                reindexed.append(state.rel(path))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            log.warning("%s: cannot re-index %s: %s", state.name, path, exc)
    state.save_index()
    if reindexed:
        log.info("%s: re-indexed %s", state.name, ", ".join(reindexed))
    if state.settings.primes and reindexed:
        prime(server, state, False, files=reindexed)
    if needs_dense(state):
        state.index.build_dense()
    server.send_status(state, force=True)
