"""The ``llamacpp`` backend: llama.cpp's own ``llama-server``, which runs quantized GGUF weights.

Either reached at ``--backend-url``, or started and supervised here as a child process on a free
localhost port with the model's GGUF file (the binary comes from scripts/provision-llamacpp, which
builds it once from the llama-cpp-python sdist into ~/.cache/titans-lsp-tools). A child that dies
is reported (the request that finds it dead fails with a message saying so) and restarted in the
background; requests meanwhile wait at most START_WAIT_S for it, then fail saying it is restarting.

Requests go to the native ``POST /completion`` with the engine's prompt token ids (the same
tokenizer: the same GGUF), so every backend sees the same prompt; ``cache_prompt`` reuses the
shared prefix of the previous request. Token healing: a grammar that makes the output start with
the healed text (llama.cpp applies it to the greedy choice, as the in-process mask does).
Alternatives: the first token's runner-ups (``n_probs``), each continued as a prompt extended by it.
A long prompt the server has not cached is sent in steps (see ``LlamaCppBackend._prefill_in_steps``): the
server finishes processing a prompt even after its client has gone, so one request would keep it busy
long after a cancel.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

import httpx

from titans_lsp.backends.base import Backend, BackendError, GenerateCall
from titans_lsp.backends.config import BackendConfig
from titans_lsp.backends.stream import Collector, StreamTarget, sse_events
from titans_lsp.model.generation import Cancelled, GenerationResult, common_prefix_length

log = logging.getLogger(__name__)

TOOLS_ENV = "TITANS_LSP_TOOLS"
BINARY_ENV = "TITANS_LSP_LLAMA_SERVER"
PROVISION_FIX = "run scripts/provision-llamacpp (builds llama-server once into ~/.cache/titans-lsp-tools), " \
                "or pass --llama-server PATH or --backend-url URL"


def tools_dir() -> Path:
    return Path(os.environ.get(TOOLS_ENV) or Path.home() / ".cache" / "titans-lsp-tools")


def find_llama_server(explicit: str | None = None) -> str:
    """The llama-server executable: the explicit path, $TITANS_LSP_LLAMA_SERVER, the provisioned
    build (recorded in $TITANS_LSP_TOOLS/env-llamacpp), or ``llama-server`` on PATH."""
    if explicit:  # a path the user named is used or refused, never swapped for another build
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return str(explicit)
        raise BackendError(f"llama-server not found or not executable at {explicit}: {PROVISION_FIX}")
    candidates = [os.environ.get(BINARY_ENV)]
    env_file = tools_dir() / "env-llamacpp"
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            if line.startswith("LLAMA_SERVER="):
                candidates.append(line.split("=", 1)[1].strip())
    candidates.append(shutil.which("llama-server"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise BackendError(f"llama-server not found: {PROVISION_FIX}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MAX_RETRY_AFTER_S = 300.0
RESTARTING = "restarting it, completions resume when it is ready"  # what requests meanwhile are told
# The longest a request waits for a llama-server that is (re)starting: a start takes seconds (up to
# start_timeout_s), and a completion that comes that late is stale; the request fails saying why instead.
START_WAIT_S = 1.0
# Prompt tokens per prefill-only request when a long prompt is not cached: a cancelled request stops using the
# server within one step (about 1 s at two threads on a small CPU); steps cost about 5 % more than one request.
PREFILL_STEP = 256


class SentPrompts:
    """The prompts last sent to one server, to estimate how much of a new prompt it holds: its slots and
    its prompt cache in RAM keep recent prompts (a server restarted on a new URL holds none)."""

    def __init__(self, keep: int = 16):
        self._prompts: deque[list[int]] = deque(maxlen=keep)
        self._url = ""
        self._lock = threading.Lock()  # `eval --concurrency` sends requests from several threads

    def cached(self, url: str, prompt: list[int]) -> int:
        """Leading tokens of ``prompt`` the server at ``url`` has most likely processed already."""
        with self._lock:
            self._for(url)
            sent = list(self._prompts)
        return max((common_prefix_length(earlier, prompt) for earlier in sent), default=0)

    def add(self, url: str, prompt: list[int]) -> None:
        """A prompt sent to ``url``: the server processes it to the end whatever the client does next."""
        with self._lock:
            self._for(url)
            self._prompts.append(list(prompt))

    def _for(self, url: str) -> None:
        if url != self._url:  # another server, or ours restarted on a new port: nothing cached there
            self._prompts.clear()
            self._url = url


class LlamaServerProcess:
    """One supervised ``llama-server`` child: started on a free port, health-checked, restarted."""

    def __init__(self, binary: str, gguf: str, threads: int, parallel: int, log_path: Path | None,
                 ctx_per_slot: int = 4096, start_timeout_s: float = 120.0, retry_after_s: float = 5.0):
        self.binary, self.gguf, self.threads, self.parallel = binary, gguf, threads, parallel
        self.ctx = ctx_per_slot * parallel
        self.log_path = log_path
        self.logged_to: Path | None = None  # the log the child writes (None: log_path could not be opened)
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.state = "stopped"  # starting | ready | restarting | down | stopped
        self.error: str | None = None
        self.restarts = 0
        # After a failed start the next try waits retry_after_s, doubling per failure (at most
        # MAX_RETRY_AFTER_S): a server that cannot start must not make every keystroke's request wait
        # for another start (up to start_timeout_s) or spawn a process per keystroke.
        self.retry_after_s = retry_after_s
        self.failed_starts = 0
        self._next_try = 0.0
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def args(self, port: int) -> list[str]:
        return [self.binary, "-m", self.gguf, "--host", "127.0.0.1", "--port", str(port), "-c", str(self.ctx),
                "-t", str(self.threads), "-tb", str(self.threads), "--parallel", str(self.parallel), "--no-webui",
                # flash attention halves prompt-heavy prefill time on CPU but doubles decode at 2,000 tokens of
                # context (tune-gguf.json); warm completions are almost all decode
                "--flash-attn", "off"]

    def start(self) -> str:
        """Start the server and wait until /health answers; returns its URL. Raises BackendError."""
        with self._lock:
            return self._start()

    def _start(self) -> str:
        self._ready.clear()
        self.state = "starting"
        port = free_port()
        log_file = self._open_log()
        try:
            process = subprocess.Popen(self.args(port), stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            self.process = process
            _reap_when_parent_dies(process.pid)
        except OSError as exc:
            raise self._failed(f"cannot start llama-server ({exc}): {PROVISION_FIX}") from None
        finally:
            if log_file is not subprocess.DEVNULL:
                log_file.close()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise self._failed(f"llama-server exited with code {code} while loading {self.gguf}{self._log_hint()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    self.state, self.error, self.failed_starts = "ready", None, 0
                    self._ready.set()
                    log.info("llama-server ready at %s (pid %d, %s)", self.url, process.pid, Path(self.gguf).name)
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise self._failed(f"llama-server did not become ready in {self.start_timeout_s:.0f} s{self._log_hint()}")

    def _open_log(self):
        """The file the child's output is appended to; none (with a warning) when it cannot be opened: a
        read-only or damaged cache must not keep llama-server from starting."""
        self.logged_to = None
        if self.log_path is None:
            return subprocess.DEVNULL
        try:
            log_file = open(self.log_path, "ab")
            self.logged_to = self.log_path
            return log_file
        except OSError as exc:
            log.warning("cannot write llama-server's log %s (%s); starting it without a log", self.log_path, exc)
            return subprocess.DEVNULL

    def _failed(self, message: str) -> BackendError:
        """Record a failed start (state down, the next try pushed back); the error to raise."""
        self.state, self.error = "down", message
        self.failed_starts += 1
        self._next_try = time.monotonic() + min(self.retry_after_s * 2 ** (self.failed_starts - 1), MAX_RETRY_AFTER_S)
        self._ready.set()  # the start is over: requests waiting for it see the error
        return BackendError(message)

    def _log_hint(self) -> str:
        return f" (its log: {self.logged_to})" if self.logged_to is not None else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure(self, wait_s: float = START_WAIT_S) -> str:
        """The URL of the ready server for a request, which never waits through a start: a server found
        dead is reported (BackendError saying so) and restarted in the background; one (re)starting is
        waited for at most ``wait_s``, then the request fails saying so; one down after failed starts says
        when it is tried again (in the background, once the back-off has passed)."""
        if self.state == "ready" and not self.alive():
            raise BackendError(self.report_dead())
        self._recover()
        if self.state in ("restarting", "starting"):
            self._ready.wait(wait_s)
        if self.ready():
            return self.url
        if self.state == "down":  # the same words on every request: the server pops a message up once
            raise BackendError(f"{self.error}; it is tried again in the background (after {self.retry_after_s:g} s, "
                               f"doubling per failure up to {MAX_RETRY_AFTER_S / 60:g} min)")
        if self.state in ("restarting", "starting") and self.error:
            raise BackendError(self.error)  # it says why and that it is restarting
        raise BackendError(f"llama-server is {self.state}")

    def report_dead(self) -> str:
        """Called when a request finds the server gone: records why and restarts it in the background."""
        code = self.process.poll() if self.process is not None else None
        message = f"llama-server stopped (exit code {code}); {RESTARTING}{self._log_hint()}"
        self._restart_in_background(message)
        return message

    def usable(self) -> bool:
        """Whether a request should go here now (``auto`` answers on the local model otherwise). Never
        waits for a start."""
        self._recover()
        return self.ready()

    def _recover(self) -> None:
        """A child found dead is restarted in the background; a server down after failed starts is tried
        again in the background once its back-off has passed."""
        if self.state == "ready" and not self.alive():
            self.report_dead()
        elif self.state == "down" and time.monotonic() >= self._next_try:
            self._restart_in_background(f"{self.error}; {RESTARTING}")

    def ready(self) -> bool:
        return self.state == "ready" and self.alive()

    def _restart_in_background(self, message: str) -> None:
        """Start the server again on a thread; the state says "restarting" meanwhile. Does nothing when a
        start is already under way (the lock is held only while starting, so never wait for it here)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self.state in ("restarting", "starting"):
                return
            self.state, self.error = "restarting", message
            self.restarts += 1
            self._ready.clear()  # requests wait (briefly) for this start
        finally:
            self._lock.release()
        log.warning(message)

        def restart() -> None:
            try:
                self.start()
            except BackendError as exc:  # _failed recorded it (state down) and released the waiters
                log.error("llama-server restart failed: %s", exc)
            except Exception as exc:  # noqa: BLE001 - never left "starting" for good: down, retried after the back-off
                log.exception("llama-server restart failed")
                self._failed(f"llama-server restart failed ({type(exc).__name__}: {exc})")
        threading.Thread(target=restart, name="titans-llama-restart", daemon=True).start()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.state = "stopped"


