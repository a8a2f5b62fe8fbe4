"""Issue 16, finding 1, through the real `titans-lsp serve --tcp` process (a tiny model): loopback
by default, a token for any other address, one client per server."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from raw_lsp import ENV, TcpServer, serve_args

pytestmark = [pytest.mark.timeout(240)]
TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def servers():
    started: list[TcpServer] = []
    yield started
    for srv in started:
        srv.close()


def test_tcp_without_host_binds_loopback(tiny_llama_dir, tmp_path, servers):
    proc = subprocess.Popen(serve_args(tiny_llama_dir, tmp_path / "cache", tmp_path / "log", "--tcp", ":0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        line = b""
        while b"listening on" not in line:
            line = proc.stderr.readline()
            assert line, "the server ended before listening"
        assert b"listening on 127.0.0.1:" in line
    finally:
        proc.kill()
        proc.wait(10)


def test_non_loopback_address_requires_a_token(tiny_llama_dir, tmp_path):
    done = subprocess.run(serve_args(tiny_llama_dir, tmp_path / "cache", tmp_path / "log", "--tcp", "0.0.0.0:0"),
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode != 0
    assert "--auth-token-file" in done.stderr


def test_token_is_checked_in_initialize_and_the_warning_is_loud(tiny_llama_dir, tmp_path, servers):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    srv = TcpServer(tiny_llama_dir, tmp_path / "cache", tmp_path / "serve.log", "0.0.0.0", "--auth-token-file", str(token_file))
    servers.append(srv)
    assert srv.port, srv.stderr()
    assert "WARNING" in srv.stderr() and "0.0.0.0" in srv.stderr()
    assert "reachable from other machines" in srv.log.read_text()

    intruder, sock = srv.connect()
    reply = intruder.initialize(options={"authToken": "wrong"})
    assert reply["error"]["code"] == -32600 and "authentication failed" in reply["error"]["message"]
    assert intruder.incoming.get(timeout=30) is None  # the connection was closed
    sock.close()

    nobody, sock = srv.connect()
    reply = nobody.request("workspace/executeCommand", {"command": "titans-lsp.status", "arguments": []})
    assert reply["error"]["code"] == -32002  # nothing but initialize before authenticating
    nobody.notify("exit")  # ignored: an unauthenticated client cannot stop the server
    # shutdown sends the FIN at once: a bare close() waits for our reader thread's blocked recv, and the
    # server would only notice at its 30 s authentication timeout, racing this test's own wait
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    deadline = time.monotonic() + 30
    while srv.log.read_text().count("did not authenticate") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.log.read_text().count("did not authenticate") == 2  # both closed, the slot is free again
    assert srv.proc.poll() is None

    editor, sock = srv.connect()
    assert "result" in editor.initialize(options={"authToken": TOKEN})
    assert editor.status()["version"]
    sock.close()


def test_second_connection_is_refused_and_the_first_keeps_its_replies(tiny_llama_dir, tmp_path, servers):
    srv = TcpServer(tiny_llama_dir, tmp_path / "cache", tmp_path / "serve.log")
    servers.append(srv)
    assert srv.bound_host == "127.0.0.1"
    first, sock1 = srv.connect()
    assert "result" in first.initialize()
    second, sock2 = srv.connect()
    refused = second.incoming.get(timeout=30)
    assert refused["error"]["code"] == -32600 and "one client per server" in refused["error"]["message"]
    assert second.incoming.get(timeout=30) is None  # then closed
    assert first.status()["version"]  # the first editor still gets its replies
    assert first.request("shutdown", None).get("error") is None
    first.notify("exit")
    assert srv.proc.wait(30) == 0
    sock1.close()
    sock2.close()


def test_editor_clients_send_the_token_when_configured():
    """Neither Neovim nor code-server runs here, so this reads the clients' code: each reads the
    configured token file and sends it as initializationOptions.authToken."""
    import json
    from pathlib import Path

    editors = Path(__file__).resolve().parents[1] / "editors"
    package = json.loads((editors / "vscode" / "package.json").read_text())
    assert "titansLsp.authTokenFile" in package["contributes"]["configuration"]["properties"]
    extension = (editors / "vscode" / "src" / "extension.ts").read_text()
    assert "authToken: serverAddress() ? authToken() : undefined" in extension
    assert "titansLsp.authTokenFile" in (editors / "vscode" / "src" / "serverCommand.ts").read_text()
    lua = (editors / "neovim" / "lua" / "titans_lsp" / "init.lua").read_text()
    assert "config.init_options.authToken" in lua and "auth_token_file" in lua
