"""Where the server's work runs, and when it gives way.

Threads, and why:
  - the asyncio loop (pygls): reads messages, answers cheap requests, never runs the model;
  - ``inference`` (one worker): loads the model, then runs completions and pre-warms one at a time;
    each carries a cancel Event the decoder checks between steps;
  - ``background`` (one worker): indexing, priming, re-indexing changed files and saving state.
    Priming shares the model with completions through the engine's lock and hands it over between
    chunks while the user types (:class:`TypingPause`).

:class:`RequestRegistry` keeps the cancel event of the newest request per (kind, document), so a
newer keystroke, an edit or ``$/cancelRequest`` stops stale work at its next decoding step.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from titans_lsp.priming import YieldPolicy

log = logging.getLogger(__name__)


class SerialExecutor(concurrent.futures.Executor):
    """One daemon worker thread running jobs in order. Unlike ThreadPoolExecutor its thread does
    not hold up interpreter exit when the client goes away mid-inference; :meth:`shutdown` with
    ``wait`` lets the current job finish (bounded by ``timeout``) so state is not left half-written."""

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

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None) -> bool:
        """Stop after the queued jobs (``cancel_futures``: after the running one); returns whether the
        worker ended within ``timeout``."""
        if cancel_futures:
            while True:
                try:
                    future, *_ = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if future is not None:
                    future.cancel()
        self._jobs.put((None, None, None, None))
        if wait and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()


class RequestRegistry:
    """The cancel event of the newest request per (kind, document URI). Kinds are kept apart
    (``inline``, ``completion``, ``prepare``): VS Code sends inline and plain completion requests
    while typing and one must not cancel the other."""

    def __init__(self):
        self._events: dict[tuple[str, str], threading.Event] = {}

    def start(self, kind: str, uri: str) -> threading.Event:
        """A new request: the older one of the same kind for the document is stale and cancelled."""
        event = threading.Event()
        previous = self._events.get((kind, uri))
        if previous is not None:
            previous.set()
        self._events[(kind, uri)] = event
        return event

    def finish(self, kind: str, uri: str, event: threading.Event) -> None:
        if self._events.get((kind, uri)) is event:
            del self._events[(kind, uri)]

    def cancel_document(self, uri: str) -> None:
        for key in [key for key in self._events if key[1] == uri]:
            self._events.pop(key).set()

    def cancel_kind_except(self, kind: str, uri: str) -> None:
        """Cancel ``kind`` work for every other document (a pre-warm elsewhere must not delay a request)."""
        for key in [key for key in self._events if key[0] == kind and key[1] != uri]:
            self._events.pop(key).set()

    def cancel_all(self) -> None:
        for event in self._events.values():
            event.set()
        self._events.clear()

    def __len__(self) -> int:
        return len(self._events)


class TypingPause:
    """Background priming pauses while the user types: a chunk started between two keystrokes would
    hold the model for up to a second when the next request arrives."""

    def __init__(self, quiet_s: float = 1.0):
        self.quiet_s = quiet_s  # seconds without a completion request before priming resumes
        self.last_request_at = float("-inf")  # time.monotonic() of the latest completion request
        self.inflight = 0  # completion requests received and not answered

    def request_started(self) -> None:
        self.last_request_at = time.monotonic()
        self.inflight += 1

    def request_finished(self) -> None:
        self.inflight -= 1

    def user_active(self) -> bool:
        """A completion is running or waiting, or one was requested within ``quiet_s``."""
        return self.inflight > 0 or time.monotonic() - self.last_request_at < self.quiet_s

    def policy(self, stopping: threading.Event) -> YieldPolicy:
        """Priming's yield policy: give way while the user is active or the server stops."""

        def wait() -> None:
            while self.user_active() and not stopping.is_set():
                time.sleep(0.02)

        return YieldPolicy(should_yield=lambda: self.user_active() or stopping.is_set(), wait=wait)


class Scheduler:
    """The server's two workers, its request registry, the typing pause and the stop flag."""

    def __init__(self):
        self.inference = SerialExecutor("titans-inference")
        self.background = SerialExecutor("titans-background")
        self.requests = RequestRegistry()
        self.typing = TypingPause()
        self.stopping = threading.Event()

    def in_background(self, job: Callable, *args: Any) -> concurrent.futures.Future:
        """Run ``job(*args)`` on the background worker; a failure is logged (and kept in the future)."""

        def guarded() -> Any:
            try:
                return job(*args)
            except Exception as exc:
                log.exception("background job %s failed: %s", getattr(job, "__name__", job), exc)
                raise

        return self.background.submit(guarded)

    def priming_policy(self) -> YieldPolicy:
        return self.typing.policy(self.stopping)

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel every request, ask background work to stop between chunks, and wait (bounded)
        for both workers to finish what they are doing; returns whether they did in time."""
        self.stopping.set()
        self.requests.cancel_all()
        deadline = time.monotonic() + timeout
        done = self.background.shutdown(cancel_futures=True, timeout=timeout)
        done = self.inference.shutdown(cancel_futures=True, timeout=max(0.0, deadline - time.monotonic())) and done
        return done
