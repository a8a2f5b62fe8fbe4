"""How LSP messages reach the server: framing, stdio, and TCP with one client and an optional token.

pygls's own read loop cannot recover from one frame with a wrong ``Content-Length`` (every later
message is read as garbage and the server goes deaf) and answers invalid JSON with nothing. This
module replaces it:

- :class:`Framer` splits the byte stream into message bodies. A header block that is not
  ``Name: value`` lines, or a body that overruns into the next frame's header, is a framing error:
  the bytes up to the next ``Content-Length:`` header are dropped with a log line saying why, and
  reading goes on from there (resynchronised).
- :func:`dispatch` answers a body that is not JSON with -32700 and one that is not a JSON-RPC
  object with -32600 (``id`` null, as JSON-RPC says when the id cannot be read).
- :func:`serve_stdio` and :func:`serve_tcp` run the loop and return the process's exit code (the
  protocol's: 0 after ``shutdown`` + ``exit``, 1 for ``exit`` alone or a lost client).

TCP listens for one editor: a second connection while one is served gets a JSON-RPC error saying
so and is closed. Binding anything but a loopback address requires a token (``--auth-token-file``);
the client sends it in ``initialize``'s ``initializationOptions.authToken`` (checked by
:class:`titans_lsp.server.TitansProtocol`), and a connection that does not authenticate is closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import sys
import threading
from collections.abc import Callable
from typing import Any

from pygls.protocol import JsonRPCProtocol

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024 * 1024  # a frame larger than this is a framing error, not an allocation
HEADER_RE = re.compile(rb"Content-Length: *(\d+)\r\n(?:[A-Za-z][A-Za-z0-9-]*: *[^\r\n]*\r\n)*\r\n")
HEADER_LINE_RE = re.compile(rb"[A-Za-z][A-Za-z0-9-]*: *[^\r\n]*")
CONTENT_LENGTH = b"Content-Length:"
PARSE_ERROR, INVALID_REQUEST = -32700, -32600
AUTH_TIMEOUT_S = 30.0  # an unauthenticated TCP connection must send initialize within this time


class Framer:
    """Incremental LSP frame parser with resynchronisation. ``feed`` bytes, then take complete
    bodies from ``next_body`` until it returns None (more bytes needed)."""

    def __init__(self, max_body: int = MAX_BODY_BYTES):
        self.buffer = bytearray()
        self.max_body = max_body
        self.errors = 0  # framing errors seen (for tests and the log)
        self._scanned = 0  # how far the current frame's body was searched for a next header

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_body(self) -> bytes | None:
        while True:
            buf = self.buffer
            if not buf:
                return None
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) <= 8192 and _could_be_header(bytes(buf)):
                    return None  # a header still arriving
                self._resync("bytes that are not an LSP header")
                continue
            length = _content_length(bytes(buf[:end + 2]))
            if length is None:
                self._resync(f"a malformed header block {bytes(buf[:min(end, 80)])!r}")
                continue
            if length > self.max_body:
                self._resync(f"Content-Length {length} over the {self.max_body}-byte limit")
                continue
            start = end + 4
            # A complete header inside the declared body means the length was too long: the frame
            # ends where the next one starts (a raw CR LF cannot occur inside a JSON string).
            frm = max(start, self._scanned - 64)
            nxt = HEADER_RE.search(buf, frm, min(len(buf), start + length + 64))
            self._scanned = len(buf)
            if nxt is not None and nxt.start() < start + length:
                body = bytes(buf[start:nxt.start()])
                del buf[:nxt.start()]
                self._scanned = 0
                self.errors += 1
                log.error("framing error: Content-Length %d runs into the next message's header; took the %d bytes "
                          "before it as the body and resynchronised", length, len(body))
                return body
            if len(buf) < start + length:
                return None
            body = bytes(buf[start:start + length])
            del buf[:start + length]
            self._scanned = 0
            return self._split_overrun(body, length)

    def _split_overrun(self, body: bytes, length: int) -> bytes:
        """A body whose end is the start of the next frame's header (the length was a little too
        long): return the part before it and put the header back."""
        if body.rstrip().endswith(b"}"):
            return body
        cut = body.rfind(b"}") + 1
        rest = body[cut:]
        if cut and rest and (CONTENT_LENGTH.startswith(rest[:len(CONTENT_LENGTH)]) or rest.startswith(CONTENT_LENGTH)) \
                and _could_be_header(rest):
            self.buffer[:0] = rest
            self.errors += 1
            log.error("framing error: Content-Length %d runs into the next message's header; took the %d bytes "
                      "before it as the body and resynchronised", length, cut)
            return body[:cut]
        return body

    def _resync(self, why: str) -> None:
        """Drop bytes up to the next ``Content-Length:`` (keeping a partial one at the very end)."""
        buf = self.buffer
        at = buf.find(CONTENT_LENGTH, 1)
        if at < 0:
            at = len(buf)
            for k in range(min(len(CONTENT_LENGTH) - 1, len(buf) - 1), 0, -1):
                if buf.endswith(CONTENT_LENGTH[:k]):
                    at = len(buf) - k
                    break
        self.errors += 1
        self._scanned = 0
        log.error("framing error: %s; dropped %d bytes up to the next Content-Length header", why, at)
        del buf[:at]


PARTIAL_LINE_RE = re.compile(rb"(?:[A-Za-z][A-Za-z0-9-]*(?::[^\r\n]*)?)?\r?")


def _could_be_header(data: bytes) -> bool:
    """Whether an incomplete header block so far is header lines (the last one may be partial)."""
    lines = data.split(b"\r\n")
    return all(HEADER_LINE_RE.fullmatch(line) for line in lines[:-1]) and PARTIAL_LINE_RE.fullmatch(lines[-1]) is not None


def _content_length(header: bytes) -> int | None:
    """The Content-Length of a header block of well-formed lines, else None."""
    length = None
    for line in header.split(b"\r\n")[:-1]:
        if not HEADER_LINE_RE.fullmatch(line):
            return None
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            if not value.isdigit():
                return None
            length = int(value)
    return length


# ---- dispatch -------------------------------------------------------------------------------------
def send_error(protocol: JsonRPCProtocol, code: int, message: str, msg_id: Any = None) -> None:
    protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})


def dispatch(protocol: JsonRPCProtocol, body: bytes) -> None:
    """Decode one body and hand it to the protocol; bad JSON gets -32700, a non-message -32600."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("invalid JSON body (%d bytes): %s", len(body), exc)
        send_error(protocol, PARSE_ERROR, f"Parse error: {exc}")
        return
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0" or not (
            isinstance(data.get("method"), str) or "result" in data or "error" in data):
        log.warning("not a JSON-RPC 2.0 message: %.200r", data)
        msg_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), (int, str)) else None
        send_error(protocol, INVALID_REQUEST, "Invalid Request: expected a JSON-RPC 2.0 request, notification or "
                                              "response object", msg_id)
        return
    try:
        message = json.loads(body, object_hook=protocol.structure_message)
    except Exception as exc:  # noqa: BLE001 - structure_message already answered a request it could not read
        log.warning("cannot read %s message: %s", data.get("method"), exc)
        return
    try:
        protocol.handle_message(message)
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001 - one message must never end the loop
        log.exception("failed to handle %s", data.get("method"))


