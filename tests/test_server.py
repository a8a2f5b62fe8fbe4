"""End-to-end tests of `titans-lsp serve` over stdio with pygls's LanguageClient on the default model.

One server process serves the whole module (two workspace folders: ``alpha`` and ``beta``), so
the model loads once. Folder ``beta`` is configured for long completions (used to test cancellation).
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import time

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from server_client import (APP_TAIL, FIXTURE_FILES, command, end_position, folder_status, inline, isolated_cache,
                           open_document, start_server, status, stop_server, wait_for, write_fixture)

pytest.importorskip("titans_lsp.retrieval.index", reason="the workspace index (branch retrieval) is not merged yet")

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

HAVE_MEMORY = importlib.util.find_spec("titans_lsp.model.memory") is not None
needs_memory = pytest.mark.skipif(not HAVE_MEMORY, reason="the Titans memory (branch memory) is not merged yet")
LONG = {"mode": "none", "maxNewTokens": 200, "multiline": "always"}


class Env:
    def __init__(self, tmp):
        self.alpha = write_fixture(tmp / "alpha")
        self.beta = write_fixture(tmp / "beta")
        self.cache = isolated_cache(tmp)
        self.log = tmp / "serve.log"
        self.client = None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    env = Env(tmp_path_factory.mktemp("server"))
    env.client = await start_server([env.alpha, env.beta], env.cache, {"mode": "concat"}, log_file=env.log)
    env.client.settings[env.beta.as_uri()] = dict(LONG)
    yield env
    await stop_server(env.client)


async def set_settings(env: Env, folder, settings: dict) -> None:
    env.client.settings[folder.as_uri()] = settings
    env.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))

    async def applied():
        st = await status(env.client)
        current = folder_status(st, folder)["settings"]
        return all(current[k] == v for k, v in settings.items()) and st

    await wait_for(applied, 20, what=f"settings {settings}")


def completed_line(prefix: str, text: str) -> str:
    return (prefix + text).split("\n")[len(prefix.split("\n")) - 1]


def assert_plausible(prefix: str, text: str) -> None:
    """Non-empty, and the cursor's line with the completion is a Python statement."""
    assert text.strip(), "empty completion"
    line = completed_line(prefix, text).strip()
    ast.parse(line)


async def complete_app(env: Env, folder, tail: str = APP_TAIL, version: int = 1):
    text = FIXTURE_FILES["app.py"] + tail
    uri = await open_document(env.client, folder / "app.py", text, version)
    result = await inline(env.client, uri, end_position(text))
    return text, result


async def test_handshake_capabilities_and_logging(env):
    caps = env.client.server_capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    sync = caps.text_document_sync
    assert getattr(sync, "change", sync) == types.TextDocumentSyncKind.Full
    assert {"titans-lsp.primeWorkspace", "titans-lsp.resetMemory", "titans-lsp.status"} <= set(caps.execute_command_provider.commands)
    st = await wait_for(lambda: _indexed(env), 60, what="both folders indexed")
    assert {f["folder"] for f in st["folders"]} == {env.alpha.as_uri(), env.beta.as_uri()}
    assert folder_status(st, env.alpha)["filesIndexed"] == len(FIXTURE_FILES)
    assert any("files indexed" in message for message in env.client.logs)  # window/logMessage
    assert any(value.get("kind") == "end" for _, value in _progress(env)), "no work-done progress"
    assert env.log.exists() and "serving on stdio" in env.log.read_text()


async def _indexed(env):
    st = await status(env.client)
    return all(f["filesIndexed"] > 0 for f in st["folders"]) and st


def _progress(env):
    return [(token, value if isinstance(value, dict) else vars(value)) for token, value in env.client.progress]


