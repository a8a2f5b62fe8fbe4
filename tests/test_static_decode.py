"""The static-cache decode path (model/static_decode.py) against today's dynamic-cache loop, on CPU.

On a CPU the decoder runs the step it would capture as a CUDA graph eagerly over the same static
buffers (static KV cache, DeltaNet states, static memory weights), so these tests check the code the
GPU replays: same tokens in every memory mode, prefix reuse across keystrokes without rebuilding the
cache, a published memory copied into the static buffers. Capture itself needs a GPU
(scripts/gpu-check, evals/gpu_bench.py --graphs both)."""

from __future__ import annotations

import pytest
import torch

from titans_lsp.backends.config import BackendConfig
from titans_lsp.backends.local import LocalBackend
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.model.generation import PrefixCache, greedy_generate, restore_to, snapshot_recurrent
from titans_lsp.model.loading import load_model
from titans_lsp.model.memory import MemoryConfig
from titans_lsp.model.static_decode import StaticDecoder
from titans_lsp.modes import Mode
from titans_lsp.retrieval.prompt import Snippet

# Open gates wide (sigmoid(3) ~ 0.95) so a primed memory visibly changes the tokens: a path that ignored
# the memory would then disagree with the eager loop.
STRONG_MEMORY = MemoryConfig(gate_init=3.0, memory_dim=32)

PRIMING = ["class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port\n",
           "def load_config(path):\n    with open(path) as f:\n        return json.load(f)\n"] * 3

PREFIXES = [
    "import os\nimport sys\n\ndef main(",
    "class Server:\n    def __init__(self, host",
    "def load_config(path):\n    with open(path) as f:\n        return ",
    "if __name__ == '__main__':\n    main(sys.",
]
SNIPPETS = [Snippet("pkg/server.py", "class Server:\n    def start(self):\n        return self.host"),
            Snippet("pkg/config.py", "def load_config(path):\n    return json.load(open(path))")]


@pytest.fixture(scope="module", params=["llama", "qwen3_5"])
def engines(request, tiny_llama_dir, tiny_qwen_dir):
    """An eager and a static ("graph") engine over one tiny model with strong memory, and a primed workspace."""
    loaded = load_model(str(tiny_llama_dir if request.param == "llama" else tiny_qwen_dir), device="cpu")
    eager = CompletionEngine(loaded, memory_config=STRONG_MEMORY)
    static = CompletionEngine(backend=LocalBackend(loaded, decode="graph", window=256), memory_config=STRONG_MEMORY)
    workspace = Workspace(memory=eager.new_memory_state())
    eager.prime(workspace, PRIMING)
    assert workspace.memory.updates > 0
    return eager, static, workspace


def _complete(engine, workspace, mode: Mode, prefix: str, doc_key: str | None = None, max_new_tokens: int = 8):
    settings = CompletionSettings(mode=mode, max_new_tokens=max_new_tokens, max_seq=256, context_budget=64)
    request = CompletionRequest(prefix=prefix, settings=settings, early_stop=False, doc_key=doc_key,
                                snippets=SNIPPETS if mode.uses_context else None)
    return engine.complete(request, workspace)


@pytest.mark.parametrize("mode", [Mode.NONE, Mode.ABLATION, Mode.MEMORY, Mode.HYBRID])
def test_static_path_gives_the_eager_loops_tokens_in_every_mode(engines, mode):
    eager, static, workspace = engines
    for prefix in PREFIXES:
        expected = _complete(eager, workspace, mode, prefix)
        got = _complete(static, workspace, mode, prefix)
        assert got.raw == expected.raw, (mode, prefix)
        assert got.accepted == 0  # one token per step on the static path (the eager loop may draft)
    assert static.backend._decoder is not None and static.backend._decoder.max_len == 256


def test_the_memory_changes_the_tokens_so_the_comparison_has_power(engines):
    eager, _, workspace = engines
    differ = [p for p in PREFIXES if _complete(eager, workspace, Mode.MEMORY, p).raw
              != _complete(eager, workspace, Mode.ABLATION, p).raw]
    assert differ, "the primed memory changed no completion: the mode comparison above could not fail"


def test_keystrokes_reuse_the_static_cache_in_place(engines):
    """Typing on a line: the static cache is truncated/extended (the same buffers), tokens as the eager loop."""
    eager, static, workspace = engines
    base = "import os\nimport sys\n\nclass Server:\n    def __init__(self, host, port):\n        self.host = host\n        self."
    for mode in (Mode.NONE, Mode.MEMORY):
        cache_ids = []
        for typed in ["", "p", "po", "port", "port ="]:
            expected = _complete(eager, workspace, mode, base + typed, doc_key=f"eager-{mode}")
            got = _complete(static, workspace, mode, base + typed, doc_key=f"static-{mode}")
            assert got.raw == expected.raw, (mode, typed)
            assert got.reused == expected.reused  # the same prefix survives on both paths
            cache_ids.append(id(workspace.caches[f"static-{mode}"].past))
            if typed:
                assert got.reused > 0 and got.prefilled < got.prompt_tokens
        assert len(set(cache_ids)) == 1 and cache_ids[0] == id(static.backend._decoder.cache)  # never rebuilt


