"""Issue 16 through the real `titans-lsp serve --stdio` process (a tiny model, so it starts fast):
documents the client never opened, framing errors, invalid JSON and the LSP lifecycle codes."""

from __future__ import annotations

import pytest

from raw_lsp import StdioServer, frame

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture
def server(tiny_llama_dir, tmp_path):
    started = []

    def start(settings: dict | None = None) -> StdioServer:
        srv = StdioServer(tiny_llama_dir, tmp_path / "cache", tmp_path / "serve.log", settings)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.close()


def workspace(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "app.py").write_text("def main():\n    return 1\n")
    return root


# ---- finding 2: documents never opened ----------------------------------------------------------------------
def test_completion_for_an_unopened_document_is_refused_and_never_read_from_disk(server, tmp_path):
    secret = tmp_path / "outside" / "passwd.py"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:CANARY-7f3a:/root:/bin/bash\nprint(")
    srv = server()
    client = srv.client
    assert "result" in client.initialize([workspace(tmp_path)])
    for method in ("textDocument/inlineCompletion", "textDocument/completion"):
        params = {"textDocument": {"uri": secret.as_uri()}, "position": {"line": 1, "character": 6}}
        if method == "textDocument/inlineCompletion":
            params["context"] = {"triggerKind": 1}
        reply = client.request(method, params)
        assert reply["error"]["code"] == -32602, reply
        assert "not open" in reply["error"]["message"]
        assert "CANARY" not in str(reply)
    # The same file once the client sends it is completed from the text sent, not the disk's.
    uri = client.open(secret, "x = 1\nprint(")
    reply = client.inline(uri, 1, 6)
    assert "error" not in reply, reply
    assert "CANARY" not in str(client.status())


# ---- finding 3: framing and invalid JSON --------------------------------------------------------------------
@pytest.mark.parametrize("delta", [-7, +9, +400])
def test_wrong_content_length_resynchronises_and_logs_why(server, tmp_path, delta):
    srv = server()
    client = srv.client
    assert "result" in client.initialize([workspace(tmp_path)])
    bad = client.send_request("titans-lsp/nothing", {"pad": "x" * 40}, length_delta=delta)
    after = client.request("workspace/executeCommand", {"command": "titans-lsp.status", "arguments": []}, timeout=30)
    assert "result" in after and after["result"]["version"], after  # the server still answers
    assert "framing error" in srv.log_text()
    if delta > 0:  # the overlong frame's JSON was whole: it is answered too (method not found)
        assert client.response(bad, timeout=10)["error"]["code"] == -32601


def test_invalid_json_gets_32700_and_a_non_message_32600(server, tmp_path):
    srv = server()
    client = srv.client
    client.send_bytes(frame(b'{"jsonrpc": "2.0", "id": 1, "method": '))
    parse = client.response(None, timeout=30)
    assert parse["error"]["code"] == -32700
    client.send_bytes(frame(b'[1, 2, 3]'))
    assert client.response(None, timeout=30)["error"]["code"] == -32600
    assert "result" in client.initialize([workspace(tmp_path)])


# ---- finding 8: lifecycle -------------------------------------------------------------------------------------
def test_request_before_initialize_gets_32002_without_a_traceback(server, tmp_path):
    srv = server()
    client = srv.client
    reply = client.request("textDocument/completion", {"textDocument": {"uri": "file:///x.py"},
                                                       "position": {"line": 0, "character": 0}})
    assert reply["error"]["code"] == -32002, reply
    assert not reply["error"].get("data")
    assert "Traceback" not in str(reply)
    assert "result" in client.initialize([workspace(tmp_path)])
    again = client.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    assert again["error"]["code"] == -32600


def test_request_after_shutdown_gets_32600_and_exit_after_shutdown_is_0(server, tmp_path):
    srv = server()
    client = srv.client
    assert "result" in client.initialize([workspace(tmp_path)])
    assert "error" not in client.request("shutdown", None, timeout=60)
    reply = client.request("workspace/executeCommand", {"command": "titans-lsp.status", "arguments": []})
    assert reply["error"]["code"] == -32600, reply
    client.notify("exit")
    assert srv.wait(30) == 0


def test_exit_without_shutdown_exits_1(server, tmp_path):
    srv = server()
    assert "result" in srv.client.initialize([workspace(tmp_path)])
    srv.client.notify("exit")
    assert srv.wait(30) == 1


# ---- finding 6: shutdown while priming ----------------------------------------------------------------------
@pytest.mark.parametrize("stop", ["shutdown+exit", "SIGTERM"])
def test_shutdown_and_exit_while_priming_stop_cleanly_and_save_progress(server, tmp_path, stop):
    import json
    import signal
    import time

    root = tmp_path / "big"
    root.mkdir()
    body = "".join(f"def function_{i}(value):\n    return value * {i} + len(str(value))\n\n" for i in range(40))
    for n in range(300):
        (root / f"module_{n:03d}.py").write_text(body)
    srv = server({None: {"mode": "memory"}})
    client = srv.client
    assert "result" in client.initialize([root])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait until priming has written some files, not all
        priming = [n["params"].get("priming") for n in list(client.notifications) if n["method"] == "titans/status"]
        if any(p and 0 < p["done"] < p["total"] for p in priming):
            break
        time.sleep(0.05)
    else:
        pytest.fail("priming never started")
    started = time.monotonic()
    if stop == "SIGTERM":
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.wait(60) == 1  # no shutdown: 1, but a clean exit (not -6, SIGABRT, nor -15)
    else:
        assert client.request("shutdown", None, timeout=60).get("error") is None
        client.notify("exit")
        assert srv.wait(60) == 0  # not -6 (SIGABRT)
    assert time.monotonic() - started < 30
    time.sleep(0.5)  # the stderr reader catches up
    assert "terminate called" not in srv.stderr()
    primed = list((tmp_path / "cache").glob("workspaces/big-*/primed-*.json"))
    assert primed and 0 < len(json.loads(primed[0].read_text())) < 300
    assert f"exiting with code {0 if stop != 'SIGTERM' else 1}" in srv.log_text()


# ---- finding 7: status says what was redacted ---------------------------------------------------------------
def test_status_reports_redacted_secrets(server, tmp_path):
    import time

    root = workspace(tmp_path)
    (root / "settings_local.py").write_text('REGION = "eu"\nAWS_ACCESS_KEY_ID = "AKIAZ7QW3ERTY5UIOPLK"\n')
    srv = server()
    client = srv.client
    assert "result" in client.initialize([root])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        folder = client.status()["folders"][0]
        if folder["filesIndexed"]:
            break
        time.sleep(0.2)
    assert folder["secrets"] == {"redactedFiles": 1, "redactedLines": 1, "skippedFiles": 0}
    assert "AKIAZ7QW3ERTY5UIOPLK" not in srv.log_text()


# ---- findings 4 and 8: settings and command arguments of the wrong shape ------------------------------------
def test_bad_command_arguments_and_settings_get_clear_errors(server, tmp_path):
    import time

    root = workspace(tmp_path)
    srv = server({None: {"maxNewTokens": "16", "contextBudget": 7.5}})
    client = srv.client
    assert "result" in client.initialize([root])
    for command, arguments, expected in [
        ("titans-lsp.primeWorkspace", [123], "expected an object"),
        ("titans-lsp.primeWorkspace", [{"folder": 5}], "folder must be"),
        ("titans-lsp.resetMemory", [{"folder": "file:///not/a/folder"}], "not a workspace folder"),
        ("titans-lsp.primeWorkspace", [{"folder": root.as_uri(), "force": "yes"}], "force must be"),
    ]:
        reply = client.request("workspace/executeCommand", {"command": command, "arguments": arguments})
        assert reply.get("error", {}).get("code") == -32602 and expected in reply["error"]["message"], reply
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        settings = client.status()["folders"][0]["settings"]
        if settings["maxNewTokens"] == 16:
            break
        time.sleep(0.2)
    assert settings["maxNewTokens"] == 16 and isinstance(settings["maxNewTokens"], int)  # converted
    assert settings["contextBudget"] == 512  # 7.5 rejected: the default stays
    shown = [n["params"]["message"] for n in client.notifications if n["method"] == "window/showMessage"]
    assert any("titansLsp.contextBudget" in message for message in shown)


def test_a_file_outside_the_workspace_folders_gets_the_users_settings(server, tmp_path):
    """A scratch file or a library opened next to a workspace folder used to run with the defaults
    until the settings next changed: the user's mode, token limit and telemetry opt-out did not apply
    (events were recorded for it with telemetry turned off)."""
    import time

    root = workspace(tmp_path)
    user = {"mode": "none", "maxNewTokens": 8, "telemetry": {"enabled": False}}
    srv = server({None: user, root.as_uri(): user})
    client = srv.client
    assert "result" in client.initialize([root])
    deadline = time.monotonic() + 30
    while client.status()["folders"][0]["settings"]["mode"] != "none" and time.monotonic() < deadline:
        time.sleep(0.2)  # the folder's settings are in: the file below is opened later, as in an editor
    outside = tmp_path / "scratch" / "notes.py"
    outside.parent.mkdir()
    uri = client.open(outside, "def add(a, b):\n    return ")
    reply = client.inline(uri, 1, 11)
    assert "error" not in reply, reply
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        folders = {f["folder"]: f for f in client.status()["folders"]}
        settings = folders.get("titans-lsp:no-folder", {}).get("settings", {})
        if settings.get("mode") == "none":
            break
        time.sleep(0.2)
    assert settings["mode"] == "none" and settings["maxNewTokens"] == 8 and settings["telemetry"]["enabled"] is False


def test_the_first_completion_in_a_file_outside_the_folders_or_in_a_new_folder_waits_for_its_settings(server, tmp_path):
    """Opening a file outside the workspace folders (or adding a folder) pulls its settings; the
    request right after didOpen ran with the defaults when the client answered that pull a moment
    later (only the first pull, after `initialized`, was waited for)."""
    import time

    root = workspace(tmp_path)
    user = {"mode": "none", "maxNewTokens": 8}
    srv = server({None: user, root.as_uri(): user})
    client = srv.client
    assert "result" in client.initialize([root])
    deadline = time.monotonic() + 30
    while client.status()["folders"][0]["settings"]["mode"] != "none" and time.monotonic() < deadline:
        time.sleep(0.2)  # the folder's settings are in
    added = tmp_path / "added"
    added.mkdir()
    client.configuration_delay.update({None: 2.0, added.as_uri(): 2.0})  # later pulls are answered late

    outside = tmp_path / "scratch" / "notes.py"
    outside.parent.mkdir()
    uri = client.open(outside, "def add(a, b):\n    return ")
    reply = client.inline(uri, 1, 11)
    assert "error" not in reply, reply
    assert client.status()["lastCompletion"]["mode"] == "none"  # the user's mode, not the default concat

    client.notify("workspace/didChangeWorkspaceFolders",
                  {"event": {"added": [{"uri": added.as_uri(), "name": "added"}], "removed": []}})
    uri = client.open(added / "app.py", "def sub(a, b):\n    return ")
    reply = client.inline(uri, 1, 11)
    assert "error" not in reply, reply
    assert client.status()["lastCompletion"]["mode"] == "none"


def open_outside_with_late_settings(server, tmp_path):
    """A server whose user settings say mode none, and a file opened outside the workspace folders whose
    settings pull the client answers 2 s late; (client, the file's uri)."""
    root = workspace(tmp_path)
    client = server({None: {"mode": "none"}}).client
    assert "result" in client.initialize([root])
    client.configuration_delay[None] = 2.0  # the pull for files outside the folders is answered late
    outside = tmp_path / "scratch" / "notes.py"
    outside.parent.mkdir()
    return client, client.open(outside, "def add(a, b):\n    return ")


def test_a_pre_warm_in_a_file_whose_settings_are_coming_waits_for_them(server, tmp_path):
    """The cursor pre-warm (titans/cursor) right after opening a file outside the folders ran on the
    defaults (concat, the default block) while that file's settings pull was answered a moment later:
    it prefilled a prompt that no request there would reuse."""
    import time

    client, uri = open_outside_with_late_settings(server, tmp_path)
    client.notify("titans/cursor", {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}})
    deadline = time.monotonic() + 120
    while client.status().get("lastPrepare") is None and time.monotonic() < deadline:
        time.sleep(0.2)
    prepared = client.status()["lastPrepare"]
    assert prepared is not None and prepared["uri"] == uri
    assert prepared["mode"] == "none", prepared  # the user's mode, not the default concat