async def message_loop(read: Callable[[], Any], protocol: JsonRPCProtocol, stop: threading.Event) -> int | None:
    """Read chunks with ``read()`` (an awaitable of bytes; b"" at the end) and dispatch each message.
    Returns the exit code ``exit`` asked for, or None when the stream ended."""
    framer = Framer()
    while not stop.is_set():
        chunk = await read()
        if not chunk:
            if framer.buffer:
                log.warning("the client closed the stream in the middle of a message (%d bytes unread)",
                            len(framer.buffer))
            return None
        framer.feed(chunk)
        while (body := framer.next_body()) is not None:
            try:
                dispatch(protocol, body)
            except SystemExit as exc:
                return int(exc.code or 0)
    return None


def lost_client_code(protocol: JsonRPCProtocol) -> int:
    """The exit code when the client went away without ``exit``: 0 after ``shutdown``, else 1."""
    return 0 if getattr(protocol, "_shutdown", False) else 1


# ---- stdio ------------------------------------------------------------------------------------------
class _StdoutWriter:
    def __init__(self, stream):
        self.stream = stream

    def write(self, data: bytes) -> None:
        self.stream.write(data)
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def serve_stdio(server, stdin=None, stdout=None) -> int:
    """Serve one editor over stdin/stdout; returns the exit code."""
    stdin = stdin or sys.stdin.buffer
    protocol = server.protocol
    protocol.set_writer(_StdoutWriter(stdout or sys.stdout.buffer))
    stop = threading.Event()
    server._stop_event = stop

    async def main() -> int | None:
        loop = asyncio.get_running_loop()
        reader = getattr(stdin, "read1", stdin.read)
        return await message_loop(lambda: loop.run_in_executor(None, reader, 65536), protocol, stop)

    try:
        code = asyncio.run(main())
    except BrokenPipeError:
        log.error("the connection to the client is lost (broken pipe)")
        code = None
    return lost_client_code(protocol) if code is None else code