async def test_concat_and_none_modes_differ(env):
    text, result = await complete_app(env, env.alpha)
    assert result.items, "no inline completion"
    assert_plausible(text, result.items[0].insert_text)
    concat = (await status(env.client))["lastCompletion"]
    assert concat["mode"] == "concat" and concat["contextChars"] > 0  # retrieved from pkg/*.py

    await set_settings(env, env.alpha, {"mode": "none"})
    _, result = await complete_app(env, env.alpha)
    assert result.items
    assert_plausible(text, result.items[0].insert_text)
    plain = (await status(env.client))["lastCompletion"]
    assert plain["mode"] == "none" and plain["contextChars"] == 0
    assert plain["promptTokens"] < concat["promptTokens"]
    assert any(s["mode"] == "none" for s in env.client.statuses if s["folder"] == env.alpha.as_uri()), \
        "no titans/status for the mode change"
    backend = env.client.statuses[-1]["backend"]  # the status bar shows which backend answers
    assert backend["name"] == "local" and backend["state"] == "ready" and backend["lastError"] is None
    await set_settings(env, env.alpha, {"mode": "concat"})


async def test_cursor_notification_prewarms_the_first_keystroke(env):
    await set_settings(env, env.beta, {"mode": "none", "maxNewTokens": 16, "multiline": "never"})
    text = FIXTURE_FILES["app.py"] + APP_TAIL
    uri = await open_document(env.client, env.beta / "app.py", text, 1)
    env.client.protocol.notify("titans/cursor", {"textDocument": {"uri": uri}})  # malformed: ignored, logged
    position = end_position(text)
    env.client.protocol.notify("titans/cursor", {"textDocument": {"uri": uri},
                                                 "position": {"line": position.line, "character": position.character}})

    async def prepared():
        last = (await status(env.client)).get("lastPrepare")
        return last if last and last["uri"] == uri and last["line"] == position.line else None

    prepare = await wait_for(prepared, 60, what="lastPrepare for the cursor")
    assert prepare["prefilled"] == prepare["promptTokens"] > 50 and prepare["reused"] == 0
    typed = text + "f"
    env.client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=typed)]))
    await inline(env.client, uri, end_position(typed))
    last = (await status(env.client))["lastCompletion"]
    assert last["uri"] == uri and last["version"] == 2
    assert last["reused"] >= prepare["promptTokens"] - 2 and last["prefilled"] <= 3
    assert last["engineMs"] <= last["latencyMs"]
    await set_settings(env, env.beta, dict(LONG))


async def test_textdocument_completion_returns_one_item(env):
    text = FIXTURE_FILES["app.py"] + APP_TAIL
    uri = await open_document(env.client, env.alpha / "app.py", text, 3)
    result = await env.client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=end_position(text)))
    assert len(result.items) == 1
    assert_plausible(text, result.items[0].text_edit.new_text)


async def test_invalid_setting_is_reported_and_previous_value_stays(env):
    before = len(env.client.messages)
    env.client.settings[env.alpha.as_uri()] = {"mode": "telepathy", "maxNewTokens": 32}
    env.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))

    async def applied():
        st = folder_status(await status(env.client), env.alpha)
        return st["settings"]["maxNewTokens"] == 32 and st

    st = await wait_for(applied, 20, what="maxNewTokens applied")
    assert st["mode"] == "concat"
    await wait_for(lambda: _async(len(env.client.messages) > before), 10, what="window/showMessage")
    assert "telepathy" in env.client.messages[-1].message
    await set_settings(env, env.alpha, {"mode": "concat"})


async def _async(value):
    return value


async def test_settings_pushed_in_the_notification_apply(env):
    # A client that pushes its settings (and answers pulls with the same) changes every folder.
    env.client.settings[env.alpha.as_uri()] = {"mode": "none"}
    env.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"titansLsp": {"mode": "none"}}))
    await wait_for(lambda: _mode_is(env, env.alpha, "none"), 20, what="pushed mode")
    await set_settings(env, env.alpha, {"mode": "concat"})


async def _mode_is(env, folder, mode):
    return folder_status(await status(env.client), folder)["mode"] == mode


async def _long_request(env, version: int, msg_id: str | None = None):
    text = FIXTURE_FILES["pkg/geometry.py"] + "\n\ndef perimeter_of_rectangle(width, height):\n"
    uri = await open_document(env.client, env.beta / "pkg" / "geometry.py", text, version)
    task = asyncio.ensure_future(inline(env.client, uri, end_position(text), msg_id=msg_id))
    await wait_for(lambda: _inflight(env), 20, interval=0.05, what="request in flight")
    await asyncio.sleep(1.0)  # let it reach the model
    return uri, text, task