def test_a_pre_warm_whose_file_is_edited_while_it_waits_for_settings_is_dropped(server, tmp_path):
    """The cursor it was sent for is stale once the text changed: prefilling it would lay out a prompt at a
    position in a text that is gone."""
    import time

    client, uri = open_outside_with_late_settings(server, tmp_path)
    client.notify("titans/cursor", {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}})
    time.sleep(0.5)  # the pre-warm waits for the settings; the user types meanwhile
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": "x = 1\n"}]})
    time.sleep(4.0)  # the settings came (2 s) and the pre-warm would have run
    assert "error" not in client.inline(uri, 0, 4)  # requests go on
    assert client.status()["lastPrepare"] is None, str(client.status()["lastPrepare"])


def test_completions_after_the_model_failed_to_load_are_answered_empty_with_the_reason_once(server, tmp_path):
    """Every keystroke's request was answered with an internal error (-32603, a traceback in the log
    each time; VS Code reveals its output channel on each), although the reason was already shown."""
    root = workspace(tmp_path)
    srv = server()
    client = srv.client
    assert "result" in client.initialize([root], options={"model": str(tmp_path / "no-such-model")})
    uri = client.open(root / "app.py", "def main():\n    return ")
    for _ in range(3):
        reply = client.inline(uri, 1, 11)
        assert "error" not in reply and reply["result"] is None, reply
    st = client.status()
    assert "cannot load model" in st["backend"]["lastError"] and "no-such-model" in st["modelError"]
    shown = [n["params"]["message"] for n in client.notifications if n["method"] == "window/showMessage"]
    assert len([m for m in shown if "cannot load model" in m]) == 1, shown


