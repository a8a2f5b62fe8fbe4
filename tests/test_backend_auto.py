"""The ``auto`` backend: llamacpp for modes without memory when llama-server is provisioned, local
otherwise and for memory modes; the choice and its reason are visible (describe/status), never silent."""

from __future__ import annotations

import concurrent.futures

import pytest

from titans_lsp.backends import BackendConfig, create_backend
from titans_lsp.backends.llamacpp import find_llama_server
from titans_lsp.backends.base import Backend, BackendError, GenerateCall, GenerationResult
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.modes import Mode

# isolated_cache: workspace state of the test's own, the converted default model and its serving GGUF from
# the user's cache (not dequantized and re-encoded per test; test_loading and test_gguf_serving test that).
from server_client import isolated_cache  # noqa: E402


def test_auto_is_not_remote_so_memory_modes_stay_allowed():
    assert not BackendConfig(name="auto").remote and BackendConfig(name="llamacpp").remote


def test_without_llama_server_auto_runs_every_mode_locally_and_says_why(tmp_path, monkeypatch):
    from titans_lsp.backends import llamacpp

    monkeypatch.setenv(llamacpp.TOOLS_ENV, str(tmp_path / "no-tools"))  # a fresh machine: nothing provisioned
    monkeypatch.delenv(llamacpp.BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = CompletionEngine.load("default", device="cpu", dtype="float32", cache_dir=str(isolated_cache(tmp_path)),
                                   backend=BackendConfig(name="auto"))
    try:
        info = engine.backend.describe()
        assert info["name"] == "auto" and info["serving"] == {"none": "local", "concat": "local", "memory": "local"}
        assert "llama-server not found" in info["reason"] and "provision-llamacpp" in info["reason"]
        assert all(engine.backend.backend_for(m).name == "local" for m in Mode)
        settings = CompletionSettings(mode=Mode.NONE, max_new_tokens=4)
        local = CompletionEngine.load("default", device="cpu", dtype="float32", cache_dir=str(isolated_cache(tmp_path)))
        request = CompletionRequest(prefix="def add(a, b):\n    return ", settings=settings)
        assert engine.complete(request, Workspace()).raw == local.complete(request, Workspace()).raw
    finally:
        engine.close()


def test_serve_and_doctor_default_to_auto_while_eval_and_bench_stay_local():
    """serve's default is auto (measured faster for none/concat); the study's eval rows stay local."""
    import argparse

    from titans_lsp.commands import bench, doctor, eval as eval_command, serve

    def default_backend(command) -> str:
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        return parser.parse_args([]).backend

    assert default_backend(serve) == "auto" and default_backend(doctor) == "auto"
    assert default_backend(eval_command) == "local" and default_backend(bench) == "local"


def _have_llama_server() -> bool:
    try:
        find_llama_server(None)
        return True
    except BackendError:
        return False


@pytest.mark.skipif(not _have_llama_server(), reason="llama-server not provisioned (scripts/provision-llamacpp)")
def test_with_llama_server_auto_sends_none_and_concat_there_and_memory_modes_local(tmp_path):
    backend = create_backend(BackendConfig(name="auto", threads=1), model="default", device="cpu", dtype="float32",
                             cache_dir=str(isolated_cache(tmp_path)))
    engine = CompletionEngine(backend=backend)
    child = backend.fast.server.process
    try:
        assert backend.backend_for(Mode.NONE).name == "llamacpp" and backend.backend_for(Mode.CONCAT).name == "llamacpp"
        assert all(backend.backend_for(m).name == "local" for m in Mode if m.uses_memory)
        info = backend.describe()
        assert info["serving"]["none"] == "llamacpp" and info["state"] == "ready" and "llama-server" in info["reason"]
        request = CompletionRequest(prefix="def add(a, b):\n    return ", settings=CompletionSettings(mode=Mode.NONE, max_new_tokens=4))
        assert engine.complete(request, Workspace()).raw  # answered by llama-server
        assert engine.model is not None  # the in-process model is there for the memory modes
    finally:
        engine.close()
    assert child.poll() is not None  # close() stops the child llama-server


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.asyncio
async def test_lsp_server_on_auto_shows_which_backend_answers_each_mode(tmp_path):
    from lsprotocol import types

    from llama_tools import llama_server_or_skip
    from server_client import (FIXTURE_FILES, end_position, folder_status, inline, isolated_cache, open_document,
                               start_server, status, stop_server, wait_for, write_fixture)

    llama_server_or_skip()
    root = write_fixture(tmp_path / "ws")
    # no --backend: auto is serve's default
    client = await start_server([root], isolated_cache(tmp_path), {"mode": "none"}, backend=None,
                                extra_args=("--backend-threads", "1"))
    try:
        for mode, serving in (("none", "llamacpp"), ("ablation", "local"), ("concat", "llamacpp")):
            client.settings[root.as_uri()] = {"mode": mode}
            client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))

            async def mode_set() -> bool:
                return folder_status(await status(client), root)["mode"] == mode
            await wait_for(mode_set, 20, what=f"mode {mode}")
            text = FIXTURE_FILES["app.py"] + "\ndef load_config(path):\n    with open(path) as f:\n        return "
            uri = await open_document(client, root / f"auto_{mode}.py", text)
            result = await inline(client, uri, end_position(text), invoked=True)
            assert result is not None and result.items, f"{mode}: no completion"
            st = await status(client)
            assert st["lastCompletion"]["mode"] == mode and st["backend"]["name"] == "auto"
            pushed = [n["backend"] for n in client.statuses if n.get("mode") == mode and "backend" in n]
            assert pushed and pushed[-1]["serving"] == serving, (mode, pushed[-1:])
            assert "llama-server" in pushed[-1]["reason"]
    finally:
        await stop_server(client)


