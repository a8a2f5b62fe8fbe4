"""What the HTTP backends share: a cancellable server-sent-events stream over httpx, with
timeouts and retries, and the collector that turns streamed tokens into a GenerationResult with
the same rules as the in-process decoder (end tokens, healed text, the stop predicate, max tokens).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from titans_lsp.backends.base import BackendError, GenerateCall
from titans_lsp.model.generation import Cancelled, GenerationResult

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 502, 503, 504}  # answered again after a pause (the server is busy or starting)


class Collector:
    """Accumulates one generation's tokens (or text pieces) and decides when it is over."""

    def __init__(self, tokenizer, call: GenerateCall, end_ids: set[int], seed: list[int] | None = None):
        self.tokenizer, self.call, self.end_ids = tokenizer, call, end_ids
        self.ids: list[int] = list(seed or [])
        self.pieces: list[str] = []  # text deltas, for servers that stream text only
        self.text = ""
        self.stop_reason = "max_tokens"
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self._update()

    @property
    def count(self) -> int:
        return len(self.ids) if self.ids else len(self.pieces)

    def _update(self) -> str:
        full = self.tokenizer.decode(self.ids) if self.ids else "".join(self.pieces)
        heal = self.call.heal_text
        self.text = full[len(heal):] if heal and full.startswith(heal) else full
        return full

    def _after(self) -> bool:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        full = self._update()
        heal = self.call.heal_text
        # As the in-process decoder: the stop rule waits until the healed text is produced (or missed).
        healed = not heal or full.startswith(heal) or not heal.startswith(full)
        if healed and self.call.stop is not None and self.call.stop(self.text):
            self.stop_reason = "stop"
            return True
        return self.count >= self.call.max_new_tokens

    def add_token(self, token: int) -> bool:
        """One streamed token id; True when generation is over."""
        if token in self.end_ids:
            self.stop_reason = "eos"
            return True
        self.ids.append(int(token))
        return self._after()

    def add_text(self, piece: str) -> bool:
        """One streamed text delta (servers that do not return token ids); True when over."""
        if not piece:
            return False
        self.pieces.append(piece)
        return self._after()

    def result(self, prefilled: int = 0, reused: int = 0, decoded: int | None = None,
               prefill_s: float | None = None, decode_s: float | None = None) -> GenerationResult:
        now = time.perf_counter()
        first = self.first_at or now
        return GenerationResult(
            token_ids=list(self.ids), text=self.text, prefilled=prefilled, reused=reused,
            decoded=max(0, self.count - 1) if decoded is None else decoded, stop_reason=self.stop_reason,
            prefill_s=first - self.started if prefill_s is None else prefill_s,
            decode_s=now - first if decode_s is None else decode_s)


@dataclass
class StreamTarget:
    """Where and how to POST: the base URL, headers (never logged), and a label for messages."""

    label: str  # e.g. "llama-server at http://127.0.0.1:8123"
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    fix: str = "check that the server is running"  # what an unreachable server's message tells the user


def _socket_of(response: httpx.Response) -> socket.socket | None:
    stream = response.extensions.get("network_stream")
    try:
        return stream.get_extra_info("socket") if stream is not None else None
    except Exception:  # noqa: BLE001 - no socket to shut: the close below still ends the stream
        return None


class _CancelWatch:
    """While a stream is open, shut its socket down when the request is cancelled: the blocked read
    returns at once and the server sees the connection close (it stops generating)."""

    def __init__(self, response: httpx.Response, cancel: threading.Event | None):
        self.response, self.cancel = response, cancel
        self.finished = threading.Event()
        self.thread = None
        if cancel is not None:
            self.thread = threading.Thread(target=self._watch, name="titans-stream-cancel", daemon=True)
            self.thread.start()

    def _watch(self) -> None:
        while not self.finished.wait(0.01):
            if self.cancel.is_set():
                sock = _socket_of(self.response)
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return

    def close(self) -> None:
        self.finished.set()


def sse_events(client: httpx.Client, target: StreamTarget, path: str, body: dict, cancel: threading.Event | None,
               retries: int) -> Iterator[dict]:
    """POST ``body`` to ``target.url + path`` with ``stream`` on and yield each event's JSON. A
    connection failure or a busy answer before the first event is retried with backoff (0.25 s,
    0.5 s, ...); after that, or when retries run out, it raises BackendError with a one-line
    message. Raises Cancelled as soon as ``cancel`` is set (the stream is closed)."""
    url = target.url + path
    attempt = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        try:
            with client.stream("POST", url, json=body, headers=target.headers) as response:
                watch = _CancelWatch(response, cancel)
                try:
                    if response.status_code >= 400:
                        response.read()
                        if response.status_code in RETRY_STATUS and attempt < retries:
                            raise _Retry(f"HTTP {response.status_code}")
                        raise BackendError(f"{target.label} answered HTTP {response.status_code}: {_error_text(response)}")
                    streamed = False  # a data line came: the body is an event stream
                    for line in response.iter_lines():
                        if cancel is not None and cancel.is_set():
                            raise Cancelled()
                        data = _sse_data(line)
                        if data is None:
                            continue
                        streamed = True
                        if data == "[DONE]":
                            return
                        try:
                            event = json.loads(data)
                        except json.JSONDecodeError:
                            event = None
                        if not isinstance(event, dict):
                            raise BackendError(unreadable(target, data))
                        if "error" in event:
                            raise BackendError(f"{target.label} reported an error: {_short(event['error'])}")
                        attempt = retries  # an answer has started: no more retries
                        yield event
                    if not streamed:  # a web page, or a server that ignored "stream": not an empty completion
                        kind = response.headers.get("content-type", "no content type").split(";")[0]
                        raise BackendError(f"{target.label} answered without an event stream ({kind}): check that "
                                           "the URL is the model server's API")
                    return
                finally:
                    watch.close()
        except _Retry as exc:
            reason = str(exc)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if cancel is not None and cancel.is_set():
                raise Cancelled() from None
            if attempt >= retries:
                raise BackendError(f"{target.label} is unreachable ({type(exc).__name__}: {_short(exc)}): {target.fix}") from None
            reason = type(exc).__name__
        except httpx.TimeoutException as exc:
            if cancel is not None and cancel.is_set():
                raise Cancelled() from None
            raise BackendError(f"{target.label} timed out ({type(exc).__name__}): it may be overloaded; "
                               "raise --backend-timeout or check the server") from None
        delay = 0.25 * (2 ** attempt)
        attempt += 1
        log.info("%s: %s; retry %d/%d in %.2f s", target.label, reason, attempt, retries, delay)
        if cancel is not None:
            if cancel.wait(delay):
                raise Cancelled()
        else:
            time.sleep(delay)


class _Retry(Exception):
    pass


def unreadable(target: StreamTarget, data: object) -> str:
    """The message for an event that is not what the protocol says."""
    return f"{target.label} sent an unreadable event: {str(data)[:120]!r}"


def _sse_data(line: str) -> str | None:
    line = line.strip()
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _short(value: object) -> str:
    if isinstance(value, dict):
        value = value.get("message") or value
    text = str(value).strip().splitlines()
    return text[0][:300] if text else ""


def _error_text(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except (json.JSONDecodeError, ValueError):
        return _short(response.text) or response.reason_phrase
    if isinstance(payload, dict):
        return _short(payload.get("error") or payload.get("message") or payload)
    return _short(payload)