def _reap_when_parent_dies(child: int) -> None:
    """llama-server runs in its own session (a Ctrl-C in the editor's terminal must not reach it), so
    nothing stops it when titans-lsp dies without running ``stop()`` (SIGKILL, a crash). A tiny
    watcher process ends it then: it polls both pids once a second and exits with the child.
    (PR_SET_PDEATHSIG would fire when the *thread* that started the child exits, and servers are
    started from short-lived worker threads.)"""
    script = 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill "$2" 2>/dev/null'
    try:
        subprocess.Popen(["sh", "-c", script, "titans-lsp-reaper", str(os.getpid()), str(child)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError as exc:  # no sh: the server is still stopped by stop() on a clean exit
        log.warning("cannot watch llama-server (pid %d) for an unclean exit: %s", child, exc)


class LlamaCppBackend(Backend):
    name = "llamacpp"
    heals = True

    def __init__(self, config: BackendConfig, tokenizer, gguf: str | None = None, log_path: Path | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.gguf = gguf
        self.server: LlamaServerProcess | None = None
        if config.url is None:
            if gguf is None:
                raise BackendError("the llamacpp backend needs a .gguf model (--model FILE.gguf or 'default') or --backend-url")
            self.server = LlamaServerProcess(find_llama_server(config.binary), gguf, config.threads or os.cpu_count() or 1,
                                             config.parallel, log_path)
            self.server.start()
        self.client = httpx.Client(timeout=httpx.Timeout(config.timeout_s, connect=5.0))
        self.end_ids = {i for i in (tokenizer.eos_token_id,) if i is not None}
        self.sent = SentPrompts()

    @classmethod
    def create(cls, config: BackendConfig, *, model: str, device: str, dtype: str, cache_dir: str | None) -> "LlamaCppBackend":
        from titans_lsp.model.gguf_serving import serving_gguf
        from titans_lsp.model.loading import load_tokenizer, resolve_model
        from titans_lsp.paths import cache_root

        source = resolve_model(model)
        gguf = source.location if source.kind == "gguf" else None
        if config.url is None and gguf is not None:  # a child server: the file it runs fastest (model/gguf_serving.py)
            gguf = serving_gguf(model, cache_dir)
        if config.url is None and gguf is None:
            raise BackendError(f"the llamacpp backend runs GGUF files: --model {model!r} is not one; pass a .gguf file "
                               "(or 'default'), or --backend-url of a running llama-server")
        root = cache_root(cache_dir)
        root.mkdir(parents=True, exist_ok=True)
        return cls(config, load_tokenizer(model, cache_dir), gguf, root / "llama-server.log")

    # ---- generation -------------------------------------------------------------------------------
    def _target(self) -> StreamTarget:
        if self.server is not None:
            url = self.server.ensure()
            return StreamTarget(f"llama-server at {url}", url, fix="it is restarted; retry in a moment")
        return StreamTarget(f"llama-server at {self.config.url}", self.config.url,
                            fix="start it, or fix --backend-url")

    def generate(self, call: GenerateCall) -> list[GenerationResult]:
        stepped, reused, stepped_s = self._prefill_in_steps(call)
        first, runner_ups = self._run(call, call.prompt_ids, [], alternatives=0 if call.prefill_only else call.alternatives)
        if stepped:  # the steps' work is part of this request's prefill
            first.prefilled, first.reused, first.prefill_s = first.prefilled + stepped, reused, first.prefill_s + stepped_s
        results = [first]
        for token in runner_ups:
            results.append(self._run(call, call.prompt_ids + [token], [token], alternatives=0)[0])
        return results

    def _prefill_in_steps(self, call: GenerateCall) -> tuple[int, int, float]:
        """Send the prompt's uncached part, all but its last PREFILL_STEP tokens, as prefill-only requests of
        PREFILL_STEP more tokens each, checking for cancellation between them. llama-server notices a closed
        connection only when it has a token to send, so one request for a long uncached prompt would keep it
        busy for seconds after a cancel (a newer keystroke, a pre-warm cancelled by a request in another
        file) and every request after it would wait. A cached prompt, or a call that cannot be cancelled
        (eval, bench: no cancel event), is sent as one request.
        Returns (tokens the steps processed, tokens the first step found cached, the steps' prompt seconds)."""
        if call.cancel is None:
            return 0, 0, 0.0
        target = self._target()
        prompt = call.prompt_ids
        done = self.sent.cached(target.url, prompt)
        processed, reused, seconds = 0, 0, 0.0
        while len(prompt) - done > PREFILL_STEP:
            if call.cancel.is_set():
                raise Cancelled()
            done += PREFILL_STEP
            body = {"prompt": prompt[:done], "n_predict": 0, "stream": True, "cache_prompt": True}
            self.sent.add(target.url, prompt[:done])
            timings: dict = {}
            for event in self._events(target, body, call.cancel):
                timings = _timings(event, timings)
                if event.get("stop"):
                    break
            if not processed:
                reused = int(timings.get("cache_n", 0))
            processed += int(timings.get("prompt_n", 0))
            seconds += timings.get("prompt_ms", 0.0) / 1000
        return processed, reused, seconds

    def _events(self, target: StreamTarget, body: dict, cancel):
        """The streamed events of one /completion request; a server that died mid-request is reported."""
        try:
            yield from sse_events(self.client, target, "/completion", body, cancel, self.config.retries)
        except BackendError:
            if self.server is not None and self.server.state == "ready" and not self.server.alive():
                raise BackendError(self.server.report_dead()) from None  # it died mid-request
            raise

    def _run(self, call: GenerateCall, prompt: list[int], seed: list[int], alternatives: int) -> tuple[GenerationResult, list[int]]:
        """One streamed /completion; the result and up to ``alternatives`` runner-up first tokens."""
        collector = Collector(self.tokenizer, call, self.end_ids | set(call.stop_ids), seed=seed)
        remaining = call.max_new_tokens - len(seed)
        body = {"prompt": prompt, "n_predict": 0 if call.prefill_only else max(1, remaining), "stream": True,
                "cache_prompt": True, "return_tokens": True, "timings_per_token": True,
                "temperature": 0.0, "top_k": 1, "samplers": ["top_k"], "repeat_penalty": 1.0}
        heal = self._remaining_heal(call.heal_text, seed)
        if heal:
            body["grammar"] = heal_grammar(heal)
        if alternatives:
            body["n_probs"] = alternatives + 4  # a few spare: end tokens and the chosen one are dropped
        runner_ups: list[int] = []
        timings: dict = {}
        done = call.prefill_only
        target = self._target()
        self.sent.add(target.url, prompt)
        for event in self._events(target, body, call.cancel):
            timings = _timings(event, timings)
            if alternatives and not runner_ups and event.get("completion_probabilities"):
                runner_ups = self._runner_ups(event, alternatives, heal)
            for token in event.get("tokens") or []:
                if done or collector.add_token(int(token)):
                    done = True
                    break
            if done or event.get("stop"):
                break
        result = collector.result(prefilled=int(timings.get("prompt_n", 0)), reused=int(timings.get("cache_n", 0)),
                                  prefill_s=timings["prompt_ms"] / 1000 if "prompt_ms" in timings else None)
        if call.prefill_only:
            result.stop_reason = "prefill_only"
        return result, runner_ups

    @staticmethod
    def _remaining_heal(heal: str, seed: list[int]) -> str:
        return heal if not seed else ""  # a forced first token is already compatible with the healed text

    def _runner_ups(self, event: dict, count: int, heal: str) -> list[int]:
        """Runner-up first tokens from the first event's probabilities (end tokens and tokens that do
        not fit the healed text left out)."""
        probs = event["completion_probabilities"][0]
        chosen = probs.get("id")
        out = []
        for item in probs.get("top_logprobs") or probs.get("top_probs") or []:
            token = int(item["id"])
            if token == chosen or token in self.end_ids:
                continue
            text = self.tokenizer.decode([token])
            if heal and not (text and (text.startswith(heal) or heal.startswith(text))):
                continue
            out.append(token)
            if len(out) == count:
                break
        return out

    def describe(self) -> dict:
        info = {"name": self.name, "model": Path(self.gguf).name if self.gguf else None}
        if self.server is not None:
            info.update(url=self.server.url, state=self.server.state, error=self.server.error,
                        restarts=self.server.restarts, pid=self.server.process.pid if self.server.process else None,
                        threads=self.server.threads)
        else:
            info.update(url=self.config.url, state="remote")
        return info

    def check(self) -> str:
        return f"{self.describe().get('url')}: " + super().check()

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()


def _timings(event: dict, previous: dict) -> dict:
    """The event's ``timings`` figures that are numbers (the status shows them; a server that sends them in
    another shape must not fail the completion), else the previous ones."""
    timings = event.get("timings")
    if not isinstance(timings, dict):
        return previous
    return {key: value for key, value in timings.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def heal_grammar(text: str) -> str:
    """A GBNF grammar for output that starts with ``text`` and continues freely."""
    escaped = []
    for ch in text:
        if ch in '"\\':
            escaped.append("\\" + ch)
        elif ch == "\n":
            escaped.append("\\n")
        elif ch == "\t":
            escaped.append("\\t")
        elif ch == "\r":
            escaped.append("\\r")
        elif ord(ch) < 0x20:
            escaped.append(f"\\x{ord(ch):02x}")
        else:
            escaped.append(ch)
    return f'root ::= "{"".join(escaped)}" .*'
