"""The language server: a thin pygls adapter over :class:`titans_lsp.engine.CompletionEngine`.

This module holds the LSP handlers and the server's per-session state (folders, the engine,
latency figures). Where work runs and when it gives way is :mod:`titans_lsp.scheduling`; the
folder jobs (index, encode, prime, reset, changed files) are :mod:`titans_lsp.jobs`; titans-lsp's
own messages and command arguments are :mod:`titans_lsp.protocol`. Everything sent to the client
from a worker thread goes through :meth:`TitansServer.call_in_loop`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import itertools
import json
import logging
import re
import statistics
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import (JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams, JsonRpcInvalidRequest,
                              JsonRpcServerNotInitialized)
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import to_fs_path

from titans_lsp import __version__, jobs, telemetry
from titans_lsp.acceptance import AcceptanceTracker
from titans_lsp.backends import BackendConfig, BackendError, ModeUnsupported
from titans_lsp.engine import Cancelled, Completion, CompletionEngine, CompletionRequest
from titans_lsp.experiment import Assigner
from titans_lsp.folder import FolderState
from titans_lsp.modes import Mode
from titans_lsp.protocol import (CMD_ACCEPTED, CMD_PRIME, CMD_RESET, CMD_STATUS, CURSOR_NOTIFICATION, NO_FOLDER,
                                 STATUS_NOTIFICATION, AcceptedArgs, BackendStatus, CompletionReport, CursorParams, FolderArgs,
                                 PrepareReport, ProtocolError, StatusParams, progress_dict, to_plain, to_wire)
from titans_lsp.reporting import ClientLogHandler
from titans_lsp.scheduling import Scheduler
from titans_lsp.settings import SECTION

log = logging.getLogger(__name__)

SETTINGS_TIMEOUT_S = 10.0  # the longest wait for the client's answer to a settings pull


class TitansProtocol(LanguageServerProtocol):
    """pygls's protocol with the LSP lifecycle as the spec has it, and no half-answered requests:

    - a request whose params do not deserialize is answered with the JSON-RPC error (pygls drops it);
    - before ``initialize``: requests get -32002 (ServerNotInitialized), notifications are dropped;
    - ``initialize`` checks the TCP token (``initializationOptions.authToken``) when one is required;
    - after ``shutdown``: requests get -32600 (InvalidRequest), notifications other than ``exit`` are dropped;
    - internal errors (-32603) carry no traceback in ``error.data`` (it goes to the log).
    """

    def structure_message(self, data: dict):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "id" in data and "method" in data:
                log.warning("malformed %s request: %s", data.get("method"), exc)
                self._send_response(data["id"], error=exc.to_response_error())
            raise

    def handle_message(self, message) -> None:
        method = getattr(message, "method", None)
        is_request = method is not None and getattr(message, "id", None) is not None
        server: TitansServer = self._server  # type: ignore[assignment]
        if server.auth_token and not server.authenticated and method != types.INITIALIZE:
            if is_request:
                self._send_response(message.id, error=JsonRpcServerNotInitialized(
                    message=f"{method}: the server is not initialized (send initialize with the token first)"
                ).to_response_error())
            return None  # not even exit: an unauthenticated client must not stop the server
        if method == types.EXIT or method is None:  # exit, or a response to our own request
            return super().handle_message(message)
        if self._shutdown:
            if is_request:
                log.warning("%s request after shutdown: answered InvalidRequest", method)
                self._send_response(message.id, error=JsonRpcInvalidRequest(
                    message=f"{method}: the server is shutting down (shutdown was requested)").to_response_error())
            return None
        if method == types.INITIALIZE:
            if server.initialize_seen:
                if is_request:
                    self._send_response(message.id, error=JsonRpcInvalidRequest(
                        message="initialize was already received").to_response_error())
                return None
            if not server.check_token(getattr(message, "params", None)):
                if is_request:
                    self._send_response(message.id, error=JsonRpcInvalidRequest(
                        message="titans-lsp: authentication failed: initializationOptions.authToken is missing or "
                                "wrong (the server was started with --auth-token-file)").to_response_error())
                server.auth_failed = True
                return None
            server.initialize_seen = True
        elif not server.initialize_seen:
            if is_request:
                log.warning("%s request before initialize: answered ServerNotInitialized", method)
                self._send_response(message.id, error=JsonRpcServerNotInitialized(
                    message=f"{method}: the server is not initialized (send initialize first)").to_response_error())
            return None
        return super().handle_message(message)

    def _send_response(self, msg_id, result=None, error=None):
        if error is not None and error.code == JsonRpcInternalError.CODE and error.data is not None:
            error = types.ResponseError(code=error.code, message=error.message)  # the traceback is in the log
        return super()._send_response(msg_id, result, error)


class TitansServer(LanguageServer):
    def __init__(self, model: str = "default", device: str = "auto", dtype: str = "auto",
                 cache_dir: str | None = None, memory_checkpoint: str | None = None, log_level: int = logging.INFO,
                 backend: BackendConfig | None = None, memory_budget_mb: tuple[float | None, float | None] = (None, None),
                 memory_config: object | None = None, events_db: str | None = None):
        super().__init__("titans-lsp", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full,
                         protocol_cls=TitansProtocol)
        self.model_options = {"model": model, "device": device, "dtype": dtype}
        self.backend_config = backend or BackendConfig()
        self.backend_error: str | None = None  # the last backend failure shown to the user (status)
        self._errors_shown: dict[str, set[str]] = {}  # folder URI -> errors popped up there and not cleared since
        self.cache_dir = cache_dir
        self.memory_checkpoint = memory_checkpoint
        self.memory_config = memory_config  # titans_lsp.model.memory.MemoryConfig (--memory-config), or None
        self.memory_budget_mb = memory_budget_mb  # (device, host) MB for workspaces' memory states; None: unlimited
        self.log_level = log_level
        self.loop: asyncio.AbstractEventLoop | None = None
        self.scheduler = Scheduler()
        self.engine_future: concurrent.futures.Future | None = None
        self.folders: dict[str, FolderState] = {}  # folder URI -> state
        self.latencies: dict[str, deque] = {}  # mode -> recent end-to-end latencies (ms)
        self.last_latency_ms: float | None = None
        self.last_completion: CompletionReport | None = None
        self.last_prepare: PrepareReport | None = None  # the last titans/cursor pre-warm that finished
        self.watcher = None
        self._last_status_sent: dict[str, float] = {}
        self._save_error_shown: set[str] = set()  # folders told that their state cannot be saved
        self.supports_progress = False
        self.supports_configuration = False
        # folder URI -> done once the folder's first settings pull is answered (or failed); requests there wait
        self.settings_pending: dict[str, asyncio.Future] = {}
        # The local event store (titansLsp.telemetry); nothing is sent anywhere.
        self.events = telemetry.EventRecorder(Path(events_db).expanduser() if events_db else telemetry.default_path(cache_dir))
        self.acceptance = AcceptanceTracker(self.events)
        self.recording_ms: dict[str, deque] = {}  # hook -> what recording events cost each request there (ms)
        self.assigners: dict[str, Assigner] = {}  # folder URI -> the arms drawn for its titansLsp.experiment
        # Lifecycle and TCP authentication (TitansProtocol.handle_message, titans_lsp/transport.py).
        self.initialize_seen = False
        self.auth_token: str | None = None  # required in initializationOptions.authToken when set
        self.authenticated = False
        self.auth_failed = False
        self.exit_code: int | None = None

    def check_token(self, params: Any) -> bool:
        """Whether ``initialize``'s params carry the token this server requires (always, without one)."""
        if not self.auth_token:
            self.authenticated = True
            return True
        options = to_plain(getattr(params, "initialization_options", None)) if params is not None else None
        if options is None and isinstance(params, dict):
            options = params.get("initializationOptions")
        given = options.get("authToken") if isinstance(options, dict) else None
        ok = isinstance(given, str) and hmac.compare_digest(given.encode(), self.auth_token.encode())
        if not ok:
            log.warning("initialize without the right authToken: refused")
        self.authenticated = ok
        return ok

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
        """The loaded engine (blocks until it is loaded; raises BackendError saying why if loading failed)."""
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
        try:
            self.backend_config = self.backend_config.with_options(options)
        except ValueError as exc:  # bad initializationOptions: say so, keep the command line's backend
            log.error("%s; keeping backend %s", exc, self.backend_config.name)
            self.show_message(f"{exc}; keeping backend {self.backend_config.name}", types.MessageType.Error)
        self.engine_future = self.scheduler.inference.submit(self._load_engine)
        self.engine_future.add_done_callback(self._engine_done)

    def _engine_done(self, future: concurrent.futures.Future) -> None:
        """A model that failed to load: the status bar of every folder says so (not 'loading' forever)."""
        if not future.cancelled() and future.exception() is not None:
            for state in list(self.folders.values()):
                self.send_status(state, force=True)

    def _residency(self, engine: CompletionEngine):
        """Workspaces' memory states within --memory-device-mb on the model's device, then --memory-host-mb in
        host memory, then spilled to <cache>/memory-spill (titans_lsp/residency.py); None without a budget."""
        device_mb, host_mb = self.memory_budget_mb
        if engine.loaded is None or (device_mb is None and host_mb is None):
            return None
        from titans_lsp.paths import cache_root
        from titans_lsp.residency import MemoryResidency

        mb = lambda value: None if value is None else int(value * 1024 * 1024)  # noqa: E731
        return MemoryResidency(engine.loaded.device, mb(device_mb), mb(host_mb),
                               cache_root(self.cache_dir) / "memory-spill" if host_mb is not None else None)

    def _load_engine(self) -> CompletionEngine:
        started = time.perf_counter()
        opts = self.model_options
        log.info("loading model %s (device %s, dtype %s, backend %s)", opts["model"], opts["device"], opts["dtype"],
                 self.backend_config.name)
        try:
            engine = CompletionEngine.load(opts["model"], device=opts["device"], dtype=opts["dtype"],
                                           cache_dir=self.cache_dir, memory_checkpoint=self.memory_checkpoint,
                                           backend=self.backend_config, memory_config=self.memory_config)
            engine.residency = self._residency(engine)
        except Exception as exc:
            self.backend_error = f"cannot load model {opts['model']}: {exc}"  # status: lastError from now on
            log.error("%s", self.backend_error)
            self.show_error_once(None, self.backend_error)
            # Every request gets this (engine()): answered without a completion, like any backend failure
            raise BackendError(self.backend_error) from exc
        from titans_lsp.model.generation import TokenTexts

        TokenTexts.of(engine.tokenizer)  # the vocabulary's texts for token healing: once, here, not in a request
        log.info("model %s ready on backend %s in %.1f s", engine.model_name, json.dumps(engine.backend.describe()),
                 time.perf_counter() - started)
        return engine

    def memory_available(self, state: FolderState) -> bool:
        """Whether the folder's memory mode can run here; if not, the user is told what to change."""
        if not state.settings.uses_memory or not self.backend_config.remote:
            return True
        mode = state.settings.mode if state.settings.mode.uses_memory else "an experiment arm"
        message = str(ModeUnsupported(str(mode), self.backend_config.name))
        log.warning("%s: %s", state.name, message)
        self.show_error_once(state, message)
        return False

    def report_backend_error(self, state: FolderState, exc: BackendError) -> None:
        """A failed backend call: in status (lastError) until a completion succeeds, popped up once."""
        message = str(exc)
        log.log(logging.DEBUG if message == self.backend_error else logging.WARNING, "backend %s: %s",
                self.backend_config.name, message)
        self.show_error_once(state, message)
        self.backend_error = message
        self.send_status(state, force=True)

    def backend_answered(self, state: FolderState) -> None:
        """A completion in the folder succeeded: the backend error is gone from status, and the folder's
        errors are news again when they come back."""
        self.backend_error = None
        self._errors_shown.pop(state.uri, None)

    def show_error_once(self, state: FolderState | None, message: str) -> None:
        """Pop up an error unless it was shown for this folder (None: for the whole server, e.g. the model
        failed to load; never cleared) and has not cleared since (a completion there succeeded, or its
        settings changed). An error that stays (fim "on" on a model without FIM tokens, a memory mode on a
        remote backend, a model the server does not have) fails every keystroke's request: one pop-up
        says it, the status and the log keep it."""
        key = state.uri if state is not None else ""
        if any(message in self._errors_shown.get(k, ()) for k in (key, "")):
            return
        self._errors_shown.setdefault(key, set()).add(message)
        self.show_message(message, types.MessageType.Error)

    # ---- folders ------------------------------------------------------------------------------------
    def add_folder(self, uri: str) -> FolderState:
        if uri not in self.folders:
            path = to_fs_path(uri)
            root = Path(path) if path and Path(path).is_dir() else None
            if root is None:
                log.warning("workspace folder %s is not a local directory; no index or watching", uri)
            state = self.folders[uri] = FolderState(uri, root, self.cache_dir)
            state.on_save_error = lambda exc: self.report_save_error(state, exc)
        return self.folders[uri]

    def report_save_error(self, state: FolderState, exc: OSError) -> None:
        """The folder's state cannot be written (disk full, read-only cache): the index and memory go on
        in memory; the user is told once per folder, the log gets every failure."""
        message = (f"cannot save the state of {state.name} in {state.state_dir} ({exc.strerror or exc}): indexing "
                   "and priming go on, but are redone after a restart; free space or choose a writable --cache-dir")
        log.warning("%s", message)
        if state.uri not in self._save_error_shown:
            self._save_error_shown.add(state.uri)
            self.show_message(message, types.MessageType.Error)

    def folder_for(self, doc_uri: str) -> FolderState:
        """The innermost workspace folder holding the document, else the no-folder state."""
        path = to_fs_path(doc_uri)
        best: FolderState | None = None
        if path:
            for state in self.folders.values():
                if state.root is not None and state.rel(path) is not None:
                    if best is None or len(state.root.parts) > len(best.root.parts):
                        best = state
        if best is None:
            best = self.folders.get(NO_FOLDER) or self.add_folder(NO_FOLDER)
        return best

    def open_folder(self, state: FolderState) -> None:
        """Index (and in memory modes prime) a folder in the background, and watch it."""
        if state.root is None:
            return
        self.scheduler.in_background(jobs.open_folder, self, state)
        if self.watcher is None:
            from titans_lsp.watching import DebouncedWatcher

            self.watcher = DebouncedWatcher(self._on_files_changed)
        self.watcher.watch(state.uri, state.root)

    def close_folder(self, uri: str) -> None:
        if self.watcher is not None:
            self.watcher.unwatch(uri)
        self.folders.pop(uri, None)

    def _on_files_changed(self, uri: str, paths: set[Path]) -> None:
        state = self.folders.get(uri)
        if state is not None:
            self.scheduler.in_background(jobs.files_changed, self, state, paths)

    # ---- settings -----------------------------------------------------------------------------------
    def expect_settings(self, states: list[FolderState]) -> None:
        """These folders' first settings are about to be pulled: until the pull ends, requests there wait
        for it (:meth:`wait_for_settings`) instead of running with the defaults."""
        for state in states:
            if state.uri not in self.settings_pending:
                self.settings_pending[state.uri] = self.loop.create_future()

    async def wait_for_settings(self, state: FolderState) -> None:
        pending = self.settings_pending.get(state.uri)
        if pending is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(pending), timeout=SETTINGS_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("%s: no settings from the client after %.0f s; completing with the current ones", state.name,
                        SETTINGS_TIMEOUT_S)

    async def pull_settings(self, states: list[FolderState]) -> None:
        """Ask the client for the folders' settings and apply them; requests waiting for them go on
        once it answers, fails or times out."""
        try:
            if not self.supports_configuration or not states:
                return
            items = [types.ConfigurationItem(scope_uri=None if s.root is None else s.uri, section=SECTION) for s in states]
            try:
                # Shielded: pygls 2.1.1 mishandles a response to a cancelled configuration request.
                request = asyncio.ensure_future(self.workspace_configuration_async(types.ConfigurationParams(items=items)))
                values = await asyncio.wait_for(asyncio.shield(request), timeout=SETTINGS_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a client that cannot answer keeps the current settings
                reason = "no answer in time" if isinstance(exc, asyncio.TimeoutError) else str(exc) or type(exc).__name__
                message = (f"could not read the {SECTION} settings from the editor ({reason}); completions use the "
                           f"settings in effect before (the defaults, if none were read yet)")
                log.warning("%s", message)
                for state in states:  # silently running on defaults would look like the user's settings were ignored
                    self.show_error_once(state, message)
                return
            for state, value in zip(states, values or []):
                self.apply_settings(state, value)
        finally:
            for state in states:
                pending = self.settings_pending.pop(state.uri, None)
                if pending is not None and not pending.done():
                    pending.set_result(None)

    def apply_settings(self, state: FolderState, values: Any) -> None:
        old = state.settings
        changed, errors = state.apply_settings(to_plain(values))
        if changed:  # what the user was told may have been fixed, or be wrong in a new way
            self._errors_shown.pop(state.uri, None)
        for error in errors:
            log.warning("%s: %s", state.name, error)
            self.show_error_once(state, error)
        new = state.settings
        if changed:
            log.info("%s: settings %s", state.name, json.dumps(new.to_editor()))
        if new.experiment != old.experiment:
            self.assigners.pop(state.uri, None)
            log.info("%s: experiment %s", state.name, new.experiment.name if new.experiment else "off")
        if new.mode != old.mode or new.experiment != old.experiment:
            log.info("%s: mode %s -> %s", state.name, old.mode, new.mode)
            if new.primes and state.root is not None and self.memory_available(state):
                self.scheduler.in_background(jobs.prime, self, state, False)
            self.send_status(state, force=True)
        if new.retriever != old.retriever and jobs.needs_dense(state):
            self.scheduler.in_background(jobs.encode_dense, self, state)

    # ---- status -------------------------------------------------------------------------------------
    def send_status(self, state: FolderState, force: bool = False) -> None:
        """The titans/status notification (throttled to 4 per second per folder unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_status_sent.get(state.uri, 0.0) < 0.25:
            return
        self._last_status_sent[state.uri] = now
        last, prepare = self.last_completion, self.last_prepare
        params = StatusParams(
            folder=state.uri, mode=state.settings.mode.value, indexing=progress_dict(state.indexing),
            priming=progress_dict(state.priming), last_latency_ms=self.last_latency_ms,
            last_completion=last if last is not None and last.folder == state.uri else None,
            last_prepare=prepare if prepare is not None and prepare.folder == state.uri else None,
            backend=self.backend_status(state.settings.mode), acceptance_today=self.acceptance_today(state))
        self.call_in_loop(self.protocol.notify, STATUS_NOTIFICATION, params.to_wire())

    def backend_status(self, mode: Mode) -> BackendStatus:
        """The backend's name and health for titans/status (the configured one until the model loads),
        and which backend answers ``mode`` (differs from the name only for ``auto``)."""
        engine = self.engine_if_loaded()
        if engine is None:
            future = self.engine_future
            state = "down" if future is not None and future.done() else "loading"  # done without an engine: failed
            return BackendStatus.from_describe({**self.backend_config.describe(), "state": state}, self.backend_error)
        return BackendStatus.from_describe(engine.backend.describe(), self.backend_error,
                                           serving=engine.backend.serving_for(mode))

    def status(self) -> dict:
        """The ``titans-lsp.status`` command's answer: the model, latencies and every folder."""
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
                "indexing": progress_dict(state.indexing), "priming": progress_dict(state.priming),
                "memory": state.memory_summary(engine), "acceptanceToday": self.acceptance_today(state),
                "secrets": index.rules.secrets_summary() if index is not None else None,
            })
        loaded = engine.loaded if engine is not None else None  # the in-process model (local backend)
        return {
            "version": __version__, "model": engine.model_name if engine else self.model_options["model"],
            "device": str(loaded.device) if loaded else self.model_options["device"],
            "dtype": str(loaded.dtype).replace("torch.", "") if loaded else self.model_options["dtype"],
            "modelLoaded": engine is not None, "modelError": error,
            "backend": {**(engine.backend.describe() if engine else self.backend_config.describe()),
                        "lastError": self.backend_error},
            "memoryInstalled": bool(engine is not None and engine.patch is not None),
            "inflight": self.scheduler.typing.inflight,
            "lastCompletion": to_wire(self.last_completion) if self.last_completion else None,
            "lastPrepare": to_wire(self.last_prepare) if self.last_prepare else None,
            "latencyMs": {
                "p50": _round(statistics.median(all_ms)) if all_ms else None, "last": _round(self.last_latency_ms),
                "count": len(all_ms),
                "byMode": {mode: {"p50": _round(statistics.median(v)), "last": _round(v[-1]), "count": len(v)}
                           for mode, v in self.latencies.items() if v},
            },
            "folders": folders,
            "telemetry": {"path": str(self.events.path), "written": self.events.written, "error": self.events.error,
                          "costMs": self.recording_summary()},
        }

    # ---- completion ---------------------------------------------------------------------------------------
    async def complete(self, uri: str, position: types.Position, num_items: int,
                       automatic: bool = False, kind: str = "inline") -> tuple[Completion | None, FolderState]:
        """Run one completion on the inference thread. Raises CancelledError (answered -32800) when
        the client cancels, a newer request for the document arrives, or the document changes."""
        started = time.perf_counter()
        document = self.open_document(uri)
        if document is None:
            raise JsonRpcInvalidParams(message=f"{uri} is not open: titans-lsp completes only documents the client "
                                               f"sent with textDocument/didOpen")
        # A request right after `initialized`, or in a file or folder that just came, runs with the user's settings.
        version = document.version
        await self.wait_for_settings(self.folder_for(uri))
        if self.open_document(uri) is not document or document.version != version:
            raise asyncio.CancelledError()  # edited or closed while it waited: stale, as a running request would be
        requests, typing = self.scheduler.requests, self.scheduler.typing
        cancel = requests.start(kind, uri)  # a newer request for this document: the older one is stale
        made = self._request_at(uri, position, cancel, num_items, automatic)
        # What was shown for this document is dismissed unless accepted or still pending (typed along).
        recording = time.perf_counter()
        self.acceptance.superseded(uri, made[0].prefix if made is not None else None)
        self.recording_cost("dismiss", recording)
        if made is None:
            requests.finish(kind, uri, cancel)
            return None, self.folder_for(uri)
        request, state, version = made
        requests.cancel_kind_except("prepare", uri)  # pre-warming another document must not delay this request
        loop = asyncio.get_running_loop()
        typing.request_started()
        try:
            completion = await loop.run_in_executor(self.scheduler.inference, self._run_engine, request, state, uri,
                                                    version)
        except asyncio.CancelledError:
            cancel.set()
            log.debug("completion for %s cancelled by the client", uri)
            raise
        except Cancelled:
            log.debug("completion for %s cancelled (newer request or edit)", uri)
            raise asyncio.CancelledError() from None
        except BackendError as exc:  # down, unreachable, an unsupported mode: the user sees why
            self.report_backend_error(state, exc)
            return None, state
        finally:
            typing.request_finished()
            requests.finish(kind, uri, cancel)
        ms = (time.perf_counter() - started) * 1000
        self.backend_answered(state)
        self.last_latency_ms = ms
        self.latencies.setdefault(completion.mode.value, deque(maxlen=100)).append(ms)
        self.last_completion = CompletionReport(
            folder=state.uri, uri=uri, version=version, mode=completion.mode.value,
            prompt_tokens=completion.prompt_tokens, context_chars=len(completion.context), reused=completion.reused,
            prefilled=completion.prefilled, decoded=completion.decoded, accepted=completion.accepted,
            latency_ms=_round(ms), engine_ms=_round(completion.seconds * 1000), items=len(completion.items),
            timings={k: _round(v * 1000) for k, v in completion.timings.items()}, language=request.language.name)
        log.debug("%s completion in %.0f ms (prompt %d, reused %d, decoded %d, %s): %r", completion.mode, ms,
                  completion.prompt_tokens, completion.reused, completion.decoded,
                  " ".join(f"{k}={v * 1000:.0f}ms" for k, v in completion.timings.items()), completion.text)
        self.send_status(state, force=True)
        return completion, state

    def _request_at(self, uri: str, position: types.Position, cancel, num_items: int = 1,
                    automatic: bool = True, prepare: bool = False) -> tuple[CompletionRequest, FolderState, int | None] | None:
        """The engine request for a cursor in an open document (None when there is no text before
        it), and the document version it was made from."""
        document = self.open_document(uri)
        if document is None:  # closed while the request waited
            return None
        state = self.folder_for(uri)
        prefix, suffix = _split_at(document, position)
        if not prefix.strip():
            return None
        rel = state.rel(to_fs_path(uri) or "") if state.root is not None else None
        request = CompletionRequest(prefix=prefix, suffix=suffix, path=rel or Path(to_fs_path(uri) or uri).name,
                                    settings=self.settings_for(state, uri, consume=not prepare), num_items=num_items, cancel=cancel,
                                    doc_key=uri, automatic=automatic, language_id=document.language_id)
        return request, state, document.version

    def open_document(self, uri: str):
        """The document as the client sent it (didOpen/didChange), or None. Never read from disk:
        pygls's ``get_text_document`` would read any path a request names."""
        return self.workspace.text_documents.get(unquote(uri))

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

    async def prepare(self, cursor: CursorParams) -> None:
        """``titans/cursor``: the cursor rests in a document; prefill the prompt a request there
        would get, so the first keystroke's request only prefills what was typed. A newer cursor
        for the document supersedes it, an edit or a request for another document cancels it (the
        chunks already prefilled stay in the document's cache). In a file whose settings are still
        being pulled it waits for them, as requests do: a prompt laid out with the defaults (another
        mode, another block) is one no request would reuse."""
        uri = cursor.uri
        document = self.open_document(uri)
        if document is None:
            return
        version = document.version
        await self.wait_for_settings(self.folder_for(uri))
        if self.open_document(uri) is not document or document.version != version:
            return  # edited or closed while it waited: the editor sends the next resting cursor
        requests = self.scheduler.requests
        cancel = requests.start("prepare", uri)
        position = types.Position(line=cursor.line, character=cursor.character)
        made = self._request_at(uri, position, cancel, prepare=True)
        if made is None:
            requests.finish("prepare", uri, cancel)
            return
        request, state, version = made
        started = time.perf_counter()

        def run() -> None:
            try:
                prepared = self._run_engine(request, state, uri, version, prepare=True)
            except Cancelled:
                log.debug("pre-warm of %s cancelled", uri)
                return
            except Exception as exc:  # noqa: BLE001 - a failed pre-warm only costs the next request time
                # The error requests already reported (status, one pop-up) is not logged again per cursor rest.
                level = logging.DEBUG if str(exc) == self.backend_error else logging.WARNING
                log.log(level, "pre-warm of %s failed: %s", uri, exc)
                return
            finally:
                self.call_in_loop(requests.finish, "prepare", uri, cancel)
            self.last_prepare = PrepareReport(
                folder=state.uri, uri=uri, line=cursor.line, character=cursor.character, version=version,
                mode=prepared.mode.value, prompt_tokens=prepared.prompt_tokens, prefilled=prepared.prefilled,
                reused=prepared.reused, ms=_round((time.perf_counter() - started) * 1000))
            log.debug("pre-warmed %s:%d: %d tokens prefilled, %d reused", uri, cursor.line, prepared.prefilled,
                      prepared.reused)
            self.call_in_loop(self.send_status, state, True)

        self.scheduler.inference.submit(run)

    # ---- acceptance (titans_lsp/acceptance.py, titans_lsp/telemetry.py) ------------------------------------------
    def settings_for(self, state: FolderState, uri: str, consume: bool = True):
        """The folder's settings for a request in ``uri``: with ``titansLsp.experiment``, the mode is the
        arm drawn for this request (or file); ``consume=False`` (a pre-warm) peeks at the next draw."""
        settings = state.settings
        if settings.experiment is None:
            return settings
        assigner = self.assigners.get(state.uri)
        if assigner is None or assigner.experiment != settings.experiment:
            assigner = self.assigners[state.uri] = Assigner(settings.experiment)
            log.info("%s: experiment %s, seed %d", state.name, settings.experiment.name, assigner.seed)
        return replace(settings, mode=assigner.mode_for(uri, consume=consume))

    def record_shown(self, uri: str, position: types.Position, state: FolderState, completion: Completion,
                     texts: list[str], trigger: str) -> list[str] | None:
        """Record the items returned for a cursor in ``uri`` as shown; their ids (None when telemetry is
        off here). An answered request's document is the one it was made from (an edit cancels it)."""
        settings = state.settings
        if not settings.telemetry.enabled or not texts:
            return None
        started = time.perf_counter()
        last, engine = self.last_completion, self.engine_if_loaded()
        report = last if last is not None and last.uri == uri else None
        context = telemetry.Event(
            time=0.0, item="", kind="shown", workspace=str(state.root) if state.root is not None else state.uri,
            language=report.language if report else None, mode=completion.mode.value,
            experiment=settings.experiment.name if settings.experiment else None, backend=completion.backend,
            model=engine.model_name if engine is not None else self.model_options["model"],
            latency_ms=report.latency_ms if report else None, prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.decoded, trigger=trigger, text="" if settings.telemetry.store_text else None)
        document = self.workspace.text_documents.get(unquote(uri))
        prefix = _split_at(document, position)[0] if document is not None else None
        ids = self.acceptance.shown(uri, texts, context, prefix)
        self.recording_cost("shown", started)
        return ids

    def acceptance_today(self, state: FolderState) -> dict | None:
        """Today's acceptance in the folder's current mode (status bar), None when telemetry is off."""
        if not state.settings.telemetry.enabled:
            return None
        started = time.perf_counter()
        self.events.start()
        workspace = str(state.root) if state.root is not None else state.uri
        mode = state.settings.mode.value
        decided, accepted = self.events.today(workspace, mode)
        self.recording_cost("status", started)
        return {"mode": mode, "decided": decided, "accepted": accepted,
                "rate": round(accepted / decided, 3) if decided else None}

    def recording_cost(self, hook: str, started: float) -> None:
        self.recording_ms.setdefault(hook, deque(maxlen=1000)).append((time.perf_counter() - started) * 1000)

    def recording_summary(self) -> dict:
        """What recording costs on the request path, per hook (a request pays dismiss + shown + status)."""
        out: dict[str, Any] = {}
        for hook, values in self.recording_ms.items():
            ordered = sorted(values)
            out[hook] = {"calls": len(ordered), "p50": round(statistics.median(ordered), 4),
                         "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 4),
                         "max": round(ordered[-1], 4)}
        per_request = [out[h]["p50"] for h in ("dismiss", "shown", "status") if h in out]
        out["perRequestP50"] = round(sum(per_request), 4) if per_request else None
        return out

    def stop_all(self, timeout: float = 10.0) -> bool:
        """Stop watching, cancel requests, let background work stop between chunks (priming saves
        what it wrote) within ``timeout``; returns whether the workers ended in time. Idempotent."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()
        stopped = self.scheduler.stop(timeout)
        engine = self.engine_if_loaded()
        if engine is not None:
            engine.close()  # a supervised llama-server goes with us
        self.events.close()  # what is queued is written
        return stopped


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the LSP's line breaks (str.splitlines also splits at \f, U+2028, ...)


def _split_at(document, position: types.Position) -> tuple[str, str]:
    """The document's text before and after ``position`` (clamped to the document). Lines and
    columns are counted as the LSP counts them, not with pygls's ``lines`` (``str.splitlines``, so a
    form feed or U+2028 above the cursor would move it a line up)."""
    source = document.source
    start = 0
    if position.line > 0:
        previous = next(itertools.islice(_LINE_BREAK.finditer(source), position.line - 1, None), None)
        if previous is None:  # past the last line
            return source, ""
        start = previous.end()
    end = _LINE_BREAK.search(source, start)
    offset = start + _column(document, source[start:end.start() if end is not None else len(source)], position.character)
    return source[:offset], source[offset:]


def _column(document, line: str, character: int) -> int:
    """Code points of ``line`` before the client's ``character`` (in the negotiated encoding, UTF-16
    by default); a column inside a surrogate pair counts the whole character, past the end the line's end."""
    if line.isascii():
        return max(0, min(character, len(line)))
    units = 0
    for index, char in enumerate(line):
        if units >= character:
            return index
        units += document.position_codec.client_num_units(char)
    return len(line)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


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
        ls.expect_settings(list(ls.folders.values()))  # pulled once the client sends `initialized`

    @server.feature(types.INITIALIZED)
    async def initialized(ls: TitansServer, params: types.InitializedParams) -> None:
        states = list(ls.folders.values())
        await ls.pull_settings(states)
        for state in states:
            ls.open_folder(state)
            ls.send_status(state, force=True)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    async def folders_changed(ls: TitansServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        for folder in params.event.removed:
            ls.close_folder(folder.uri)
        added = [ls.add_folder(folder.uri) for folder in params.event.added]
        ls.expect_settings(added)
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
        first_outside = NO_FOLDER not in ls.folders
        state = ls.folder_for(params.text_document.uri)
        if state.uri == NO_FOLDER and first_outside:
            # The first file outside every workspace folder (or opened without one) gets the user's
            # settings (pulled unscoped), also when there are workspace folders.
            ls.expect_settings([state])
            asyncio.ensure_future(ls.pull_settings([state]))

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: TitansServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.scheduler.requests.cancel_document(params.text_document.uri)  # the document moved on: older requests are stale

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: TitansServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.scheduler.requests.cancel_document(uri)
        ls.acceptance.closed(uri)
        ls.folder_for(uri).workspace.close_document(uri)

    @server.feature(CURSOR_NOTIFICATION)
    async def cursor(ls: TitansServer, params: Any) -> None:
        try:
            cursor = CursorParams.from_wire(params)
        except ProtocolError as exc:
            log.warning("ignoring %s", exc)
            return
        await ls.prepare(cursor)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: TitansServer, params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
        invoked = params.context is not None and params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        # Automatic triggers (while typing) answer early: one item, ending at the end of the line.
        uri = params.text_document.uri
        completion, state = await ls.complete(uri, params.position, 3 if invoked else 1, automatic=not invoked)
        if completion is None:
            return None
        here = types.Range(start=params.position, end=params.position)
        texts = [text for text in completion.items if text]
        ids = ls.record_shown(uri, params.position, state, completion, texts, "invoked" if invoked else "automatic")
        # The client runs an item's command after the user accepts it: that is the `accepted` event.
        commands = [types.Command(title="titans-lsp: accepted", command=CMD_ACCEPTED,
                                  arguments=AcceptedArgs(item).to_arguments()) for item in ids] if ids else [None] * len(texts)
        items = [types.InlineCompletionItem(insert_text=text, range=here, command=command)
                 for text, command in zip(texts, commands)]
        return types.InlineCompletionList(items=items)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: TitansServer, params: types.CompletionParams) -> types.CompletionList | None:
        uri = params.text_document.uri
        result, state = await ls.complete(uri, params.position, 1, kind="completion")
        if result is None or not result.text:
            return types.CompletionList(is_incomplete=True, items=[])
        text = result.text
        ids = ls.record_shown(uri, params.position, state, result, [text], "completion")
        accepted = types.Command(title="titans-lsp: accepted", command=CMD_ACCEPTED,
                                 arguments=AcceptedArgs(ids[0]).to_arguments()) if ids else None
        label = text.strip().splitlines()[0] if text.strip() else text
        here = types.Range(start=params.position, end=params.position)
        item = types.CompletionItem(
            label=label[:80], kind=types.CompletionItemKind.Text, detail=f"titans-lsp ({result.mode})",
            text_edit=types.TextEdit(range=here, new_text=text), filter_text=text, sort_text="0",
            insert_text_format=types.InsertTextFormat.PlainText, preselect=True, command=accepted)
        return types.CompletionList(is_incomplete=True, items=[item])

    def target_folders(ls: TitansServer, args: FolderArgs) -> list[FolderState]:
        """The folder named in the arguments, else every workspace folder."""
        if args.folder is None:
            return [s for s in ls.folders.values() if s.root is not None]
        state = ls.folders.get(args.folder)
        if state is None or state.root is None:
            raise ProtocolError(f"{args.folder} is not a workspace folder of this server")
        return [state]

    async def run_jobs(ls: TitansServer, job: Callable, states: list[FolderState], *args) -> list:
        futures = [ls.scheduler.in_background(job, ls, state, *args) for state in states]
        results = []
        for future in futures:
            try:
                results.append(await asyncio.shield(asyncio.wrap_future(future)))
            except Exception as exc:  # noqa: BLE001 - reported in the result
                results.append({"error": f"{type(exc).__name__}: {exc}"})
        return results

    def command_folders(ls: TitansServer, command: str, args: Any) -> tuple[FolderArgs, list[FolderState]]:
        """Parsed arguments and the folders they name; bad ones are answered -32602 with the reason."""
        try:
            parsed = FolderArgs.from_command(command, args)
            return parsed, target_folders(ls, parsed)
        except ProtocolError as exc:
            raise JsonRpcInvalidParams(message=str(exc)) from None

    @server.command(CMD_PRIME)
    async def prime_workspace(ls: TitansServer, *args: Any) -> dict:
        parsed, states = command_folders(ls, CMD_PRIME, args)
        return {"folders": await run_jobs(ls, jobs.prime, states, parsed.force)}

    @server.command(CMD_RESET)
    async def reset_memory(ls: TitansServer, *args: Any) -> dict:
        _, states = command_folders(ls, CMD_RESET, args)
        return {"folders": await run_jobs(ls, jobs.reset, states)}

    @server.command(CMD_STATUS)
    def status(ls: TitansServer, *args: Any) -> dict:
        return ls.status()

    @server.command(CMD_ACCEPTED)
    def accepted(ls: TitansServer, *args: Any) -> dict:
        """The client ran an item's command: the user accepted it (bad arguments are answered -32602)."""
        try:
            parsed = AcceptedArgs.from_command(args)
        except ProtocolError as exc:
            raise JsonRpcInvalidParams(message=str(exc)) from None
        started = time.perf_counter()
        recorded = ls.acceptance.accepted(parsed.id, parsed.chars)
        ls.recording_cost("accept", started)
        uri = ls.acceptance.document_of(parsed.id)
        if not recorded:
            log.debug("accept of unknown or already accepted item %s", parsed.id)
        elif uri is not None:
            ls.send_status(ls.folder_for(uri), force=True)  # the status bar's acceptance rate moves
        return {"recorded": recorded}

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: TitansServer, params: Any = None) -> None:
        # Background work stops and saves before the answer, so `exit` right after loses nothing.
        stopped = await asyncio.get_running_loop().run_in_executor(None, ls.stop_all, 10.0)
        log.info("shutdown: background work %s", "stopped" if stopped else "still running after 10 s")

    return server
