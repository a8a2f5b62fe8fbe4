"""`titans-lsp bench --server`: the typing trace through the real server over stdio.

An LSP client (pygls) starts ``titans-lsp serve``, opens each file of the trace, puts the cursor
where the typing starts (``titans/cursor``, as the editor plugins do; the server pre-warms that
prompt) and waits ``think`` seconds, sends every keystroke as a full-text ``didChange``, and after the debounce an Automatic
``textDocument/inlineCompletion``; the next keystroke sends ``$/cancelRequest`` for an open
request. Latency is measured client-side from request to response. Per-request token counts come
from the server's ``titans/status`` notification (``lastCompletion``, which names the document
and version it answered, so figures are matched to their request whichever of the response and
the notification arrives first); peak RSS from the server process's ``VmHWM``.

With ``events_db`` the server records its acceptance events there (titansLsp.telemetry; off
otherwise, so a bench never writes into the user's store) and the client plays the user who accepts
a suggestion exactly when the ground truth (the file's real text after the cursor) starts with it:
it runs the item's ``titans-lsp.accepted`` command, as an editor does on Tab.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from titans_lsp.bench import FileTrace, RequestRecord, start_of
from titans_lsp.protocol import CMD_STATUS, CURSOR_NOTIFICATION, STATUS_NOTIFICATION, CompletionReport, CursorParams


class BenchClient(LanguageClient):
    def __init__(self, settings: dict):
        super().__init__("titans-lsp-bench", "0")
        self.settings = settings
        self.token_figures: dict[tuple[str, int], CompletionReport] = {}  # (uri, version) -> the server's lastCompletion
        self.shown = 0  # items answered (events_db: suggestions the replayed user saw)
        self.accepts = 0  # items the replayed user accepted (ground truth starts with them)

        @self.feature(types.WORKSPACE_CONFIGURATION)
        def configuration(params: types.ConfigurationParams):
            return [self.settings for _ in params.items]

        @self.feature(STATUS_NOTIFICATION)
        def status(params):
            report = CompletionReport.from_wire(params)
            if report is not None and report.version is not None:
                self.token_figures[(report.uri, report.version)] = report

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create_progress(params):
            return None

        for method in (types.WINDOW_SHOW_MESSAGE, types.WINDOW_LOG_MESSAGE, types.PROGRESS):
            self.feature(method)(lambda params: None)


async def replay_server(traces: list[FileTrace], root: Path, mode: str, serve_args: list[str], debounce: float,
                        speed: float = 1.0, prewarm: bool = True, think: float = 0.0, events_db: str | None = None,
                        figures: dict | None = None) -> tuple[list[RequestRecord], float | None]:
    """Replay ``traces`` against a fresh server in ``mode``; returns (records, server peak RSS MiB).
    ``prewarm``: send ``titans/cursor`` at the typing position when a file opens; ``think``:
    seconds between opening the file and the first key. ``events_db``: record acceptance events
    there, accepting what the ground truth starts with; ``figures`` then gets the counts and the
    server's own cost of recording them (its status's ``telemetry``)."""
    client = BenchClient({"mode": mode, "telemetry": {"enabled": events_db is not None}})
    client.accept_truth = events_db is not None
    if events_db is not None:
        serve_args = [*serve_args, "--events-db", events_db]
    await client.start_io(sys.executable, "-m", "titans_lsp", "serve", *serve_args)
    records: list[RequestRecord] = []
    try:
        # The server pulls its settings (the mode) with workspace/configuration only from a client
        # that declares it can answer; without this every mode ran as the default, concat.
        capabilities = types.ClientCapabilities(workspace=types.WorkspaceClientCapabilities(configuration=True))
        await client.initialize_async(types.InitializeParams(
            capabilities=capabilities, root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)]))
        client.initialized(types.InitializedParams())
        warm_up_error = await _warm_up(client, root)
        answered_modes = await _modes_answered(client)
        if answered_modes == [mode]:
            for trace in traces:
                await _replay_file(client, root, trace, debounce, speed, records, prewarm, think)
        rss = _peak_rss_mb(client._server.pid) if client._server is not None else None
        if figures is not None and events_db is not None:
            status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command=CMD_STATUS))
            figures.update(shown=client.shown, accepted=client.accepts, telemetry=_plain(status).get("telemetry"))
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()
    if not answered_modes and warm_up_error:
        raise RuntimeError(f"{mode}: the warm-up request failed: {warm_up_error}")
    if answered_modes != [mode]:
        raise RuntimeError(f"the server answered the warm-up in mode {answered_modes or 'unknown'}, not {mode!r}: "
                           "it did not apply the bench's settings")
    return records, rss


async def _modes_answered(client: BenchClient, timeout: float = 5.0) -> list[str]:
    """The modes of the completions the server reported so far (waiting up to ``timeout`` for the first)."""
    deadline = time.perf_counter() + timeout
    while not client.token_figures and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    return sorted({report.mode for report in client.token_figures.values()})


async def fill_token_figures(client: BenchClient, requests: list[tuple[tuple[str, int], RequestRecord]],
                             timeout: float = 5.0) -> int:
    """Copy the server's figures onto the answered records (waiting up to ``timeout`` for status
    notifications still in flight); returns how many answered records got none."""
    answered = [(key, record) for key, record in requests if record.latency_ms is not None]
    deadline = time.perf_counter() + timeout
    while any(key not in client.token_figures for key, _ in answered) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    missing = 0
    for key, record in answered:
        report = client.token_figures.get(key)
        if report is None:
            missing += 1
            continue
        record.reused, record.prefilled = report.reused, report.prefilled
        record.decoded, record.accepted = report.decoded, report.accepted
        record.engine_ms, record.timings_ms = report.engine_ms, dict(report.timings)
        record.generated = record.decoded + 1
    return missing


async def _request(client: BenchClient, uri: str, prefix: str, record: RequestRecord, truth: str | None = None) -> str:
    """Send one Automatic inline completion; returns its message id (for $/cancelRequest). With
    ``truth`` (the real text after the cursor) and ``client.accept_truth``, an answered item that the
    truth starts with is accepted: its command runs, as an editor's Tab does."""
    position = _position(prefix)
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=position["line"], character=position["character"]),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
    msg_id = str(uuid.uuid4())
    record.sent = time.perf_counter()  # before sending: the server may answer before send_request returns
    future = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)

    def done(fut) -> None:
        record.finished = time.perf_counter()
        if fut.cancelled() or fut.exception() is not None:
            record.cancelled = True
        elif truth is not None and getattr(client, "accept_truth", False):
            _accept_if_true(client, fut.result(), truth)

    future.add_done_callback(done)
    record.future = asyncio.wrap_future(future)
    record.future.add_done_callback(lambda f: f.cancelled() or f.exception())  # a cancel answer is expected
    return msg_id


