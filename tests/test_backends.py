"""Backend choice and the HTTP plumbing that needs no model server: validation of flags and
initializationOptions, unreachable servers (retries with backoff, one clear line), the API key
never shown, and memory modes refused on remote backends with the fix named."""

from __future__ import annotations

import re
import threading
import time

import pytest

from titans_lsp.backends import BACKENDS, BackendConfig, BackendError, GenerateCall, ModeUnsupported
from titans_lsp.backends.config import BACKEND_NAMES
from titans_lsp.backends.openai import OpenAIBackend, api_base
from titans_lsp.backends.llamacpp import heal_grammar
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings
from titans_lsp.model.generation import Cancelled
from titans_lsp.model.loading import load_model


def test_one_registry_names_every_backend():
    assert tuple(BACKENDS) == BACKEND_NAMES == ("local", "llamacpp", "openai", "auto")
    assert BACKENDS["local"].supports_memory and not BACKENDS["llamacpp"].supports_memory
    assert not BACKENDS["openai"].supports_memory and BACKENDS["auto"].supports_memory  # auto: memory modes on local


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "tgi"}, "unknown backend 'tgi'"),
    ({"name": "openai"}, "needs --backend-url"),
    ({"name": "llamacpp", "url": "localhost:8080"}, "must start with http"),
    ({"name": "openai", "url": "http://x", "api_key_env": "MY KEY"}, "must name an environment variable"),
    ({"name": "llamacpp", "threads": 0}, "threads must be an integer 1..512"),
])
def test_bad_backend_settings_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BackendConfig(**kwargs)


def test_initialization_options_override_the_flags_and_bad_ones_are_refused():
    base = BackendConfig()
    config = base.with_options({"backend": "openai", "backendUrl": "http://127.0.0.1:8000/v1/", "backendModel": "m",
                                "model": "ignored here"})
    assert (config.name, config.url, config.model) == ("openai", "http://127.0.0.1:8000/v1", "m")
    assert base.with_options(None) is base and base.with_options({"backend": ""}) == base
    with pytest.raises(ValueError, match="initializationOptions.backend must be a string"):
        base.with_options({"backend": 3})
    with pytest.raises(ValueError, match="initializationOptions: the openai backend needs --backend-url"):
        base.with_options({"backend": "openai"})


def test_api_base_accepts_a_root_or_v1_url():
    assert api_base("http://h:1") == "http://h:1/v1" and api_base("http://h:1/v1/") == "http://h:1/v1"


def test_heal_grammar_escapes_the_literal():
    assert heal_grammar(' "x"\n\\') == 'root ::= " \\"x\\"\\n\\\\" .*'


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return load_model(str(tiny_llama_dir), device="cpu").tokenizer


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_unreachable_server_is_retried_with_backoff_then_named(tokenizer, monkeypatch):
    monkeypatch.setenv("TITANS_TEST_KEY", "sk-secret-value")
    config = BackendConfig(name="openai", url=f"http://127.0.0.1:{closed_port()}", model="m", retries=2,
                           api_key_env="TITANS_TEST_KEY")
    backend = OpenAIBackend(config, tokenizer)
    started = time.perf_counter()
    with pytest.raises(BackendError) as caught:
        backend.generate(GenerateCall(prompt_ids=[5, 6, 7], max_new_tokens=4))
    elapsed = time.perf_counter() - started
    assert elapsed >= 0.25 + 0.5  # two retries after 0.25 s and 0.5 s
    message = str(caught.value)
    assert "is unreachable" in message and "fix --backend-url" in message
    shown = message + repr(backend.describe()) + repr(config.describe()) + repr(config)
    assert "sk-secret-value" not in shown  # the key is read per request, never kept or shown
    assert backend.describe()["apiKeyEnv"] == "TITANS_TEST_KEY" and backend.describe()["state"] == "error"