# ---- TCP --------------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The token in ``path`` (surrounding whitespace stripped); ValueError when it is empty or short."""
    from pathlib import Path

    token = Path(path).read_text(encoding="utf-8").strip()
    if len(token) < 16:
        raise ValueError(f"the token in {path} must be at least 16 characters (e.g. `openssl rand -hex 32 > {path}`)")
    return token


def _frame(payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def serve_tcp(server, host: str, port: int, on_listening: Callable[[str, int], None] | None = None) -> int:
    """Serve one editor on ``host:port``; returns the exit code once that client is done. A second
    connection meanwhile is refused with a JSON-RPC error; one that fails authentication is closed
    and the server waits for the next."""
    protocol = server.protocol
    stop = threading.Event()
    server._stop_event = stop
    result: dict[str, int | None] = {}

    async def main() -> None:
        done = asyncio.Event()
        busy = asyncio.Lock()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            if busy.locked():
                log.warning("refused a second connection from %s: this server already serves one editor", peer)
                writer.write(_frame({"jsonrpc": "2.0", "id": None, "error": {
                    "code": INVALID_REQUEST, "message": "titans-lsp: this server already serves another editor "
                                                        "(one client per server); start another server"}}))
                await writer.drain()
                writer.close()
                return
            async with busy:
                log.info("client connected from %s", peer)
                protocol.set_writer(writer)
                code = await _serve_connection(server, reader, writer, stop)
                if code == "unauthenticated":
                    log.warning("closed the connection from %s: it did not authenticate", peer)
                    writer.close()
                    return
                result["code"] = code
                writer.close()
                done.set()

        tcp = await asyncio.start_server(connection, host, port, limit=2 ** 20)
        bound = tcp.sockets[0].getsockname()
        if on_listening is not None:
            on_listening(bound[0], bound[1])
        async with tcp:
            await done.wait()

    asyncio.run(main())
    code = result.get("code")
    return lost_client_code(protocol) if code is None else code


async def _serve_connection(server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            stop: threading.Event) -> int | None | str:
    """One client's message loop; "unauthenticated" when a token is required and it never gave it."""
    protocol = server.protocol
    loop_task = asyncio.ensure_future(message_loop(lambda: reader.read(65536), protocol, stop))
    if getattr(server, "auth_token", None):
        deadline = asyncio.get_running_loop().time() + AUTH_TIMEOUT_S
        while not loop_task.done() and not server.authenticated:
            if server.auth_failed or asyncio.get_running_loop().time() > deadline:
                loop_task.cancel()
                server.auth_failed = False
                protocol._shutdown = False
                return "unauthenticated"
            await asyncio.sleep(0.05)
    try:
        code = await loop_task
    except (ConnectionError, asyncio.CancelledError):
        code = None
    if getattr(server, "auth_token", None) and not server.authenticated:
        return "unauthenticated"  # it went away without authenticating: wait for the next client
    return code
