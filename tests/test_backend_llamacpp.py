"""A REAL llama-server (scripts/provision-llamacpp's build) on the default GGUF: the engine through
``llamacpp`` (a supervised child) and ``openai`` (pointed at the same server), cancellation that
closes the stream, a killed server, and the LSP server in none/concat on both backends."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import httpx
from lsprotocol import types
import pytest
import pytest_asyncio

from llama_tools import llama_server_or_skip
from server_client import (FIXTURE_FILES, end_position, folder_status, inline, isolated_cache, open_document,
                           start_server, status, stop_server, wait_for, write_fixture)

from titans_lsp.backends import BackendConfig, BackendError
from titans_lsp.backends.llamacpp import PREFILL_STEP
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings
from titans_lsp.model.generation import Cancelled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PROMPT = "def load_config(path):\n    with open(path) as f:\n        return "


@pytest.fixture(scope="module")
def llama_engine():
    llama_server_or_skip()
    engine = CompletionEngine.load("default", backend=BackendConfig(name="llamacpp", threads=1))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def local_engine(default_model):
    return CompletionEngine(default_model)


def test_same_tokenizer_as_the_server(llama_engine):
    text = "def f(x):\n    return {'a': x + 1}  # ok\n"
    ids = llama_engine.tokenizer(text, add_special_tokens=False).input_ids
    url = llama_engine.backend.describe()["url"]
    assert httpx.post(url + "/tokenize", json={"content": text}).json()["tokens"] == ids


def test_llamacpp_completes_like_the_local_model_with_healing(llama_engine, local_engine):
    settings = CompletionSettings(mode="none", max_new_tokens=16)
    remote = llama_engine.complete(CompletionRequest(prefix=PROMPT, settings=settings, num_items=3))
    local = local_engine.complete(CompletionRequest(prefix=PROMPT, settings=settings, num_items=3))
    assert remote.healed and local.healed  # the prompt ends in a space: the grammar heals it on the server
    assert remote.prompt_ids == local.prompt_ids  # one layout for every backend
    # the same weights up to the Q8_0 re-encoding's rounding (model/gguf_serving.py): the same greedy start;
    # a near-tie later may part them (here local goes on with ".strip()")
    assert len(os.path.commonprefix([remote.text, local.text])) >= len("f.read()"), (remote.text, local.text)
    assert "json.load(f)" in remote.items
    assert 2 <= len(remote.items) <= 3 and len(set(remote.items)) == len(remote.items)
    again = llama_engine.complete(CompletionRequest(prefix=PROMPT, settings=settings))
    assert again.reused > 0 and again.prefilled < len(again.prompt_ids)  # cache_prompt reused the server's KV


def test_openai_backend_against_the_same_server(llama_engine):
    url = llama_engine.backend.describe()["url"]
    engine = CompletionEngine.load("default", backend=BackendConfig(name="openai", url=url))
    try:
        completion = engine.complete(CompletionRequest(prefix="class Server:\n    def __init__(self, host, port):\n"
                                                              "        self.host = host\n        self.",
                                                       settings=CompletionSettings(mode="none", max_new_tokens=12)))
        assert completion.text.startswith("port") and not completion.healed  # unhealed: no portable constraint
        assert engine.backend.describe()["model"]  # the served model's name came from /v1/models
    finally:
        engine.close()


def slot_busy(url: str) -> bool:
    return any(slot.get("is_processing") for slot in httpx.get(url + "/slots", timeout=5).json())


def cancel_once_busy(engine, request: CompletionRequest, after_s: float) -> None:
    """Run ``request`` on a thread, cancel it ``after_s`` after the server's slot got busy with it, and check
    that the engine raised Cancelled."""
    url = engine.backend.describe()["url"]
    outcome: list = []

    def run():
        try:
            outcome.append(engine.complete(request))
        except Cancelled:
            outcome.append("cancelled")

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not slot_busy(url) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert slot_busy(url), "the server never started on the request"
    time.sleep(after_s)
    request.cancel.set()
    thread.join(timeout=10)
    assert outcome == ["cancelled"]


def test_cancellation_closes_the_stream_and_the_server_stops(llama_engine):
    url = llama_engine.backend.describe()["url"]
    settings = CompletionSettings(mode="none", max_new_tokens=400, multiline="always")
    request = CompletionRequest(prefix="# a list of the first 300 primes, one per line\nprimes = [\n    2,\n    3,\n",
                                settings=settings, early_stop=False, cancel=threading.Event())
    cancel_once_busy(llama_engine, request, after_s=0.3)
    deadline = time.monotonic() + 3
    while slot_busy(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not slot_busy(url)  # the closed stream stopped generation well before 400 tokens
    after = llama_engine.complete(CompletionRequest(prefix=PROMPT, settings=CompletionSettings(mode="none", max_new_tokens=8)))
    assert after.text  # the server answers the next request


def long_prompt(tag: str, functions: int = 120) -> str:
    """About 2,000 tokens the server has not seen (``tag`` makes it new)."""
    return f"# {tag}\n" + "".join(f"def scale_{tag}_{i}(x, factor={i}):\n    return x * factor + {i * 7}\n\n"
                                   for i in range(functions)) + "def main():\n    return "


def test_a_cancelled_long_prompt_stops_using_the_server_within_a_step(llama_engine):
    """llama-server processes a prompt to its end even after the client has gone; the backend sends a long
    uncached prompt in steps, so a cancelled request (a newer keystroke, a pre-warm cancelled by a request
    in another file) frees the server within a step instead of after the whole prompt."""
    url = llama_engine.backend.describe()["url"]
    settings = CompletionSettings(mode="none", max_new_tokens=8)
    request = CompletionRequest(prefix=long_prompt(f"c{time.monotonic_ns()}"), settings=settings,
                                cancel=threading.Event())
    cancel_once_busy(llama_engine, request, after_s=0.5)
    cancelled_at = time.monotonic()
    while slot_busy(url) and time.monotonic() < cancelled_at + 20:
        time.sleep(0.05)
    freed_after = time.monotonic() - cancelled_at
    # One step (PREFILL_STEP tokens) at one thread takes about 2 s here; the whole ~2,000-token prompt ~15 s.
    assert freed_after < 4.0, f"the server went on with the cancelled prompt for {freed_after:.1f} s"


def test_a_long_prompt_sent_in_steps_completes_like_one_request(llama_engine, monkeypatch):
    backend = llama_engine.backend
    sent: list[int] = []  # the prompt length of each request the backend makes
    events = backend._events
    monkeypatch.setattr(backend, "_events", lambda target, body, cancel: (sent.append(len(body["prompt"])),
                                                                         events(target, body, cancel))[1])
    settings = CompletionSettings(mode="none", max_new_tokens=8)
    prefix = long_prompt(f"s{time.monotonic_ns()}", functions=25)
    stepped = llama_engine.complete(CompletionRequest(prefix=prefix, settings=settings, cancel=threading.Event()))
    n = stepped.prompt_tokens
    assert n > 2 * PREFILL_STEP
    assert sent[-1] == n and len(sent) >= 2 and all(b - a <= PREFILL_STEP for a, b in zip(sent, sent[1:])), sent
    # the steps' work is reported as this request's prefill: processed + found cached covers the prompt
    assert stepped.reused < PREFILL_STEP and stepped.prefilled + stepped.reused >= n - 1, (stepped.prefilled, stepped.reused)
    sent.clear()
    again = llama_engine.complete(CompletionRequest(prefix=prefix, settings=settings, cancel=threading.Event()))
    assert sent == [n] and again.text == stepped.text and again.prefilled <= 2  # cached: one request
    sent.clear()  # nothing can cancel an eval's request: a new long prompt goes as one request
    other = llama_engine.complete(CompletionRequest(prefix=long_prompt(f"e{time.monotonic_ns()}", functions=25),
                                                    settings=settings))
    assert sent == [other.prompt_tokens] and other.prompt_tokens > 2 * PREFILL_STEP


def test_a_killed_server_is_reported_then_restarted(llama_engine):
    server = llama_engine.backend.server
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=5)
    settings = CompletionSettings(mode="none", max_new_tokens=8)
    with pytest.raises(BackendError, match=r"llama-server stopped \(exit code -9\); restarting"):
        llama_engine.complete(CompletionRequest(prefix=PROMPT, settings=settings))
    assert llama_engine.backend.describe()["restarts"] == 1
    deadline = time.monotonic() + 60  # requests meanwhile are told it is restarting (test_backends.py)
    while not server.ready() and time.monotonic() < deadline:
        time.sleep(0.1)
    completion = llama_engine.complete(CompletionRequest(prefix=PROMPT, settings=settings))
    assert completion.text and llama_engine.backend.describe()["state"] == "ready"


# ---- the LSP server on llamacpp and on openai --------------------------------------------------------------
class Env:
    pass


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llama_lsp(tmp_path_factory):
    llama_server_or_skip()
    tmp = tmp_path_factory.mktemp("lsp-llamacpp")
    env = Env()
    env.root = write_fixture(tmp / "ws")
    env.client = await start_server([env.root], isolated_cache(tmp), {"mode": "none"},
                                    extra_args=("--backend", "llamacpp", "--backend-threads", "1"))
    yield env
    await stop_server(env.client)


async def complete_at_end(env, name: str, extra: str, mode: str) -> tuple[list[str], dict]:
    env.client.settings[env.root.as_uri()] = {"mode": mode}
    env.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    await wait_for(lambda: _mode_is(env, mode), 20, what=f"mode {mode}")
    text = FIXTURE_FILES["app.py"] + extra
    uri = await open_document(env.client, env.root / name, text)
    result = await inline(env.client, uri, end_position(text), invoked=True)
    items = [item.insert_text for item in (result.items if result else [])]
    return items, await status(env.client)


async def _mode_is(env, mode: str) -> bool:
    return folder_status(await status(env.client), env.root)["mode"] == mode


@pytest.mark.asyncio(loop_scope="module")
async def test_lsp_server_completes_through_llamacpp_in_none_and_concat(llama_lsp):
    for mode in ("none", "concat"):
        items, st = await complete_at_end(llama_lsp, f"new_{mode}.py", "\ndef load_config(path):\n    with open(path) as f:\n        return ", mode)
        assert items and items[0].strip(), f"{mode}: no completion"
        assert st["backend"]["name"] == "llamacpp" and st["backend"]["state"] == "ready"
        assert st["lastCompletion"]["mode"] == mode and st["lastCompletion"]["decoded"] >= 0
    assert st["lastCompletion"]["contextChars"] > 0  # concat: the retrieved block reached the prompt


@pytest.mark.asyncio(loop_scope="module")
async def test_lsp_memory_mode_on_llamacpp_tells_the_user_the_fix(llama_lsp):
    client = llama_lsp.client
    before = len(client.messages)
    items, st = await complete_at_end(llama_lsp, "mem.py", "\nx = ", "memory")
    assert items == []
    messages = [m.message for m in client.messages[before:]]
    assert any("needs the in-process model" in m and "--backend local" in m for m in messages), messages
    assert "needs the in-process model" in st["backend"]["lastError"]


@pytest.mark.asyncio(loop_scope="module")
async def test_lsp_killed_backend_gives_a_clear_status_and_the_next_request_answers(llama_lsp):
    client = llama_lsp.client

    async def running() -> dict | None:  # the model (and its llama-server) may still be loading
        st = await status(client)
        return st if st["modelLoaded"] and st["backend"].get("pid") else None

    st = await wait_for(running, 120, what="llama-server running")
    os.kill(st["backend"]["pid"], signal.SIGKILL)
    await asyncio.sleep(0.3)
    before = len(client.messages)
    items, st = await complete_at_end(llama_lsp, "killed.py", "\nvalue = ", "none")
    assert items == []
    assert "llama-server stopped" in st["backend"]["lastError"] and st["backend"]["restarts"] == 1
    assert any("llama-server stopped" in m.message for m in client.messages[before:])
    pushed = [n["backend"] for n in client.statuses if "backend" in n]  # the titans/status notification too
    assert any(b["name"] == "llamacpp" and "llama-server stopped" in (b["lastError"] or "") for b in pushed), pushed

    async def restarted() -> bool:  # a request while it restarts is told so (test_backends.py)
        return (await status(client))["backend"]["state"] == "ready"
    await wait_for(restarted, 60, what="llama-server restarted")
    items, st = await complete_at_end(llama_lsp, "after.py", "\ndef load_config(path):\n    with open(path) as f:\n        return ", "none")
    assert items and st["backend"]["state"] == "ready" and st["backend"]["lastError"] is None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def openai_lsp(tmp_path_factory, llama_engine):
    tmp = tmp_path_factory.mktemp("lsp-openai")
    env = Env()
    env.root = write_fixture(tmp / "ws")
    url = llama_engine.backend.describe()["url"]
    env.client = await start_server([env.root], isolated_cache(tmp), {"mode": "none"},
                                    extra_args=("--backend", "openai", "--backend-url", url + "/v1"))
    yield env
    await stop_server(env.client)


@pytest.mark.asyncio(loop_scope="module")
async def test_lsp_server_completes_through_openai_in_none_and_concat(openai_lsp):
    for mode in ("none", "concat"):
        items, st = await complete_at_end(openai_lsp, f"o_{mode}.py", "\nclass Server:\n    def __init__(self, host, port):\n"
                                                                      "        self.host = host\n        self.", mode)
        assert items and items[0].startswith("port"), f"{mode}: {items}"
        assert st["backend"]["name"] == "openai" and st["backend"]["url"].endswith("/v1")
        assert st["lastCompletion"]["mode"] == mode


@pytest.mark.asyncio(loop_scope="module")
async def test_llama_server_ends_when_titans_lsp_is_killed(tmp_path):
    """A SIGKILLed titans-lsp cannot stop its llama-server child; the reaper does (no orphans)."""
    llama_server_or_skip()
    env = Env()
    env.root = write_fixture(tmp_path / "ws")
    env.client = await start_server([env.root], isolated_cache(tmp_path), {"mode": "none"},
                                    extra_args=("--backend", "llamacpp", "--backend-threads", "1"))
    try:
        items, st = await complete_at_end(env, "new.py", "\nvalue = ", "none")
        child = st["backend"]["pid"]
        os.kill(child, 0)  # running
        os.kill(env.client._server.pid, signal.SIGKILL)

        async def gone() -> bool:  # exited (a zombie waiting for its reaper counts as ended)
            try:
                with open(f"/proc/{child}/status") as f:
                    return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
            except FileNotFoundError:
                return True

        await wait_for(gone, 10, what="llama-server to end after titans-lsp was killed")
    finally:
        await env.client.stop()