def test_cancel_during_backoff_gives_up_at_once(tokenizer):
    config = BackendConfig(name="openai", url=f"http://127.0.0.1:{closed_port()}", model="m", retries=5)
    backend = OpenAIBackend(config, tokenizer)
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        backend.generate(GenerateCall(prompt_ids=[5, 6], max_new_tokens=4, cancel=cancel))
    assert time.perf_counter() - started < 1.0  # not the 7.75 s of five backoffs


def test_memory_modes_on_a_remote_backend_name_the_fix(tokenizer):
    config = BackendConfig(name="openai", url=f"http://127.0.0.1:{closed_port()}", model="m", retries=0)
    engine = CompletionEngine(backend=OpenAIBackend(config, tokenizer))
    for mode in ("memory", "ablation", "hybrid"):
        with pytest.raises(ModeUnsupported, match=f"mode '{mode}' needs the in-process model.*--backend local"):
            engine.complete(CompletionRequest(prefix="x = 1\n", settings=CompletionSettings(mode=mode)))
    with pytest.raises(ModeUnsupported):
        engine.ensure_memory()
    assert engine.model is None and engine.loaded is None


def test_an_explicit_llama_server_path_is_used_or_refused_never_replaced(tmp_path):
    from titans_lsp.backends.llamacpp import find_llama_server

    with pytest.raises(BackendError, match="not found or not executable at .*nope.*provision-llamacpp"):
        find_llama_server(str(tmp_path / "nope"))  # even where a provisioned build exists
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_llama_server(str(fake)) == str(fake)


def answering(tokenizer, body: bytes, content_type: str) -> OpenAIBackend:
    """An openai backend whose server answers every request 200 with ``body``."""
    import httpx

    backend = OpenAIBackend(BackendConfig(name="openai", url="http://127.0.0.1:9/v1", model="m", retries=0), tokenizer)
    backend.client = httpx.Client(transport=httpx.MockTransport(
        lambda request: httpx.Response(200, content=body, headers={"content-type": content_type})))
    return backend


@pytest.mark.parametrize("body, content_type, message", [
    (b"<!doctype html><html><body>Open WebUI</body></html>", "text/html", "answered without an event stream (text/html)"),
    (b'{"choices": [{"text": "1"}]}', "application/json", "answered without an event stream (application/json)"),
    (b"data: [1, 2]\n\n", "text/event-stream", "sent an unreadable event"),
    (b'data: {"choices": "none"}\n\n', "text/event-stream", "sent an unreadable event"),
])
def test_a_server_that_does_not_stream_events_is_named_not_an_empty_completion(tokenizer, body, content_type, message):
    """A --backend-url pointing at a web page or a server that ignores "stream": before the fix each
    completion came back empty without a word (or an internal error); now the user is told why."""
    backend = answering(tokenizer, body, content_type)
    with pytest.raises(BackendError, match=re.escape(message)) as caught:
        backend.generate(GenerateCall(prompt_ids=[5, 6, 7], max_new_tokens=4))
    assert "OpenAI-compatible server at http://127.0.0.1:9/v1" in str(caught.value)


def test_an_empty_stream_is_still_an_empty_completion(tokenizer):
    backend = answering(tokenizer, b'data: {"choices": [{"text": "", "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n',
                        "text/event-stream")
    assert backend.generate(GenerateCall(prompt_ids=[5, 6, 7], max_new_tokens=4))[0].text == ""


def test_backend_threads_0_means_all_cores_as_the_vscode_setting_says():
    """titansLsp.backendThreads documents 0 as 'all cores'; a client that passed the setting through
    got an error and lost its other backend options (backend, URL) with it."""
    config = BackendConfig().with_options({"backend": "llamacpp", "backendThreads": 0})
    assert config.name == "llamacpp" and config.threads is None
    assert BackendConfig().with_options({"backendThreads": 4}).threads == 4
    with pytest.raises(ValueError, match="threads must be an integer 1..512"):
        BackendConfig().with_options({"backendThreads": -1})


