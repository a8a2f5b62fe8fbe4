"""The language server: a thin pygls adapter over :class:`titans_lsp.engine.CompletionEngine`.

Threads, and why:
  - the asyncio loop (pygls): reads messages, answers cheap requests, never runs the model;
  - ``inference`` (one daemon worker): loads the model, then runs completions one at a time;
    each request carries a cancel Event the decoder checks between steps;
  - ``background`` (one daemon worker): indexing, priming, re-indexing changed files and saving
    state. Priming shares the model with completions through the engine's lock and hands it over
    between chunks whenever a completion is waiting;
  - watchdog's observer and debounce timers: turn file events into background jobs.
Everything sent to the client from a thread goes through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import queue
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import to_fs_path
from urllib.parse import unquote

from titans_lsp import __version__
from titans_lsp.engine import Cancelled, Completion, CompletionEngine, CompletionRequest
from titans_lsp.folder import FolderState
from titans_lsp.retrieval.index import DENSE_RETRIEVERS
from titans_lsp.settings import SECTION

log = logging.getLogger(__name__)

CMD_PRIME = "titans-lsp.primeWorkspace"
CMD_RESET = "titans-lsp.resetMemory"
CMD_STATUS = "titans-lsp.status"
STATUS_NOTIFICATION = "titans/status"
CURSOR_NOTIFICATION = "titans/cursor"  # client -> server: the cursor rests here, pre-warm its prompt
NO_FOLDER = "titans-lsp:no-folder"


class SerialExecutor(concurrent.futures.Executor):
    """One daemon worker thread running jobs in order. Unlike ThreadPoolExecutor its thread does
    not hold up interpreter exit when the client goes away mid-inference."""

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def _loop(self) -> None:
        while True:
            future, fn, args, kwargs = self._jobs.get()
            if future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - delivered to whoever awaits the future
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._jobs.put((None, None, None, None))


class ClientLogHandler(logging.Handler):
    """Forwards log records to the client as window/logMessage."""

    LEVELS = {logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning,
              logging.INFO: types.MessageType.Info}

    def __init__(self, server: "TitansServer", level: int):
        super().__init__(level)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("titans_lsp"):
            return
        try:
            kind = self.LEVELS.get(record.levelno, types.MessageType.Log)
            params = types.LogMessageParams(type=kind, message=self.format(record))
            self.server.call_in_loop(self.server.window_log_message, params)
        except Exception:  # noqa: BLE001
            pass


class TitansProtocol(LanguageServerProtocol):
    """pygls drops a request whose params do not deserialize without answering it, so the client
    waits forever; answer it with the JSON-RPC error instead."""

    def structure_message(self, data: dict):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "id" in data and "method" in data:
                log.warning("malformed %s request: %s", data.get("method"), exc)
                self._send_response(data["id"], error=exc.to_response_error())
            raise


class TitansServer(LanguageServer):
    def __init__(self, model: str = "default", device: str = "auto", dtype: str = "auto",
                 cache_dir: str | None = None, memory_checkpoint: str | None = None, log_level: int = logging.INFO,
                 decode: str = "eager"):
        super().__init__("titans-lsp", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full,
                         protocol_cls=TitansProtocol)
        self.model_options = {"model": model, "device": device, "dtype": dtype}
        self.cache_dir = cache_dir
        self.memory_checkpoint = memory_checkpoint
        self.decode = decode  # CompletionEngine(decode=...)
        self.log_level = log_level
        self.loop: asyncio.AbstractEventLoop | None = None
        self.inference = SerialExecutor("titans-inference")
        self.background = SerialExecutor("titans-background")
        self.engine_future: concurrent.futures.Future | None = None
        self.folders: dict[str, FolderState] = {}  # folder URI -> state
        # (request kind, document URI) -> cancel event of the latest request. Inline and plain completion
        # requests are kept apart: VS Code sends both while typing and one must not cancel the other.
        self.pending: dict[tuple[str, str], threading.Event] = {}
        self.inflight = 0  # completion requests received and not answered (priming yields to them)
        # Background priming also pauses while the user is typing: a chunk started between two
        # keystrokes would hold the model for up to a second when the next request arrives.
        self.typing_quiet_s = 1.0  # seconds without a completion request before priming resumes
        self.last_request_at = float("-inf")  # time.monotonic() of the latest completion request
        self.latencies: dict[str, deque] = {}  # mode -> recent end-to-end latencies (ms)
        self.last_latency_ms: float | None = None
        self.last_completion: dict | None = None
        self.last_prepare: dict | None = None  # the last titans/cursor pre-warm that finished (status)
        self.stopping = threading.Event()
        self.watcher = None
        self._last_status_sent: dict[str, float] = {}
        self.supports_progress = False
        self.supports_configuration = False
        self.settings_ready: asyncio.Event | None = None  # set once the first settings pull is answered

    # ---- plumbing ----------------------------------------------------------------------------------
    def call_in_loop(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the event loop (thread-safe; dropped once the loop is gone)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass

    def show_message(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        self.call_in_loop(self.window_show_message, types.ShowMessageParams(type=kind, message=f"titans-lsp: {message}"))

    def engine(self) -> CompletionEngine:
        """The loaded engine (blocks until it is loaded; raises if loading failed)."""
        if self.engine_future is None:
            raise RuntimeError("the server is not initialized")
        return self.engine_future.result()

    def engine_if_loaded(self) -> CompletionEngine | None:
        future = self.engine_future
        if future is not None and future.done() and future.exception() is None:
            return future.result()
        return None

    def start_model(self, options: dict | None) -> None:
        for key in ("model", "device", "dtype"):
            if isinstance(options, dict) and isinstance(options.get(key), str) and options[key]:
                self.model_options[key] = options[key]
        self.engine_future = self.inference.submit(self._load_engine)

    def _load_engine(self) -> CompletionEngine:
        started = time.perf_counter()
        opts = self.model_options
        log.info("loading model %s (device %s, dtype %s)", opts["model"], opts["device"], opts["dtype"])
        try:
            engine = CompletionEngine.load(opts["model"], device=opts["device"], dtype=opts["dtype"],
                                           cache_dir=self.cache_dir, memory_checkpoint=self.memory_checkpoint,
                                           decode=self.decode)
        except Exception as exc:
            log.error("cannot load model %s: %s", opts["model"], exc)
            self.show_message(f"cannot load model {opts['model']}: {exc}", types.MessageType.Error)
            raise
        from titans_lsp.model.generation import TokenTexts

        TokenTexts.of(engine.tokenizer)  # the vocabulary's texts for token healing: once, here, not in a request
        log.info("model %s loaded on %s (%s) in %.1f s", engine.loaded.name, engine.loaded.device,
                 engine.loaded.dtype, time.perf_counter() - started)
        return engine

    # ---- folders ------------------------------------------------------------------------------------
    def add_folder(self, uri: str) -> FolderState:
        if uri not in self.folders:
            path = to_fs_path(uri)
            root = Path(path) if path and Path(path).is_dir() else None
            if root is None:
                log.warning("workspace folder %s is not a local directory; no index or watching", uri)
            self.folders[uri] = FolderState(uri, root, self.cache_dir)
        return self.folders[uri]

    def folder_for(self, doc_uri: str) -> FolderState:
        """The innermost workspace folder holding the document, else the no-folder state."""
        path = to_fs_path(doc_uri)
        best: FolderState | None = None
        if path:
            resolved = Path(path).resolve()
            for state in self.folders.values():
                if state.root is not None and resolved.is_relative_to(state.root):
                    if best is None or len(state.root.parts) > len(best.root.parts):
                        best = state
        if best is None:
            best = self.folders.get(NO_FOLDER) or self.add_folder(NO_FOLDER)
        return best

    def open_folder(self, state: FolderState) -> None:
        """Index (and in memory modes prime) a folder in the background, and watch it."""
        if state.root is None:
            return
        self.background.submit(self._guard, self._job_open, state)
        if self.watcher is None:
            from titans_lsp.watching import DebouncedWatcher

            self.watcher = DebouncedWatcher(self._on_files_changed)
        self.watcher.watch(state.uri, state.root)

    def close_folder(self, uri: str) -> None:
        if self.watcher is not None:
            self.watcher.unwatch(uri)
        self.folders.pop(uri, None)

    # ---- settings -----------------------------------------------------------------------------------
    async def pull_settings(self, states: list[FolderState]) -> None:
        if not self.supports_configuration or not states:
            return
        items = [types.ConfigurationItem(scope_uri=None if s.root is None else s.uri, section=SECTION) for s in states]
        try:
            # Shielded: pygls 2.1.1 mishandles a response to a cancelled configuration request.
            request = asyncio.ensure_future(self.workspace_configuration_async(types.ConfigurationParams(items=items)))
            values = await asyncio.wait_for(asyncio.shield(request), timeout=10)
        except Exception as exc:  # noqa: BLE001 - a client that cannot answer keeps the current settings
            log.warning("could not pull %s settings: %s", SECTION, exc)
            return
        for state, value in zip(states, values or []):
            self.apply_settings(state, value)

    def apply_settings(self, state: FolderState, values: Any) -> None:
        values = to_plain(values)
        if values is not None and not isinstance(values, dict):
            self.show_message(f"settings section {SECTION} must be an object, got {type(values).__name__}")
            return
        old_mode = state.settings.mode
        old_retriever = state.settings.retriever
        changed, errors = state.apply_settings(values)
        for error in errors:
            log.warning("%s: %s", state.name, error)
            self.show_message(error, types.MessageType.Error)
        if changed:
            log.info("%s: settings %s", state.name, json.dumps(state.settings.to_editor()))
        if state.settings.mode != old_mode:
            log.info("%s: mode %s -> %s", state.name, old_mode, state.settings.mode)
            if state.settings.mode.primes and state.root is not None:
                self.background.submit(self._guard, self._job_prime, state, False)
            self.send_status(state, force=True)
        if state.settings.retriever != old_retriever and set(state.settings.retriever) & set(DENSE_RETRIEVERS):
            self.background.submit(self._guard, self._job_dense, state)

    # ---- background jobs (run on the background thread) ---------------------------------------------
    def _guard(self, job: Callable, *args) -> Any:
        try:
            return job(*args)
        except Exception as exc:
            log.exception("background job %s failed: %s", getattr(job, "__name__", job), exc)
            raise

    def _user_active(self) -> bool:
        """A completion is running or waiting, or one was requested within ``typing_quiet_s``."""
        return self.inflight > 0 or time.monotonic() - self.last_request_at < self.typing_quiet_s

    def _should_yield(self) -> bool:
        return self._user_active() or self.stopping.is_set()

    def _wait_for_idle(self) -> None:
        while self._user_active() and not self.stopping.is_set():
            time.sleep(0.02)

    def _job_open(self, state: FolderState) -> None:
        with LspProgress(self, f"Indexing {state.name}") as progress:
            def report(done: int, total: int) -> None:
                progress.report(done, total, "files")
                self.send_status(state)

            started = time.perf_counter()
            state.load_index(report)
            log.info("%s: %d files indexed (%d chunks) in %.1f s", state.name, len(state.index.files()),
                     state.index.num_chunks(), time.perf_counter() - started)
        state.indexing = None
        self.send_status(state, force=True)
        if set(state.settings.retriever) & set(DENSE_RETRIEVERS):
            self._job_dense(state)
        if state.settings.mode.primes:
            self._job_prime(state, False)
        else:
            engine = self.engine_if_loaded()
            if engine is not None and engine.patch is not None:
                state.ensure_memory(engine)

    def _job_dense(self, state: FolderState) -> None:
        if state.index is None:
            return
        with LspProgress(self, f"Encoding {state.name} for dense retrieval") as progress:
            encoded = state.index.build_dense(lambda done, total: progress.report(done, total, "chunks"))
        if encoded:
            state.save_index()
            log.info("%s: encoded %d chunks for dense retrieval", state.name, encoded)

    def _job_prime(self, state: FolderState, force: bool) -> dict:
        if state.index is None:
            return {"folder": state.uri, "primed": 0, "skipped": 0, "error": "not indexed"}
        engine = self.engine()
        started = time.perf_counter()
        with LspProgress(self, f"Priming memory for {state.name}") as progress:
            def report(done: int, total: int) -> None:
                progress.report(done, total, "files")
                self.send_status(state)

            result = state.prime_all(engine, report, force=force, should_stop=self.stopping.is_set,
                                     should_yield=self._should_yield, wait=self._wait_for_idle)
        state.priming = None
        self.send_status(state, force=True)
        log.info("%s: primed %d files (%d already primed) in %.1f s", state.name, result.primed, result.skipped,
                 time.perf_counter() - started)
        return {"folder": state.uri, "primed": result.primed, "skipped": result.skipped,
                "filesPrimed": len(state.primed), "stopped": result.stopped}

    def _job_reset(self, state: FolderState) -> dict:
        engine = self.engine()
        state.reset_memory(engine)
        log.info("%s: memory reset", state.name)
        self.send_status(state, force=True)
        return {"folder": state.uri, "reset": True}

    def _job_changed(self, state: FolderState, paths: set[Path]) -> None:
        if state.index is None or self.stopping.is_set():
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
        if state.settings.mode.primes and reindexed:
            engine = self.engine()
            for rel in reindexed:
                state.prime_file(engine, rel, should_yield=self._should_yield, wait=self._wait_for_idle, publish=False)
            engine.publish_memory(state.workspace)  # one publish per batch of changed files
            state.save_memory(engine)
            log.info("%s: re-primed %s", state.name, ", ".join(reindexed))
        if set(state.settings.retriever) & set(DENSE_RETRIEVERS):
            state.index.build_dense()
        self.send_status(state, force=True)

    def _on_files_changed(self, uri: str, paths: set[Path]) -> None:
        state = self.folders.get(uri)
        if state is not None:
            self.background.submit(self._guard, self._job_changed, state, paths)

    # ---- status -------------------------------------------------------------------------------------------
    def send_status(self, state: FolderState, force: bool = False) -> None:
        """The titans/status notification (throttled to 4 per second per folder unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_status_sent.get(state.uri, 0.0) < 0.25:
            return
        self._last_status_sent[state.uri] = now
        params = {"folder": state.uri, "mode": state.settings.mode.value,
                  "indexing": _progress_dict(state.indexing), "priming": _progress_dict(state.priming),
                  "lastLatencyMs": self.last_latency_ms}
        if self.last_completion is not None and self.last_completion.get("folder") == state.uri:
            params["lastCompletion"] = self.last_completion  # token counts, for titans-lsp bench --server
        if self.last_prepare is not None and self.last_prepare.get("folder") == state.uri:
            params["lastPrepare"] = self.last_prepare
        self.call_in_loop(self.protocol.notify, STATUS_NOTIFICATION, params)

    def status(self) -> dict:
        engine = self.engine_if_loaded()
        error = None
        if self.engine_future is not None and self.engine_future.done() and self.engine_future.exception():
            error = str(self.engine_future.exception())
        all_ms = [ms for values in self.latencies.values() for ms in values]
        folders = []
        for state in self.folders.values():
            index = state.index
            folders.append({
                "folder": state.uri, "root": str(state.root) if state.root else None, "mode": state.settings.mode.value,
                "settings": state.settings.to_editor(), "stateDir": str(state.state_dir) if state.state_dir else None,
                "filesIndexed": len(index.files()) if index is not None else 0,
                "chunksIndexed": index.num_chunks() if index is not None else 0,
                "filesPrimed": len(state.primed), "indexUpdates": state.index_updates,
                "primeWrites": state.prime_writes, "lastIndexed": state.last_indexed, "lastPrimed": state.last_primed,
                "indexing": _progress_dict(state.indexing), "priming": _progress_dict(state.priming),
                "memory": state.memory_summary(engine),
            })
        return {
            "version": __version__, "model": engine.loaded.name if engine else self.model_options["model"],
            "device": str(engine.loaded.device) if engine else self.model_options["device"],
            "dtype": str(engine.loaded.dtype).replace("torch.", "") if engine else self.model_options["dtype"],
            "modelLoaded": engine is not None, "modelError": error,
            "memoryInstalled": bool(engine is not None and engine.patch is not None),
            "inflight": self.inflight, "lastCompletion": self.last_completion, "lastPrepare": self.last_prepare,
            "latencyMs": {
                "p50": _round(statistics.median(all_ms)) if all_ms else None, "last": _round(self.last_latency_ms),
                "count": len(all_ms),
                "byMode": {mode: {"p50": _round(statistics.median(v)), "last": _round(v[-1]), "count": len(v)}
                           for mode, v in self.latencies.items() if v},
            },
            "folders": folders,
        }

    # ---- completion ---------------------------------------------------------------------------------------
    async def complete(self, uri: str, position: types.Position, num_items: int,
                       automatic: bool = False, kind: str = "inline") -> tuple[Completion | None, FolderState]:
        """Run one completion on the inference thread. Raises CancelledError (answered -32800) when
        the client cancels, a newer request for the document arrives, or the document changes."""
        started = time.perf_counter()
        if self.settings_ready is not None and not self.settings_ready.is_set():
            # A request right after `initialized` must not run with default settings.
            try:
                await asyncio.wait_for(self.settings_ready.wait(), timeout=10)
            except asyncio.TimeoutError:
                pass
        made = self._request_at(uri, position, num_items, automatic)
        if made is None:
            return None, self.folder_for(uri)
        request, state, version = made
        cancel = request.cancel
        previous = self.pending.get((kind, uri))
        if previous is not None:
            previous.set()  # a newer request for this document: the older one is stale
        self.pending[(kind, uri)] = cancel
        for key in [key for key in self.pending if key[0] == "prepare" and key[1] != uri]:
            self.pending.pop(key).set()  # pre-warming another document must not delay this request
        loop = asyncio.get_running_loop()
        self.last_request_at = time.monotonic()
        self.inflight += 1
        try:
            completion = await loop.run_in_executor(self.inference, self._run_engine, request, state, uri, version)
        except asyncio.CancelledError:
            cancel.set()
            log.debug("completion for %s cancelled by the client", uri)
            raise
        except Cancelled:
            log.debug("completion for %s cancelled (newer request or edit)", uri)
            raise asyncio.CancelledError() from None
        finally:
            self.inflight -= 1
            if self.pending.get((kind, uri)) is cancel:
                del self.pending[(kind, uri)]
        ms = (time.perf_counter() - started) * 1000
        self.last_latency_ms = ms
        self.latencies.setdefault(completion.mode.value, deque(maxlen=100)).append(ms)
        self.last_completion = {"folder": state.uri, "uri": uri, "version": version,  # which request (bench --server)
                                "mode": completion.mode.value, "promptTokens": completion.prompt_tokens,
                                "contextChars": len(completion.context), "reused": completion.reused,
                                "prefilled": completion.prefilled, "decoded": completion.decoded,
                                "accepted": completion.accepted, "latencyMs": _round(ms), "engineMs": _round(completion.seconds * 1000),
                                "items": len(completion.items),
                                "timings": {k: _round(v * 1000) for k, v in completion.timings.items()}}
        log.debug("%s completion in %.0f ms (prompt %d, reused %d, decoded %d, %s): %r", completion.mode, ms,
                  completion.prompt_tokens, completion.reused, completion.decoded,
                  " ".join(f"{k}={v * 1000:.0f}ms" for k, v in completion.timings.items()), completion.text)
        self.send_status(state, force=True)
        return completion, state

    def _request_at(self, uri: str, position: types.Position, num_items: int = 1,
                    automatic: bool = True) -> tuple[CompletionRequest, FolderState, int | None] | None:
        """The engine request for a cursor in an open document (None when there is no text before
        it), with a fresh cancel event, and the document version it was made from."""
        document = self.workspace.get_text_document(uri)
        state = self.folder_for(uri)
        source = document.source
        line = max(0, min(position.line, len(document.lines)))
        offset = document.offset_at_position(types.Position(line=line, character=max(0, position.character)))
        offset = max(0, min(offset, len(source)))
        prefix, suffix = source[:offset], source[offset:]
        if not prefix.strip():
            return None
        rel = state.rel(to_fs_path(uri) or "") if state.root is not None else None
        request = CompletionRequest(prefix=prefix, suffix=suffix, path=rel or Path(to_fs_path(uri) or uri).name,
                                    settings=state.settings, num_items=num_items, cancel=threading.Event(),
                                    doc_key=uri, automatic=automatic)
        return request, state, document.version

    def _run_engine(self, request: CompletionRequest, state: FolderState, uri: str, version,
                    prepare: bool = False) -> Completion:
        """On the inference thread: complete (or, with ``prepare``, only pre-warm) unless the request
        was cancelled or the document changed while it queued."""
        if request.cancel.is_set():
            raise Cancelled()
        engine = self.engine()
        document = self.workspace.text_documents.get(unquote(uri))
        if request.cancel.is_set() or (document is not None and document.version != version):
            raise Cancelled()
        if request.settings.mode.uses_memory:
            state.ensure_memory(engine)
        if prepare:
            return engine.prepare(request, state.workspace)
        return engine.complete(request, state.workspace)

    def prepare(self, uri: str, position: types.Position) -> None:
        """``titans/cursor``: the cursor rests at ``position``; prefill the prompt a request there
        would get, so the first keystroke's request only prefills what was typed. A newer cursor
        for the document supersedes it, an edit or a request for another document cancels it (the
        chunks already prefilled stay in the document's cache)."""
        if uri not in self.workspace.text_documents:
            return
        made = self._request_at(uri, position)
        if made is None:
            return
        request, state, version = made
        previous = self.pending.get(("prepare", uri))
        if previous is not None:
            previous.set()
        self.pending[("prepare", uri)] = request.cancel
        started = time.perf_counter()

        def run() -> None:
            try:
                prepared = self._run_engine(request, state, uri, version, prepare=True)
            except Cancelled:
                log.debug("pre-warm of %s cancelled", uri)
                return
            except Exception as exc:  # noqa: BLE001 - a failed pre-warm only costs the next request time
                log.warning("pre-warm of %s failed: %s", uri, exc)
                return
            finally:
                self.call_in_loop(self._forget_pending, ("prepare", uri), request.cancel)
            self.last_prepare = {"folder": state.uri, "uri": uri, "line": position.line, "character": position.character,
                                 "version": version, "mode": prepared.mode, "promptTokens": prepared.prompt_tokens,
                                 "prefilled": prepared.prefilled, "reused": prepared.reused,
                                 "ms": _round((time.perf_counter() - started) * 1000)}
            log.debug("pre-warmed %s:%d: %d tokens prefilled, %d reused", uri, position.line, prepared.prefilled,
                      prepared.reused)
            self.call_in_loop(self.send_status, state, True)

        self.inference.submit(run)

    def _forget_pending(self, key: tuple[str, str], event: threading.Event) -> None:
        if self.pending.get(key) is event:
            del self.pending[key]

    def cancel_document(self, uri: str) -> None:
        for key in [key for key in self.pending if key[1] == uri]:
            self.pending.pop(key).set()

    def stop_all(self) -> None:
        self.stopping.set()
        for event in list(self.pending.values()):
            event.set()
        if self.watcher is not None:
            self.watcher.stop()


class LspProgress:
    """LSP work-done progress driven from a background thread (a no-op if the client has none)."""

    def __init__(self, server: TitansServer, title: str):
        self.server, self.title = server, title
        self.token = f"titans-lsp/{uuid.uuid4()}"
        self.active = False
        self.last = 0.0

    def __enter__(self) -> "LspProgress":
        server = self.server
        if server.supports_progress and server.loop is not None and not server.stopping.is_set():
            try:
                created = asyncio.run_coroutine_threadsafe(server.work_done_progress.create_async(self.token), server.loop)
                created.result(timeout=5)
                self.active = True
                server.call_in_loop(server.work_done_progress.begin, self.token,
                                    types.WorkDoneProgressBegin(title=self.title, percentage=0, cancellable=False))
            except Exception as exc:  # noqa: BLE001 - progress is a nicety
                log.debug("no work-done progress for %r: %s", self.title, exc)
        return self

    def report(self, done: int, total: int, unit: str) -> None:
        now = time.monotonic()
        if not self.active or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        percentage = int(100 * done / total) if total else 0
        self.server.call_in_loop(self.server.work_done_progress.report, self.token,
                                 types.WorkDoneProgressReport(message=f"{done}/{total} {unit}", percentage=percentage))

    def __exit__(self, *exc) -> None:
        if self.active:
            self.server.call_in_loop(self.server.work_done_progress.end, self.token,
                                     types.WorkDoneProgressEnd(message="failed" if exc[0] else "done"))


def _progress_dict(value: tuple[int, int] | None) -> dict | None:
    return None if value is None else {"done": value[0], "total": value[1]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def to_plain(value: Any) -> Any:
    """JSON-like values from what pygls hands over: lsprotocol attrs objects are unstructured, and
    the namedtuples (or plain objects) pygls makes of a custom method's params (titans/cursor,
    titans/status on the client side) become dicts. Used by the server, the bench client and tests."""
    if hasattr(value, "__attrs_attrs__"):
        from lsprotocol import converters

        return converters.get_converter().unstructure(value)
    if hasattr(value, "_asdict"):
        return {key: to_plain(item) for key, item in value._asdict().items()}
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return {key: to_plain(item) for key, item in vars(value).items()}
    return value


def _pushed_section(settings: Any) -> dict | None:
    settings = to_plain(settings)
    if isinstance(settings, dict) and isinstance(settings.get(SECTION), dict):
        return settings[SECTION]
    return None


# ---- handlers -------------------------------------------------------------------------------------------------
def build_server(**options) -> TitansServer:
    server = TitansServer(**options)

    @server.feature(types.INITIALIZE)
    def initialize(ls: TitansServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_event_loop()
        ls.settings_ready = asyncio.Event()
        capabilities = params.capabilities
        ls.supports_progress = bool(capabilities.window and capabilities.window.work_done_progress)
        ls.supports_configuration = bool(capabilities.workspace and capabilities.workspace.configuration)
        handler = ClientLogHandler(ls, ls.log_level)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger("titans_lsp").addHandler(handler)
        ls.start_model(to_plain(params.initialization_options))
        for folder in params.workspace_folders or []:
            ls.add_folder(folder.uri)
        if not params.workspace_folders and params.root_uri:
            ls.add_folder(params.root_uri)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: TitansServer, params: types.InitializedParams) -> None:
        states = list(ls.folders.values())
        try:
            await ls.pull_settings(states)
        finally:
            ls.settings_ready.set()
        for state in states:
            ls.open_folder(state)
            ls.send_status(state, force=True)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    async def folders_changed(ls: TitansServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        for folder in params.event.removed:
            ls.close_folder(folder.uri)
        added = [ls.add_folder(folder.uri) for folder in params.event.added]
        await ls.pull_settings(added)
        for state in added:
            ls.open_folder(state)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def configuration_changed(ls: TitansServer, params: types.DidChangeConfigurationParams) -> None:
        pushed = _pushed_section(params.settings)
        if pushed is not None:
            for state in list(ls.folders.values()):
                ls.apply_settings(state, pushed)
        await ls.pull_settings(list(ls.folders.values()))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: TitansServer, params: types.DidOpenTextDocumentParams) -> None:
        state = ls.folder_for(params.text_document.uri)
        if state.uri == NO_FOLDER and len(ls.folders) == 1:
            # A single file opened without a workspace: it still gets settings (pulled unscoped).
            asyncio.ensure_future(ls.pull_settings([state]))

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: TitansServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.cancel_document(params.text_document.uri)  # the document moved on: older requests are stale

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: TitansServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.cancel_document(uri)
        ls.folder_for(uri).workspace.caches.pop(uri, None)

    @server.feature(CURSOR_NOTIFICATION)
    def cursor(ls: TitansServer, params: Any) -> None:
        params = to_plain(params)
        try:
            uri = params["textDocument"]["uri"]
            position = types.Position(line=int(params["position"]["line"]), character=int(params["position"]["character"]))
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring %s with params %r: expected {textDocument: {uri}, position: {line, character}}",
                        CURSOR_NOTIFICATION, params)
            return
        ls.prepare(uri, position)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: TitansServer, params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
        invoked = params.context is not None and params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        # Automatic triggers (while typing) answer early: one item, ending at the end of the line.
        completion, _ = await ls.complete(params.text_document.uri, params.position, 3 if invoked else 1,
                                          automatic=not invoked)
        if completion is None:
            return None
        here = types.Range(start=params.position, end=params.position)
        items = [types.InlineCompletionItem(insert_text=text, range=here) for text in completion.items if text]
        return types.InlineCompletionList(items=items)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: TitansServer, params: types.CompletionParams) -> types.CompletionList | None:
        result, _ = await ls.complete(params.text_document.uri, params.position, 1, kind="completion")
        if result is None or not result.text:
            return types.CompletionList(is_incomplete=True, items=[])
        text = result.text
        label = text.strip().splitlines()[0] if text.strip() else text
        here = types.Range(start=params.position, end=params.position)
        item = types.CompletionItem(
            label=label[:80], kind=types.CompletionItemKind.Text, detail=f"titans-lsp ({result.mode})",
            text_edit=types.TextEdit(range=here, new_text=text), filter_text=text, sort_text="0",
            insert_text_format=types.InsertTextFormat.PlainText, preselect=True)
        return types.CompletionList(is_incomplete=True, items=[item])

    def target_folders(ls: TitansServer, args: Any) -> list[FolderState]:
        """Folders named in the command's first argument ({"folder": uri} or a uri), else all."""
        arg = args[0] if isinstance(args, (list, tuple)) and args else None
        arg = to_plain(arg)
        uri = arg.get("folder") if isinstance(arg, dict) else arg if isinstance(arg, str) else None
        if uri:
            state = ls.folders.get(uri) or ls.folder_for(uri)
            return [state]
        return [s for s in ls.folders.values() if s.root is not None]

    async def run_jobs(ls: TitansServer, job: Callable, states: list[FolderState], *args) -> list:
        futures = [ls.background.submit(ls._guard, job, state, *args) for state in states]
        results = []
        for future in futures:
            try:
                results.append(await asyncio.shield(asyncio.wrap_future(future)))
            except Exception as exc:  # noqa: BLE001 - reported in the result
                results.append({"error": f"{type(exc).__name__}: {exc}"})
        return results

    @server.command(CMD_PRIME)
    async def prime_workspace(ls: TitansServer, *args: Any) -> dict:
        arg = to_plain(args[0]) if isinstance(args, (list, tuple)) and args else None
        force = bool(isinstance(arg, dict) and arg.get("force"))
        return {"folders": await run_jobs(ls, ls._job_prime, target_folders(ls, args), force)}

    @server.command(CMD_RESET)
    async def reset_memory(ls: TitansServer, *args: Any) -> dict:
        return {"folders": await run_jobs(ls, ls._job_reset, target_folders(ls, args))}

    @server.command(CMD_STATUS)
    def status(ls: TitansServer, *args: Any) -> dict:
        return ls.status()

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: TitansServer, params: Any = None) -> None:
        ls.stop_all()

    @server.feature(types.EXIT)
    def exit_(ls: TitansServer, params: Any = None) -> None:
        ls.stop_all()

    return server