async def _replay_file(client, root: Path, trace: FileTrace, debounce: float, speed: float, records,
                       prewarm: bool = True, think: float = 0.0) -> None:
    uri = (root / trace.path).as_uri()
    prefix0, suffix0 = start_of(trace)
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=0, text=prefix0 + suffix0)))
    if prewarm:
        position = _position(prefix0)
        client.protocol.notify(CURSOR_NOTIFICATION, CursorParams(uri, position["line"], position["character"]).to_wire())
    t0 = time.perf_counter() + think / speed
    first_request = True
    open_request: tuple[str, RequestRecord] | None = None
    sent: list[tuple[tuple[str, int], RequestRecord]] = []  # (uri, document version) of each request
    for i, key in enumerate(trace.keys):
        await _sleep_until(t0 + key.at / speed)
        if open_request is not None and open_request[1].finished is None:
            client.protocol.notify("$/cancelRequest", types.CancelParams(id=open_request[0]))
        open_request = None
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=i + 1),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=key.prefix + key.suffix)]))
        next_at = trace.keys[i + 1].at if i + 1 < len(trace.keys) else key.at + 10.0
        if next_at - key.at > debounce:
            await _sleep_until(t0 + (key.at + debounce) / speed)
            record = RequestRecord(sent=time.perf_counter(), path=trace.path, prefix=key.prefix,
                                   first_in_file=first_request)
            first_request = False
            records.append(record)
            sent.append(((uri, i + 1), record))
            open_request = (await _request(client, uri, key.prefix, record, key.suffix), record)
    pending = [r.future for r in records if getattr(r, "future", None) is not None and not r.future.done()]
    if pending:
        await asyncio.wait(pending)
    missing = await fill_token_figures(client, sent)
    if missing:
        print(f"[bench] {trace.path}: no token figures from the server for {missing} answered requests",
              file=sys.stderr, flush=True)
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))


async def _warm_up(client, root: Path) -> str | None:
    """Load the model (first request) before the trace starts; not measured. Returns the request's
    error, if it failed, so that a broken backend is reported as such rather than as a wrong mode."""
    uri = (root / "__bench_warmup__.py").as_uri()
    text = "def load_config(path):\n    return "
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=0, text=text)))
    record = RequestRecord(sent=time.perf_counter())
    await _request(client, uri, text, record)
    error = None
    try:
        await asyncio.wait_for(record.future, timeout=600)
    except Exception as exc:  # noqa: BLE001 - reported by the caller when no completion came back
        error = f"{type(exc).__name__}: {exc}"
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    return error


def _accept_if_true(client: BenchClient, result, truth: str) -> None:
    """The replayed user: take the first suggestion the ground truth starts with (run its command)."""
    items = getattr(result, "items", None) or []
    client.shown += len(items)
    for item in items:
        text = item.insert_text if isinstance(item.insert_text, str) else None
        if text and truth.startswith(text) and item.command is not None:
            client.accepts += 1
            client.protocol.send_request(types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams(
                command=item.command.command, arguments=item.command.arguments))
            return


def _plain(value):
    from titans_lsp.protocol import to_plain

    value = to_plain(value)
    return value if isinstance(value, dict) else {}


def _position(prefix: str) -> dict:
    """The LSP position at the end of ``prefix`` (characters counted in UTF-16 code units, as LSP does)."""
    line = prefix[prefix.rfind("\n") + 1:]
    return {"line": prefix.count("\n"), "character": len(line.encode("utf-16-le")) // 2}


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None