def test_a_request_waiting_for_its_files_settings_is_cancelled_by_an_edit_like_a_running_one(server, tmp_path):
    """A request that waited for its file's settings pull was not cancelled by an edit meanwhile (it was
    not running yet): it then completed the new text at the old position."""
    import time

    client, uri = open_outside_with_late_settings(server, tmp_path)
    first = client.send_request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": 1, "character": 11}, "context": {"triggerKind": 1}})
    time.sleep(0.5)  # the user types on while the request waits
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": "import os\nprint(os.getcwd())\n"}]})
    reply = client.response(first, timeout=120)
    assert reply.get("error", {}).get("code") == -32800, reply  # RequestCancelled, as for a running request
    assert "error" not in client.inline(uri, 1, 6)  # the next request is answered


def test_settings_the_editor_fails_to_send_are_reported_once_not_silently_replaced_by_defaults(server, tmp_path):
    """A workspace/configuration answered with an error went only to the log: completions ran on the
    defaults (concat, not the user's mode) and nothing told the user why their settings had no effect."""
    root = workspace(tmp_path)
    srv = server({None: {"mode": "none"}})
    client = srv.client
    client.configuration_error = "settings store is locked"
    assert "result" in client.initialize([root])
    uri = client.open(root / "app.py", "def main():\n    return ")
    for _ in range(2):
        assert "error" not in client.inline(uri, 1, 11)  # completions go on, with the settings in effect
    shown = [n["params"]["message"] for n in client.notifications if n["method"] == "window/showMessage"
             and "could not read the titansLsp settings" in n["params"]["message"]]
    assert len(shown) == 1 and "settings store is locked" in shown[0], shown


def test_a_persistent_error_is_not_logged_again_at_every_cursor_rest(server, tmp_path):
    """fim "on" with a model without FIM tokens fails every request; the pre-warm at each cursor rest
    (titans/cursor) logged the same warning each time, filling the log while the user moved around."""
    import time

    root = workspace(tmp_path)
    srv = server({None: {"mode": "none", "fim": "on"}})
    client = srv.client
    assert "result" in client.initialize([root])
    uri = client.open(root / "app.py", "def main():\n    return ")
    client.inline(uri, 1, 11)
    assert "fill-in-the-middle" in client.status()["backend"]["lastError"]  # reported by the request
    for character in (11, 10, 9):
        client.notify("titans/cursor", {"textDocument": {"uri": uri}, "position": {"line": 1, "character": character}})
        time.sleep(0.3)
    client.status()  # a round trip: the notifications before it were handled
    time.sleep(0.5)
    warned = [line for line in srv.log_text().splitlines() if "WARNING" in line and "pre-warm of" in line]
    assert warned == [], warned
