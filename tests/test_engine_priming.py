"""Double-buffered memory: priming writes a working copy, completions read a published snapshot,
so priming does not throw away the documents' KV caches (tiny Llama, memory gates nearly open so
the memory visibly changes completions)."""

from __future__ import annotations

import threading

import pytest
import torch

from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.model.loading import load_model
from titans_lsp.model.memory import MemoryConfig

CODE = "class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port\n"
OTHER = "for i in range(10):\n    print(i, value, result)\nx = [1, 2, 3]\ny = {'a': 1, 'b': 2}\n" * 4
PREFIX = "def load_config(path):\n    with open(path) as f:\n        return "
SETTINGS = CompletionSettings(mode="memory", max_new_tokens=8)


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    config = MemoryConfig(memory_dim=32, chunk_size=8, layers=[1, 3], gate_init=4.0)  # gate ~0.98: memory matters
    engine = CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"), memory_config=config)
    engine.publish_every_s = 3600.0
    return engine


def complete(engine, workspace, prefix, doc_key=None):
    return engine.complete(CompletionRequest(prefix=prefix, settings=SETTINGS, doc_key=doc_key), workspace)


def fresh_completion(engine, memory, prefix):
    """What a request with no cache gives on this memory (a workspace of its own)."""
    return complete(engine, Workspace(memory=memory.copy()), prefix)


def test_completions_during_priming_reuse_the_cache_and_read_the_snapshot(engine):
    workspace = Workspace()
    engine.prime(workspace, [CODE])  # one-shot priming publishes at the end
    snapshot, version = workspace.memory.copy(), workspace.memory_version
    assert workspace.pending is None and snapshot.tokens_written > 0
    complete(engine, workspace, PREFIX, doc_key="a.py")

    engine.prime(workspace, [OTHER], publish=False)  # a long priming run: not published yet
    assert workspace.memory_version == version and workspace.pending is not None
    newer = workspace.pending.copy()
    during = complete(engine, workspace, PREFIX + "f", doc_key="a.py")
    assert during.reused > 0  # the document's KV cache survived the priming write
    expected = fresh_completion(engine, snapshot, PREFIX + "f")
    assert during.raw == expected.raw and during.items == expected.items
    unpublished = fresh_completion(engine, newer, PREFIX + "f")
    assert unpublished.raw != expected.raw  # the working copy really differs: the snapshot was read

    assert engine.publish_memory(workspace) and not engine.publish_memory(workspace)
    assert workspace.memory_version == version + 1
    after = complete(engine, workspace, PREFIX + "f.", doc_key="a.py")
    assert after.reused == 0  # new memory: the old KV is not reused
    assert after.raw == fresh_completion(engine, newer, PREFIX + "f.").raw


def test_prime_then_complete_sees_exactly_the_primed_memory(engine):
    """The eval's path (prime, then complete) equals writing the state directly."""
    workspace = Workspace(memory=engine.new_memory_state())
    direct = engine.new_memory_state()
    engine.prime(workspace, [CODE, OTHER])
    engine.patch.prime(direct, [CODE, OTHER], engine.tokenizer, chunk_tokens=512)
    assert workspace.pending is None and workspace.memory.tokens_written == direct.tokens_written
    for layer in direct.layers:
        for got, want in zip(workspace.memory.weights[layer], direct.weights[layer]):
            assert torch.equal(got, want)
    assert complete(engine, workspace, PREFIX).raw == fresh_completion(engine, direct, PREFIX).raw


def test_long_priming_publishes_every_publish_every_s(engine):
    workspace = Workspace()
    engine.prime(workspace, [CODE], publish=False)
    version = workspace.memory_version
    assert workspace.pending is not None
    engine.publish_every_s = 0.0
    try:
        engine.prime(workspace, [OTHER], publish=False)  # the working copy is older than 0 s: published
    finally:
        engine.publish_every_s = 3600.0
    assert workspace.pending is None and workspace.memory_version == version + 1


def test_background_priming_keeps_reuse_between_publishes(engine):
    """Completions on one document while another thread primes (not publishing): each one after
    the first reuses the document's cache and gives exactly the snapshot's completion."""
    workspace = Workspace()
    engine.prime(workspace, [CODE])
    snapshot, version = workspace.memory.copy(), workspace.memory_version
    stop, started, primed = threading.Event(), threading.Event(), []

    def background() -> None:
        while not stop.is_set():
            primed.append(engine.prime(workspace, [OTHER], chunk_tokens=16, publish=False).tokens)
            started.set()

    complete(engine, workspace, PREFIX, doc_key="a.py")
    thread = threading.Thread(target=background, daemon=True)
    thread.start()
    try:
        assert started.wait(60)
        results = []
        for extra in ("f", "f.", "f.r"):
            results.append((extra, complete(engine, workspace, PREFIX + extra, doc_key="a.py")))
    finally:
        stop.set()
        thread.join()
    assert sum(primed) > 0 and workspace.memory_version == version
    for extra, completion in results:
        assert completion.reused > 0
        assert completion.raw == fresh_completion(engine, snapshot, PREFIX + extra).raw