async def _inflight(env):
    return (await status(env.client))["inflight"] > 0


async def assert_cancelled(task) -> None:
    with pytest.raises(JsonRpcException) as info:
        await asyncio.wait_for(task, 60)
    assert info.value.code == -32800


async def test_cancel_request_answers_32800_and_frees_the_worker(env):
    await set_settings(env, env.beta, LONG)
    uri, text, task = await _long_request(env, 10, msg_id="cancel-me")
    started = time.perf_counter()
    env.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    await assert_cancelled(task)
    assert time.perf_counter() - started < 5
    # The worker is free: a short request is answered without waiting for 200 tokens of decoding.
    await set_settings(env, env.beta, {"mode": "none", "maxNewTokens": 8})
    started = time.perf_counter()
    short = "import math\n\n\ndef circle_area(r):\n    return math."
    short_uri = await open_document(env.client, env.beta / "short.py", short)
    result = await inline(env.client, short_uri, end_position(short))
    assert result.items and result.items[0].insert_text.strip()
    assert time.perf_counter() - started < 60
    st = await status(env.client)
    assert st["inflight"] == 0 and st["lastCompletion"]["decoded"] <= 8


async def test_newer_request_and_document_change_cancel_older_ones(env):
    await set_settings(env, env.beta, LONG)
    uri, text, first = await _long_request(env, 20)
    # Same document, newer request (as Neovim does without cancelling): the older one is dropped.
    await set_settings(env, env.beta, {"mode": "none", "maxNewTokens": 8})
    second = asyncio.ensure_future(inline(env.client, uri, end_position(text)))
    await assert_cancelled(first)
    assert (await asyncio.wait_for(second, 90)).items is not None

    await set_settings(env, env.beta, LONG)
    uri, text, third = await _long_request(env, 30)
    env.client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=31),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text + "    ")]))
    await assert_cancelled(third)
    await set_settings(env, env.beta, LONG)


async def test_bad_input_gets_an_error_not_a_crash(env):
    missing = (env.alpha / "does_not_exist.py").as_uri()
    with pytest.raises(JsonRpcException):
        await inline(env.client, missing, types.Position(line=5, character=3))
    beyond = await open_document(env.client, env.alpha / "beyond.py", "x = 1\n")
    await inline(env.client, beyond, types.Position(line=99, character=99))  # clamped, answered
    # Malformed params, written raw (the typed client would refuse to send them).
    future = asyncio.get_running_loop().create_future()
    env.client.protocol._request_futures["malformed"] = future
    env.client.protocol._send_data({"jsonrpc": "2.0", "id": "malformed", "method": "textDocument/inlineCompletion",
                                    "params": {"bogus": True}})
    with pytest.raises(JsonRpcException):
        await asyncio.wait_for(future, 30)
    assert (await status(env.client))["modelLoaded"]


async def test_file_edited_on_disk_is_reindexed(env):
    before = folder_status(await status(env.client), env.alpha)
    (env.alpha / "pkg" / "shapes.py").write_text("def square_area(side):\n    return side * side\n")

    async def reindexed():
        st = folder_status(await status(env.client), env.alpha)
        return st["indexUpdates"] > before["indexUpdates"] and st["lastIndexed"] == "pkg/shapes.py" and st

    st = await wait_for(reindexed, 30, what="re-index of pkg/shapes.py")
    assert st["filesIndexed"] == before["filesIndexed"] + 1
    (env.alpha / "pkg" / "shapes.py").unlink()
    await wait_for(lambda: _files_indexed(env, env.alpha, before["filesIndexed"]), 30, what="removal from the index")


async def _files_indexed(env, folder, n):
    return folder_status(await status(env.client), folder)["filesIndexed"] == n