def test_publishing_copies_the_new_memory_into_the_static_buffers(engines):
    eager, static, workspace = engines
    prefix = PREFIXES[1]
    _complete(static, workspace, Mode.MEMORY, prefix)
    decoder = static.backend._decoder
    buffers = [t.data_ptr() for layer in sorted(decoder._memory.weights) for t in decoder._memory.weights[layer]]
    copies = decoder.memory_copies
    eager.prime(workspace, ["def start(self):\n    return self.host + ':' + str(self.port)\n"] * 4)  # publishes
    expected = _complete(eager, workspace, Mode.MEMORY, prefix)
    got = _complete(static, workspace, Mode.MEMORY, prefix)
    assert got.raw == expected.raw
    assert decoder.memory_copies == copies + 1
    assert [t.data_ptr() for layer in sorted(decoder._memory.weights) for t in decoder._memory.weights[layer]] == buffers
    for layer, ws in workspace.memory.weights.items():
        for mine, theirs in zip(decoder._memory.weights[layer], ws):
            assert torch.equal(mine, theirs)
    assert decoder.captures == 0  # no graphs on a CPU: the same step runs eagerly


def test_graph_key_follows_the_gates(engines):
    _, static, workspace = engines
    patch = static.ensure_memory()
    decoder = static.backend.decoder_for(100)
    assert decoder._bind_memory()[0] == ("plain", 1)
    with patch.activate(workspace.memory, gates="shut"):
        assert decoder._bind_memory()[0] == ("shut", 1)
    with patch.activate(workspace.memory, gates="open"):
        assert decoder._bind_memory()[0] == ("open", 1)
    with patch.activate(workspace.memory, gates="open", write=True), pytest.raises(RuntimeError, match="write"):
        decoder._bind_memory()


def test_switching_documents_claims_the_buffers(engines):
    eager, static, workspace = engines
    a, b = PREFIXES[0], PREFIXES[2]
    for prefix, key in [(a, "A"), (b, "B"), (a + "x", "A")]:
        expected = _complete(eager, workspace, Mode.NONE, prefix)
        got = _complete(static, workspace, Mode.NONE, prefix, doc_key=key)
        assert got.raw == expected.raw
    assert got.reused == 0  # B took the buffers, so A starts over
    decoder = static.backend._decoder
    assert decoder.holds(workspace.caches["A"]) and not decoder.holds(workspace.caches["B"])


def test_a_prompt_longer_than_the_window_falls_back_to_the_dynamic_loop(engines):
    eager, _, _ = engines
    model, tok = eager.model, eager.tokenizer
    decoder = StaticDecoder(model, 16, graphs="off")
    ids = tok(PREFIXES[2], add_special_tokens=False).input_ids
    assert len(ids) + 8 > 16
    cache = PrefixCache()
    got = greedy_generate(model, tok, ids, 8, cache=cache, cache_key="k", decoder=decoder, lookahead=0)
    assert got.token_ids == greedy_generate(model, tok, ids, 8, lookahead=0).token_ids
    assert cache.past is not decoder.cache


def test_warm_up_then_restore_leaves_the_cache_as_it_was(engines):
    """What a capture does before recording: real steps, then the cache put back (lengths and DeltaNet states)."""
    eager, _, _ = engines
    model, tok = eager.model, eager.tokenizer
    decoder = StaticDecoder(model, 64, graphs="off")
    ids = tok(PREFIXES[1], add_special_tokens=False).input_ids
    with torch.no_grad():
        decoder.claim(decoder)
        model(input_ids=torch.tensor([ids]), cache=decoder.cache, use_cache=True)
        position, states = int(decoder.cache.get_seq_length()), snapshot_recurrent(decoder.cache)
        first = decoder.step(5).clone()
        decoder.step(7)
        restore_to(decoder.cache, position, states)
        assert int(decoder.cache.get_seq_length()) == position
        assert torch.equal(decoder.step(5), first)


def test_bad_decoder_arguments_are_refused(engines):
    eager, _, _ = engines
    with pytest.raises(ValueError, match="graphs"):
        StaticDecoder(eager.model, 64, graphs="fast")
    with pytest.raises(ValueError, match="CUDA"):
        StaticDecoder(eager.model, 64, graphs="cuda-graph")
    with pytest.raises(ValueError, match="max_len"):
        StaticDecoder(eager.model, 1)
    with pytest.raises(ValueError, match="decode"):
        LocalBackend(eager.loaded, decode="fast")
    with pytest.raises(ValueError, match="decode"):
        BackendConfig(decode="fast")
    with pytest.raises(ValueError, match="local backend"):
        BackendConfig(name="openai", url="http://127.0.0.1:8000/v1", decode="graph")
    assert BackendConfig(name="auto", decode="graph").decode == "graph"  # auto's local part decodes with it


def test_the_window_grows_when_a_call_needs_more(engines):
    eager, _, _ = engines
    backend = LocalBackend(eager.loaded, decode="graph", window=64)
    assert backend.decoder_for(10).max_len == 64
    first = backend._decoder
    assert backend.decoder_for(64) is first
    assert backend.decoder_for(65).max_len == 128 and backend._decoder is not first
    assert LocalBackend(eager.loaded).decoder_for(10) is None  # eager: no decoder
