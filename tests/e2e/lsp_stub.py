"""A language server that answers `initialize` and nothing else (tests/test_editor_neovim.py): the
stand-in for a titans-lsp that is stuck, e.g. on a request that never finishes. Options (environment):
STUB_NO_INITIALIZE=1 never answers `initialize` (a server still starting); STUB_STATUS=JSON sends that
`titans/status` notification once initialized (the params, without `folder`: the workspace's is used)."""

import json
import os
import sys


def read() -> dict | None:
    length = None
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return json.loads(sys.stdin.buffer.read(length))


def send(message: dict) -> None:
    body = json.dumps(message).encode()
    sys.stdout.buffer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    sys.stdout.buffer.flush()


while (message := read()) is not None:
    if message.get("method") == "initialize":
        if os.environ.get("STUB_NO_INITIALIZE"):
            continue
        folders = (message.get("params") or {}).get("workspaceFolders") or [{"uri": "file:///"}]
        send({"jsonrpc": "2.0", "id": message["id"], "result": {"capabilities": {}}})
    elif message.get("method") == "initialized" and os.environ.get("STUB_STATUS"):
        send({"jsonrpc": "2.0", "method": "titans/status",
              "params": {"folder": folders[0]["uri"], **json.loads(os.environ["STUB_STATUS"])}})
    elif message.get("method") == "shutdown":
        send({"jsonrpc": "2.0", "id": message["id"], "result": None})
    elif message.get("method") == "exit":
        break