def _fake_llama_server(tmp_path, body: str) -> tuple[str, "Path"]:
    """An executable standing in for llama-server: logs each start to a file, then runs ``body``."""
    starts = tmp_path / "starts.log"
    script = tmp_path / "llama-server"
    script.write_text(f"#!/bin/sh\necho start >> {starts}\n{body}\n")
    script.chmod(0o755)
    return str(script), starts


def test_a_llama_server_that_cannot_start_is_not_restarted_on_every_request(tmp_path):
    from titans_lsp.backends.llamacpp import LlamaServerProcess

    binary, starts = _fake_llama_server(tmp_path, "exit 3")
    server = LlamaServerProcess(binary, "model.gguf", threads=1, parallel=1, log_path=None, retry_after_s=0.5)
    with pytest.raises(BackendError, match="exited with code 3"):
        server.start()
    for _ in range(5):  # keystrokes right after the failure: told why, no new process
        with pytest.raises(BackendError, match=r"exited with code 3.*tried again in the background"):
            server.ensure(wait_s=1.0)
    assert starts.read_text().count("start") == 1
    assert server.state == "down" and server.failed_starts == 1
    time.sleep(0.6)  # the back-off has passed: the next request tries again (and the wait doubles)
    with pytest.raises(BackendError, match="exited with code 3"):
        server.ensure(wait_s=1.0)
    assert starts.read_text().count("start") == 2
    assert server.failed_starts == 2 and server._next_try - time.monotonic() > 0.5


def test_a_llama_server_that_hangs_at_start_does_not_hold_every_request(tmp_path):
    from titans_lsp.backends.llamacpp import LlamaServerProcess

    binary, starts = _fake_llama_server(tmp_path, "exec sleep 30")
    server = LlamaServerProcess(binary, "model.gguf", threads=1, parallel=1, log_path=None,
                                start_timeout_s=1.0, retry_after_s=30.0)
    with pytest.raises(BackendError, match="did not become ready in 1 s"):
        server.start()
    assert not server.alive()  # the hung child was stopped
    begin = time.monotonic()
    with pytest.raises(BackendError, match="tried again in the background"):
        server.ensure(wait_s=5.0)
    assert time.monotonic() - begin < 0.5  # answered at once, not after another 1 s start
    assert starts.read_text().count("start") == 1


def test_a_llama_server_down_is_tried_again_in_the_background_without_holding_requests(tmp_path):
    from titans_lsp.backends.llamacpp import LlamaServerProcess

    binary, starts = _fake_llama_server(tmp_path, "exit 3")
    server = LlamaServerProcess(binary, "model.gguf", threads=1, parallel=1, log_path=None, retry_after_s=0.3)
    with pytest.raises(BackendError):
        server.start()
    assert not server.usable() and starts.read_text().count("start") == 1  # within the back-off: nothing started
    time.sleep(0.4)
    begin = time.monotonic()
    assert not server.usable()  # the back-off passed: a start is tried on a thread, this call does not wait
    assert time.monotonic() - begin < 0.2
    deadline = time.monotonic() + 10
    while server.failed_starts < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert starts.read_text().count("start") == 2 and server.state == "down"