def test_serve_says_before_any_editor_connects_what_auto_will_run(tmp_path, monkeypatch, tiny_llama_dir):
    """The TCP banner / stdio log line: without llama-server, that every mode runs locally and the fix."""
    from titans_lsp.backends import llamacpp
    from titans_lsp.backends.auto import planned_serving

    monkeypatch.setenv(llamacpp.TOOLS_ENV, str(tmp_path / "no-tools"))
    monkeypatch.delenv(llamacpp.BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    plan = planned_serving(BackendConfig(name="auto"))
    assert plan.startswith("every mode on local") and "provision-llamacpp" in plan
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert planned_serving(BackendConfig(name="auto")) == f"none/concat on llama-server ({fake}), memory modes on local"
    assert "http://127.0.0.1:9" in planned_serving(BackendConfig(name="auto", url="http://127.0.0.1:9"))
    assert "not a GGUF" in planned_serving(BackendConfig(name="auto"), str(tiny_llama_dir))


@pytest.mark.skipif(not _have_llama_server(), reason="llama-server not provisioned (scripts/provision-llamacpp)")
def test_while_llama_server_is_down_auto_answers_on_local_then_goes_back(tmp_path):
    import os
    import signal
    import time

    backend = create_backend(BackendConfig(name="auto", threads=1), model="default", device="cpu", dtype="float32",
                             cache_dir=str(isolated_cache(tmp_path)))
    engine = CompletionEngine(backend=backend)
    local = CompletionEngine.load("default", device="cpu", dtype="float32", cache_dir=str(isolated_cache(tmp_path)))
    request = CompletionRequest(prefix="def add(a, b):\n    return ", settings=CompletionSettings(mode=Mode.NONE, max_new_tokens=4))
    server = backend.fast.server
    real_binary = server.binary
    broken = tmp_path / "broken-llama-server"
    broken.write_text("#!/bin/sh\nexit 7\n")
    broken.chmod(0o755)
    try:
        server.binary = str(broken)  # it dies and cannot come back: its restart fails
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=5)
        assert backend.backend_for(Mode.NONE).name == "local"  # found dead: restarted on a thread, local answers
        deadline = time.monotonic() + 30
        while server.state != "down" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.state == "down" and "exited with code 7" in server.error
        answer = engine.complete(request, Workspace())
        assert answer.raw and answer.raw == local.complete(request, Workspace()).raw  # answered, by the local model
        info = backend.describe()
        assert info["serving"]["none"] == "local" and info["state"] == "down" and "exited with code 7" in info["error"]

        server.binary, server._next_try = real_binary, 0.0  # fixed, and its back-off has passed
        deadline = time.monotonic() + 60
        while backend.backend_for(Mode.NONE).name != "llamacpp" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert backend.backend_for(Mode.NONE).name == "llamacpp" and backend.describe()["serving"]["none"] == "llamacpp"
        assert engine.complete(request, Workspace()).raw  # answered by the restarted llama-server
    finally:
        engine.close()
        local.close()


