"""What the server tells the editor besides answers: log lines (``window/logMessage``) and
work-done progress for long jobs. Both are driven from worker threads and go through the event
loop (``TitansServer.call_in_loop``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

from lsprotocol import types

if TYPE_CHECKING:
    from titans_lsp.server import TitansServer

log = logging.getLogger(__name__)


class ClientLogHandler(logging.Handler):
    """Forwards titans_lsp log records to the client as window/logMessage."""

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
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            pass


class LspProgress:
    """LSP work-done progress driven from a background thread (a no-op if the client has none)."""

    def __init__(self, server: "TitansServer", title: str):
        self.server, self.title = server, title
        self.token = f"titans-lsp/{uuid.uuid4()}"
        self.active = False
        self.last = 0.0

    def __enter__(self) -> "LspProgress":
        server = self.server
        if server.supports_progress and server.loop is not None and not server.scheduler.stopping.is_set():
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
