"""A byte-level LSP client for the hardening tests: it can send what a well-behaved client never
would (wrong Content-Length, invalid JSON, requests out of order) to a real `titans-lsp serve`
process, over stdio or TCP, and read every frame the server writes."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def frame(message: Any, length_delta: int = 0) -> bytes:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % (len(body) + length_delta) + body


def serve_args(model: Path, cache: Path, log: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "titans_lsp", "serve", "--device", "cpu", "--model", str(model),
            "--cache-dir", str(cache), "--log-level", "debug", "--log-file", str(log), *extra]


ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


class RawClient:
    """Frames written with :meth:`send` / :meth:`send_bytes`; frames read by a thread into a queue.
    Requests from the server (workspace/configuration, progress) are answered from ``settings``."""

    def __init__(self, write, read, settings: dict | None = None):
        self._write = write
        self._read = read
        self.settings = settings or {}
        # scopeUri -> seconds: a workspace/configuration request naming it is answered that much later
        self.configuration_delay: dict[str | None, float] = {}
        self.configuration_error: str | None = None  # set: workspace/configuration is answered with this error
        self.incoming: queue.Queue = queue.Queue()
        self.notifications: list[dict] = []
        self.others: list[dict] = []  # responses read while waiting for another one
        self._next_id = 0
        threading.Thread(target=self._reader, daemon=True).start()

    # ---- writing
    def send_bytes(self, data: bytes) -> None:
        self._write(data)

    def send(self, message: dict, length_delta: int = 0) -> None:
        self.send_bytes(frame(message, length_delta))

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: Any = None, timeout: float = 60.0, length_delta: int = 0) -> dict:
        msg_id = self.send_request(method, params, length_delta)
        return self.response(msg_id, timeout)

    def send_request(self, method: str, params: Any = None, length_delta: int = 0) -> int:
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}, length_delta)
        return self._next_id

    # ---- reading
    def response(self, msg_id: Any, timeout: float = 60.0) -> dict:
        """The response with ``msg_id`` (other responses read meanwhile are kept in ``self.others``)."""
        for message in self.others:
            if message.get("id") == msg_id:
                self.others.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no response to {msg_id!r} within {timeout} s")
            try:
                message = self.incoming.get(timeout=left)
            except queue.Empty:
                continue
            if message is None:
                raise EOFError(f"the server closed the stream before answering {msg_id!r}")
            if message.get("id") == msg_id:
                return message
            self.others.append(message)

    def _reader(self) -> None:
        buffer = b""
        while True:
            chunk = self._read()
            if not chunk:
                self.incoming.put(None)
                return
            buffer += chunk
            while True:
                match = re.match(rb"Content-Length: (\d+)\r\n(?:[^\r\n]+\r\n)*\r\n", buffer)
                if not match or len(buffer) < match.end() + int(match.group(1)):
                    break
                end = match.end() + int(match.group(1))
                message = json.loads(buffer[match.end():end])
                buffer = buffer[end:]
                self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        method = message.get("method")
        if method is not None and "id" in message:  # a request from the server
            result: Any = None
            delay = 0.0
            if method == "workspace/configuration":
                items = message.get("params", {}).get("items", [])
                result = [self.settings.get(item.get("scopeUri"), self.settings.get(None, {})) for item in items]
                delay = max((self.configuration_delay.get(item.get("scopeUri"), 0.0) for item in items), default=0.0)
            answer = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            if method == "workspace/configuration" and self.configuration_error is not None:
                answer = {"jsonrpc": "2.0", "id": message["id"],
                          "error": {"code": -32603, "message": self.configuration_error}}
            if delay:
                threading.Timer(delay, self.send, (answer,)).start()
            else:
                self.send(answer)
        elif method is not None:
            self.notifications.append(message)
        else:
            self.incoming.put(message)

    # ---- the handshake
    def initialize(self, folders: list[Path] = (), options: dict | None = None, timeout: float = 120.0) -> dict:
        reply = self.request("initialize", {
            "processId": os.getpid(), "rootUri": None, "initializationOptions": options,
            "capabilities": {"workspace": {"configuration": True, "workspaceFolders": True},
                             "window": {"workDoneProgress": True}},
            "workspaceFolders": [{"uri": f.as_uri(), "name": f.name} for f in folders]}, timeout=timeout)
        if "result" in reply:
            self.notify("initialized", {})
        return reply

    def open(self, path: Path, text: str, version: int = 1) -> str:
        uri = path.as_uri()
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": version,
                                                              "text": text}})
        return uri

    def status(self) -> dict:
        reply = self.request("workspace/executeCommand", {"command": "titans-lsp.status", "arguments": []})
        return reply["result"]

    def inline(self, uri: str, line: int, character: int, timeout: float = 120.0) -> dict:
        return self.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 1}}, timeout=timeout)


class StdioServer:
    """`titans-lsp serve --stdio` as a subprocess driven by a :class:`RawClient`."""

    def __init__(self, model: Path, cache: Path, log: Path, settings: dict | None = None, *extra: str):
        self.log = log
        self.proc = subprocess.Popen(serve_args(model, cache, log, "--stdio", *extra), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        self.client = RawClient(self._write, lambda: self.proc.stdout.read1(65536), settings)
        self.stderr_chunks: list[bytes] = []  # drained, or the server blocks once the pipe is full
        threading.Thread(target=lambda: self.stderr_chunks.extend(iter(lambda: self.proc.stderr.read1(65536), b"")),
                         daemon=True).start()

    def _write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return b"".join(self.stderr_chunks).decode(errors="replace")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class TcpServer:
    """`titans-lsp serve --tcp HOST:0`; ``port`` is read from the line it prints when listening."""

    def __init__(self, model: Path, cache: Path, log: Path, host: str = "127.0.0.1", *extra: str,
                 wait_listening: bool = True):
        self.log = log
        self.proc = subprocess.Popen(serve_args(model, cache, log, "--tcp", f"{host}:0", *extra),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=ENV)
        self.stderr_lines: list[str] = []
        self.port: int | None = None
        self.bound_host: str | None = None
        listening = threading.Event()

        def read_stderr() -> None:
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace")
                self.stderr_lines.append(line)
                match = re.search(r"listening on (\S+):(\d+)", line)
                if match:
                    self.bound_host, self.port = match.group(1), int(match.group(2))
                    listening.set()
            listening.set()

        threading.Thread(target=read_stderr, daemon=True).start()
        if wait_listening:
            listening.wait(120)

    def connect(self, settings: dict | None = None) -> tuple[RawClient, socket.socket]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        sock.settimeout(None)
        client = RawClient(sock.sendall, lambda: _recv(sock), settings)
        return client, sock

    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""