FAKE_HEALTH_SERVER = """
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b'{"status": "ok"}')
    def do_POST(self):  # /completion: an empty answer, streamed
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Type", "text/event-stream"); self.end_headers()
        self.wfile.write(b'data: {"tokens": [], "stop": true}\\n\\n')
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_a_dead_llama_server_found_by_usable_is_restarted_in_the_background(tmp_path):
    import os
    import signal
    import sys

    from titans_lsp.backends.llamacpp import LlamaServerProcess

    (tmp_path / "health.py").write_text(FAKE_HEALTH_SERVER)
    binary, starts = _fake_llama_server(tmp_path, f'exec {sys.executable} {tmp_path / "health.py"} "$@"')
    server = LlamaServerProcess(binary, "model.gguf", threads=1, parallel=1, log_path=None, start_timeout_s=20)
    try:
        server.start()
        assert server.usable() and server.ready()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=5)
        assert not server.usable()  # found dead: not used; a restart begins on a thread
        assert server.state in ("restarting", "starting") and "exit code -9" in server.error
        deadline = time.monotonic() + 20
        while not server.usable() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.usable() and server.restarts == 1 and starts.read_text().count("start") == 2
    finally:
        server.stop()


def test_a_request_while_llama_server_restarts_is_told_so_at_once_and_the_next_one_after_it_answers(tmp_path, tokenizer):
    """A completion that came while the supervised llama-server was restarting waited for the restart,
    up to --backend-timeout (60 s): typing got no answer, and no reason, for as long as a start takes."""
    import os
    import signal
    import sys

    from titans_lsp.backends.llamacpp import LlamaCppBackend

    (tmp_path / "health.py").write_text(FAKE_HEALTH_SERVER)
    started = tmp_path / "started-once"  # the first start is quick, a restart takes 4 s
    binary, starts = _fake_llama_server(tmp_path, f'if [ -e {started} ]; then sleep 4; fi; touch {started}\n'
                                                  f'exec {sys.executable} {tmp_path / "health.py"} "$@"')
    backend = LlamaCppBackend(BackendConfig(name="llamacpp", binary=binary, timeout_s=60), tokenizer, gguf="model.gguf")
    server = backend.server
    call = GenerateCall(prompt_ids=[1, 2, 3], max_new_tokens=4)
    try:
        backend.generate(call)  # answered
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=5)
        with pytest.raises(BackendError, match=r"llama-server stopped \(exit code -9\); restarting"):
            backend.generate(call)  # the request that finds it dead says so; it restarts in the background
        begin = time.monotonic()
        with pytest.raises(BackendError, match="restarting it, completions resume when it is ready"):
            backend.generate(call)
        assert time.monotonic() - begin < 2.5  # told at once (a short wait at most), not after the restart
        deadline = time.monotonic() + 20
        while not server.ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert backend.generate(call)[0].stop_reason  # the first request after the restart is answered
        assert starts.read_text().count("start") == 2
    finally:
        backend.close()


def test_llama_server_starts_and_restarts_when_its_log_cannot_be_written(tmp_path):
    """The child's log under the cache could not be opened (a read-only or damaged cache): the first
    start raised OSError, which took ``auto`` down with it instead of running on local, and a restart
    died on its thread, leaving the server 'starting' for good: every request was told it restarts."""
    import os
    import signal
    import sys

    from titans_lsp.backends.llamacpp import LlamaServerProcess

    (tmp_path / "health.py").write_text(FAKE_HEALTH_SERVER)
    binary, starts = _fake_llama_server(tmp_path, f'exec {sys.executable} {tmp_path / "health.py"} "$@"')
    log = tmp_path / "llama-server.log"
    log.mkdir()  # not a file that can be appended to
    server = LlamaServerProcess(binary, "model.gguf", threads=1, parallel=1, log_path=log, start_timeout_s=20)
    try:
        server.start()
        assert server.ready()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=5)
        assert not server.usable()  # found dead: restarted in the background
        assert "its log" not in server.error  # the message points to no log that was never written
        deadline = time.monotonic() + 20
        while not server.usable() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.ready() and starts.read_text().count("start") == 2
    finally:
        server.stop()


def test_a_restart_that_fails_unexpectedly_leaves_llama_server_down_not_starting_for_good(tmp_path, monkeypatch):
    import os
    import signal
    import sys

    from titans_lsp.backends import llamacpp

    (tmp_path / "health.py").write_text(FAKE_HEALTH_SERVER)
    binary, _ = _fake_llama_server(tmp_path, f'exec {sys.executable} {tmp_path / "health.py"} "$@"')
    server = llamacpp.LlamaServerProcess(binary, "model.gguf", threads=1, parallel=1, log_path=None, start_timeout_s=20)
    try:
        server.start()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=5)

        def no_port() -> int:
            raise OSError("no free port")
        monkeypatch.setattr(llamacpp, "free_port", no_port)
        assert not server.usable()  # found dead: the restart on its thread fails
        deadline = time.monotonic() + 10
        while server.state != "down" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.state == "down" and "no free port" in server.error  # retried after the back-off
        with pytest.raises(BackendError, match="no free port.*tried again in the background"):
            server.ensure()
    finally:
        server.stop()


def test_a_llama_server_down_gives_every_request_the_same_message_so_it_pops_up_once(tmp_path):
    """The message counted down to the next try ("in 30 s", "in 29 s", ...): each keystroke's error was
    new to the server's show-once rule, so the editor got a pop-up per keystroke while it was down."""
    from titans_lsp.backends.llamacpp import LlamaServerProcess

    binary, _ = _fake_llama_server(tmp_path, "exit 3")
    server = LlamaServerProcess(binary, "model.gguf", threads=1, parallel=1, log_path=None, retry_after_s=30.0)
    with pytest.raises(BackendError):
        server.start()
    messages = []
    for _ in range(2):
        with pytest.raises(BackendError) as error:
            server.ensure()
        messages.append(str(error.value))
        time.sleep(1.1)
    assert messages[0] == messages[1] and "exited with code 3" in messages[0]
    assert "tried again in the background" in messages[0]