class _FakeServer:
    """A supervised llama-server's health as ``auto`` sees it; the test turns it off."""

    state, error = "ready", None

    def __init__(self):
        self.up = True

    def usable(self) -> bool:
        return self.up

    def ready(self) -> bool:
        return self.up


class _FakeLlama(Backend):
    """Stands in for the llamacpp backend: answers every call with the same text."""

    name = "llamacpp"

    def __init__(self, tokenizer):
        self.tokenizer, self.server = tokenizer, _FakeServer()

    @classmethod
    def create(cls, config, **kwargs):
        raise NotImplementedError

    def generate(self, call: GenerateCall) -> list[GenerationResult]:
        return [GenerationResult(token_ids=[5], text="a + b", prefilled=len(call.prompt_ids), reused=0, decoded=1,
                                 stop_reason="eos")]


def test_telemetry_records_the_backend_that_answered_not_the_one_that_would_answer_now(tmp_path, tiny_llama_dir):
    """llama-server answered, then went down before the item was recorded (auto falls back to local):
    the shown event said ``local``, so acceptance by backend counted llama-server's completions for local."""
    from lsprotocol import types

    from titans_lsp import telemetry
    from titans_lsp.backends.auto import AutoBackend
    from titans_lsp.backends.local import LocalBackend
    from titans_lsp.model.loading import load_model
    from titans_lsp.protocol import NO_FOLDER
    from titans_lsp.server import build_server

    local = LocalBackend(load_model(str(tiny_llama_dir), device="cpu"))
    fast = _FakeLlama(local.tokenizer)
    engine = CompletionEngine(backend=AutoBackend(local, fast, "test"))
    request = CompletionRequest(prefix="def add(a, b):\n    return ", settings=CompletionSettings(mode=Mode.NONE))
    completion = engine.complete(request, Workspace())
    assert completion.backend == "llamacpp" and completion.text == "a + b"
    fast.server.up = False  # it died right after answering: auto serves none on local from now on
    assert engine.backend.backend_for(Mode.NONE).name == "local"
    assert engine.complete(request, Workspace()).backend == "local"

    db = tmp_path / "events.sqlite3"
    server = build_server(events_db=str(db))
    next(server.protocol.lsp_initialize(types.InitializeParams(capabilities=types.ClientCapabilities())))  # its workspace
    server.engine_future = concurrent.futures.Future()
    server.engine_future.set_result(engine)
    state = server.add_folder(NO_FOLDER)
    server.record_shown("file:///tmp/scratch.py", types.Position(line=1, character=11), state, completion,
                        completion.items, "automatic")
    assert server.events.flush()
    server.events.close()
    assert [e.backend for e in telemetry.read_events(db)] == ["llamacpp"]


def test_the_status_names_the_serving_backend_without_starting_anything(tiny_llama_dir):
    """The status push asked ``backend_for``, which under ``auto`` restarts a llama-server found down once its
    back-off has passed: showing the status started a server."""
    from titans_lsp.backends.auto import AutoBackend
    from titans_lsp.backends.local import LocalBackend
    from titans_lsp.model.loading import load_model

    class CountingServer(_FakeServer):
        state, error = "down", "llama-server exited with code 1"
        checks = 0

        def usable(self) -> bool:  # the real one restarts a server that is down once its back-off has passed
            self.checks += 1
            return False

        def ready(self) -> bool:
            return False

    local = LocalBackend(load_model(str(tiny_llama_dir), device="cpu"))
    fast = _FakeLlama(local.tokenizer)
    fast.server = CountingServer()
    auto = AutoBackend(local, fast, "test")
    assert auto.serving_for(Mode.NONE) == "local" and auto.serving_for(Mode.MEMORY) == "local"
    assert fast.server.checks == 0  # nothing asked the server to recover
    fast.server.state = "ready"
    fast.server.ready = lambda: True
    assert auto.serving_for(Mode.CONCAT) == "llamacpp" and fast.server.checks == 0
    assert auto.backend_for(Mode.NONE).name == "local" and fast.server.checks == 1  # a request does try it