@needs_memory
@pytest.mark.parametrize("mode", ["memory", "ablation", "hybrid"])
async def test_memory_modes_complete(env, mode):
    await set_settings(env, env.alpha, {"mode": mode})
    text, result = await complete_app(env, env.alpha)
    assert result.items
    assert_plausible(text, result.items[0].insert_text)
    assert (await status(env.client))["lastCompletion"]["mode"] == mode


@needs_memory
async def test_memory_is_primed_reprimed_on_edit_and_separate_per_folder(env):
    for folder in (env.alpha, env.beta):
        await set_settings(env, folder, {"mode": "memory"})
        await command(env.client, "titans-lsp.primeWorkspace", {"folder": folder.as_uri()})
    st = await status(env.client)
    alpha, beta = folder_status(st, env.alpha), folder_status(st, env.beta)
    for folder in (alpha, beta):
        assert folder["filesPrimed"] == folder["filesIndexed"] > 0
        assert folder["memory"]["gates"] and folder["memory"]["tokensWritten"] > 0
    # Same files, same untrained memory: the two states agree before alpha changes.
    assert alpha["memory"]["fingerprint"] == pytest.approx(beta["memory"]["fingerprint"])

    (env.alpha / "pkg" / "config.py").write_text(FIXTURE_FILES["pkg/config.py"] + "\n\nDEFAULT_PATH = 'settings.json'\n")

    async def reprimed():
        now = folder_status(await status(env.client), env.alpha)
        # written into priming's working copy, then published (the end of the batch of changed files)
        written = now["primeWrites"] > alpha["primeWrites"] and now["lastPrimed"] == "pkg/config.py"
        return written and now["memory"]["version"] > alpha["memory"]["version"] and now

    after = await wait_for(reprimed, 60, what="re-prime of pkg/config.py")
    assert after["lastIndexed"] == "pkg/config.py" and after["indexUpdates"] > alpha["indexUpdates"]
    assert after["memory"]["version"] > alpha["memory"]["version"]
    assert after["memory"]["fingerprint"] != pytest.approx(alpha["memory"]["fingerprint"])
    beta_after = folder_status(await status(env.client), env.beta)
    assert beta_after["memory"]["fingerprint"] == beta["memory"]["fingerprint"]  # untouched by alpha's writes
    assert beta_after["primeWrites"] == beta["primeWrites"]

    await command(env.client, "titans-lsp.resetMemory", {"folder": env.alpha.as_uri()})
    reset = folder_status(await status(env.client), env.alpha)
    assert reset["filesPrimed"] == 0 and reset["memory"]["tokensWritten"] == 0
    assert folder_status(await status(env.client), env.beta)["filesPrimed"] == beta["filesPrimed"]
    await set_settings(env, env.alpha, {"mode": "concat"})
    await set_settings(env, env.beta, LONG)


async def test_folder_added_later_gets_its_settings_index_and_watcher(env, tmp_path):
    gamma = write_fixture(tmp_path / "gamma")
    env.client.settings[gamma.as_uri()] = {"mode": "none", "maxNewTokens": 12}
    env.client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        event=types.WorkspaceFoldersChangeEvent(added=[types.WorkspaceFolder(uri=gamma.as_uri(), name="gamma")], removed=[])))

    async def ready():
        st = await status(env.client)
        folder = next((f for f in st["folders"] if f["folder"] == gamma.as_uri()), None)
        return folder is not None and folder["filesIndexed"] == len(FIXTURE_FILES) and folder

    folder = await wait_for(ready, 30, what="the added folder indexed")
    assert folder["mode"] == "none" and folder["settings"]["maxNewTokens"] == 12
    (gamma / "extra.py").write_text("VALUE = 1\n")
    await wait_for(lambda: _files_indexed(env, gamma, len(FIXTURE_FILES) + 1), 30, what="watcher on the added folder")
    env.client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        event=types.WorkspaceFoldersChangeEvent(added=[], removed=[types.WorkspaceFolder(uri=gamma.as_uri(), name="gamma")])))

    async def removed():
        return all(f["folder"] != gamma.as_uri() for f in (await status(env.client))["folders"])

    await wait_for(removed, 10, what="folder removed")