def test_sent_prompts_estimate_what_a_server_holds_and_forget_a_restarted_one():
    from titans_lsp.backends.llamacpp import SentPrompts

    sent = SentPrompts(keep=2)
    url = "http://127.0.0.1:1"
    assert sent.cached(url, [1, 2, 3]) == 0
    sent.add(url, [1, 2, 3, 4])
    sent.add(url, [7, 8])
    assert sent.cached(url, [1, 2, 3, 9]) == 3 and sent.cached(url, [7, 8, 9]) == 2
    sent.add(url, [5])  # keeps the last two
    assert sent.cached(url, [1, 2, 3]) == 0
    assert sent.cached("http://127.0.0.1:2", [7, 8]) == 0  # restarted on another port: holds nothing
    assert sent.cached(url, [7, 8]) == 0  # and the old server's prompts are gone


def test_sent_prompts_can_be_used_from_several_threads():
    """`eval --concurrency` sends requests from several threads: reading while another thread adds must not
    fail (a deque mutated during iteration raises)."""
    import threading

    from titans_lsp.backends.llamacpp import SentPrompts

    sent, url, errors = SentPrompts(keep=16), "http://x", []

    prompt = list(range(2000))  # long shared prefixes: each read compares for a while, threads switch meanwhile
    until = time.monotonic() + 1.0

    def add():
        while time.monotonic() < until:
            sent.add(url, prompt)

    def read():
        try:
            while time.monotonic() < until:
                sent.cached(url, prompt)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add), threading.Thread(target=read), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("timings", ['"soon"', '{"prompt_n": "many", "cache_n": null, "prompt_ms": [1]}'])
def test_a_llama_server_with_unreadable_timings_still_completes(tokenizer, timings):
    """Timings are figures for the status, not the answer: a server at --backend-url that sends them in
    another shape (here a string, or fields that are not numbers) raised TypeError/ValueError, an internal
    error per keystroke, from the prefill steps and from the answer alike."""
    import threading

    import httpx

    from titans_lsp.backends.llamacpp import PREFILL_STEP, LlamaCppBackend

    token = tokenizer("x", add_special_tokens=False).input_ids[0]
    body = (f'data: {{"tokens": [{token}], "timings": {timings}}}\n\n'
            f'data: {{"tokens": [], "stop": true, "timings": {timings}}}\n\n').encode()
    backend = LlamaCppBackend(BackendConfig(name="llamacpp", url="http://127.0.0.1:9", retries=0), tokenizer)
    requests = []

    def answer(request):
        requests.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    backend.client = httpx.Client(transport=httpx.MockTransport(answer))
    prompt = [token] * (3 * PREFILL_STEP)  # long and new: sent in steps
    result = backend.generate(GenerateCall(prompt_ids=prompt, max_new_tokens=1, cancel=threading.Event()))[0]
    assert len(requests) == 3 and result.token_ids == [token]
    assert result.prefilled == 0 and result.reused == 0  # unknown, not made up
