"""Memory as a layer (``integration="mal"``) and persistent memory tokens (``persistent_tokens``):
config validation, exactness (shut gates = the unpatched model; fresh memory = the ablation),
gradients to the trainable parts, checkpoint and state round trips, cached = uncached generation,
and ``titans-lsp train`` accepting both."""

from __future__ import annotations

import json

import pytest
from tiny_models import assert_cached_generation_equals_uncached
import torch

from titans_lsp.model.memory import PERSISTENT_LOGIT_INIT, MemoryConfig, MemoryState
from titans_lsp.model.patching import install_memory

CODE = "class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port\n"
PROMPT = "def load_config(path):\n    with open(path) as f:\n        return json.load(f)"

# (integration, persistent tokens): MAL alone, persistent tokens with each way of reading the memory
VARIANTS = [("mal", 0), ("additive", 3), ("mal", 3), ("mac", 3)]


def tiny_config(arch: str, **kw) -> MemoryConfig:
    settings = {"memory_dim": 32, "chunk_size": 8, "num_memory_tokens": 4,
                "layers": [1, 3] if arch == "llama" else None}  # Qwen3.5 default: its full-attention layers
    settings.update(kw)
    return MemoryConfig(**settings)


def ids_of(lm, text=PROMPT):
    return lm.tokenizer(text, return_tensors="pt").input_ids


def open_persistent(patch) -> None:
    """Give the persistent tokens real attention mass (as training would), so their effect is visible."""
    with torch.no_grad():
        for i in patch.layers:
            if patch.memory[str(i)].persistent_logit is not None:
                patch.memory[str(i)].persistent_logit.fill_(3.0)


def test_config_round_trip_and_bad_values():
    config = MemoryConfig(integration="mal", persistent_tokens=8)
    assert MemoryConfig.from_json(config.to_json()) == config
    assert MemoryConfig().persistent_tokens == 0  # off by default
    for bad, message in (({"persistent_tokens": -1}, "persistent_tokens must be a count"),
                         ({"persistent_tokens": "4"}, "persistent_tokens must be an integer"),
                         ({"persistent_tokens": True}, "persistent_tokens must be an integer"),
                         ({"persistent_tokens": 2.5}, "persistent_tokens must be an integer"),
                         ({"integration": "memory-as-layer"}, "integration must be one of"),
                         ({"update_rule": "ntp", "integration": "mal"}, "integration must stay 'additive'"),
                         ({"update_rule": "ntp", "persistent_tokens": 4}, "the ntp rule has none")):
        with pytest.raises(ValueError, match=message):
            MemoryConfig.from_dict(bad)


@pytest.mark.parametrize("rule", ["sgd", "titans"])
def test_mal_shut_and_fresh_are_the_unpatched_model_bit_for_bit(tiny, rule):
    model, ids = tiny.model, ids_of(tiny)
    with torch.no_grad():
        reference = model(ids).logits
        patch = install_memory(model, tiny_config(tiny.arch, update_rule=rule, integration="mal"))
        state = patch.new_state()
        with patch.activate(state):
            fresh = model(ids).logits
        stats = patch.prime(state, [CODE * 3], tiny.tokenizer, chunk_tokens=24)
        assert stats.chunks >= 2 and state.updates == stats.chunks
        with patch.activate(state, gates="shut"):
            shut = model(ids).logits
        with patch.activate(state):
            primed = model(ids).logits
        outside = model(ids).logits
        patch.uninstall()
        after = model(ids).logits
    assert torch.equal(fresh, reference)  # the empty memory reads exactly zero: memory == ablation
    assert torch.equal(shut, reference)  # the ablation skips the read: the unpatched model
    assert torch.equal(outside, reference) and torch.equal(after, reference)
    assert (primed - reference).abs().max() > 1e-3  # priming changed what attention sees


def test_mal_reads_before_attention_not_after(tiny):
    """The same primed state read as a layer before attention and added after it gives different outputs."""
    ids = ids_of(tiny)
    outputs = []
    for integration in ("mal", "additive"):
        patch = install_memory(tiny.model, tiny_config(tiny.arch, integration=integration))
        state = patch.new_state()
        patch.prime(state, [CODE * 3], tiny.tokenizer, chunk_tokens=24)
        with torch.no_grad(), patch.activate(state):
            outputs.append(tiny.model(ids).logits)
        patch.uninstall()
    assert (outputs[0] - outputs[1]).abs().max() > 1e-4


@pytest.mark.parametrize("integration,tokens", [v for v in VARIANTS if v[1]])
def test_persistent_tokens_shut_fresh_and_trained(tiny, integration, tokens):
    model, ids = tiny.model, ids_of(tiny)
    with torch.no_grad():
        reference = model(ids).logits
        patch = install_memory(model, tiny_config(tiny.arch, integration=integration, persistent_tokens=tokens))
        assert all(patch.memory[str(i)].persistent.shape == (tokens, model.config.hidden_size) for i in patch.layers)
        assert all(float(patch.memory[str(i)].persistent_logit) == PERSISTENT_LOGIT_INIT for i in patch.layers)
        state = patch.new_state()
        with patch.activate(state):
            fresh = model(ids).logits
        with patch.activate(state, gates="shut"):
            fresh_shut = model(ids).logits
        open_persistent(patch)
        with patch.activate(state):
            opened = model(ids).logits  # input-independent tokens: read even with an empty memory
        patch.prime(state, [CODE * 3], tiny.tokenizer, chunk_tokens=24)
        with patch.activate(state, gates="shut"):
            shut = model(ids).logits
        outside = model(ids).logits
        patch.uninstall()
        after = model(ids).logits
    assert (fresh - reference).abs().max() <= 1e-5  # untrained tokens draw ~e^-20 of the mass: fresh == ablation
    if integration == "additive":  # the additive read is scaled by sigmoid(-100), the existing tolerance
        assert (fresh_shut - reference).abs().max() <= 1e-5 and (shut - reference).abs().max() <= 1e-5
    else:
        assert torch.equal(fresh_shut, reference) and torch.equal(shut, reference)
    assert (opened - reference).abs().max() > 1e-3
    assert torch.equal(outside, reference) and torch.equal(after, reference)


@pytest.mark.parametrize("integration,tokens", VARIANTS)
def test_gradients_reach_the_trainable_parts(tiny, integration, tokens):
    model, ids = tiny.model, ids_of(tiny)
    patch = install_memory(model, tiny_config(tiny.arch, integration=integration, persistent_tokens=tokens))
    params = patch.trainable_parameters()
    state = patch.new_state()
    patch.prime(state, [CODE], tiny.tokenizer)
    with patch.activate(state):
        model(ids, labels=ids).loss.backward()
    for i in patch.layers:
        mem = patch.memory[str(i)]
        expected = [mem.gate, mem.out_proj, mem.retrieve_proj]
        if tokens:
            expected += [mem.persistent, mem.persistent_logit]  # tiny at init (e^-20), but not zero
        for p in expected:
            assert p.grad is not None and p.grad.abs().sum() > 0
    own = 3 + (2 if tokens else 0) + (1 if integration == "mac" else 0)
    assert len(params) == own * len(patch.layers)
    assert not any(p.requires_grad for p in model.parameters() if all(p is not q for q in params))


@pytest.mark.parametrize("integration,tokens", VARIANTS)
def test_checkpoint_and_state_round_trip(tiny, tmp_path, integration, tokens):
    model, ids = tiny.model, ids_of(tiny)
    config = tiny_config(tiny.arch, integration=integration, persistent_tokens=tokens)
    patch = install_memory(model, config)
    with torch.no_grad():
        for p in patch.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    open_persistent(patch)
    patch.save_parameters(tmp_path / "ckpt")
    state = patch.new_state()
    patch.prime(state, [CODE], tiny.tokenizer)
    state.save(tmp_path / "state.safetensors")
    with torch.no_grad(), patch.activate(state):
        expected = model(ids).logits
    patch.uninstall()

    again = install_memory(model, checkpoint=tmp_path / "ckpt")
    assert again.config.integration == integration and again.config.persistent_tokens == tokens
    loaded = MemoryState.load(tmp_path / "state.safetensors")
    with torch.no_grad(), again.activate(loaded):
        assert torch.equal(model(ids).logits, expected)
    again.uninstall()
    other = install_memory(model, tiny_config(tiny.arch, integration=integration, persistent_tokens=tokens + 1))
    with pytest.raises(ValueError, match="does not fit"):
        other.load_parameters(tmp_path / "ckpt")
    other.uninstall()


@pytest.mark.parametrize("integration,tokens", VARIANTS)
def test_cached_generation_equals_uncached_forward(tiny, integration, tokens):
    assert_cached_generation_equals_uncached(
        tiny, tiny_config(tiny.arch, update_rule="titans", integration=integration, persistent_tokens=tokens),
        CODE * 2, ids_of(tiny), setup=open_persistent)


def test_train_command_accepts_mal_with_persistent_tokens(tiny_llama_dir, tmp_path):
    """A two-step smoke run of `titans-lsp train` on the tiny model; the checkpoint carries the config."""
    from titans_lsp.cli import main
    from titans_lsp.model.patching import load_memory_config

    repos = []
    for r in range(3):
        repo = tmp_path / f"repo{r}"
        (repo / "pkg").mkdir(parents=True)
        (repo / "pkg" / "__init__.py").write_text(f"def helper_{r}(x):\n    return x + {r}\n")
        for f in range(2):
            (repo / "pkg" / f"use{f}.py").write_text(f"from pkg import helper_{r}\n\n\ndef run(y):\n"
                                                     f"    return helper_{r}(y) * {f}\n")
        repos.append(str(repo))
    memory = {"integration": "mal", "persistent_tokens": 2, "memory_dim": 16, "layers": [1, 3]}
    out = tmp_path / "run"
    code = main(["train", "--model", str(tiny_llama_dir), "--device", "cpu", "--data", *repos, "--out", str(out),
                 "--max-steps", "2", "--eval-every", "2", "--checkpoint-every", "2", "--warmup-steps", "1",
                 "--memory-config", json.dumps(memory), "--no-progress"])
    assert code == 0
    saved = load_memory_config(out)
    assert saved.integration == "mal" and saved.persistent_tokens == 2
    bad = main(["train", "--model", str(tiny_llama_dir), "--device", "cpu", "--data", *repos,
                "--out", str(tmp_path / "bad"), "--memory-config", json.dumps({"persistent_tokens": -2})])
    assert bad == 1


@pytest.mark.parametrize("integration,tokens", [
    ("mal", 0), ("additive", 2), ("mal", 2), ("mac", 2),
])
def test_engine_modes_and_the_static_decode_path(tiny_llama_dir, integration, tokens):
    """Through the engine: ablation completes exactly as `none`, memory changes completions, and the
    static-cache decode path (what a GPU captures as a graph) gives the eager loop's tokens."""
    from titans_lsp.backends.local import LocalBackend
    from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
    from titans_lsp.model.loading import load_model
    from titans_lsp.modes import Mode

    loaded = load_model(str(tiny_llama_dir), device="cpu")
    config = MemoryConfig(gate_init=3.0, memory_dim=32, layers=[1, 3], integration=integration,
                          persistent_tokens=tokens)  # wide-open gates: the memory visibly changes tokens
    eager = CompletionEngine(loaded, memory_config=config)
    static = CompletionEngine(backend=LocalBackend(loaded, decode="graph", window=256), memory_config=config)
    assert static.ensure_memory() is eager.ensure_memory()  # one patch on the shared model
    open_persistent(eager.ensure_memory())
    workspace = Workspace(memory=eager.new_memory_state())
    eager.prime(workspace, [CODE * 3])
    prefixes = ["import os\nimport sys\n\ndef main(", "class Server:\n    def __init__(self, host",
                "def load_config(path):\n    with open(path) as f:\n        return ",
                "    def start(self):\n        return self.", "for i in range(10):\n    print("]

    def complete(engine, mode, prefix):
        settings = CompletionSettings(mode=mode, max_new_tokens=8, max_seq=256, context_budget=64)
        return engine.complete(CompletionRequest(prefix=prefix, settings=settings, early_stop=False), workspace).raw

    differ = 0
    for prefix in prefixes:
        plain = complete(eager, Mode.NONE, prefix)
        assert complete(eager, Mode.ABLATION, prefix) == plain
        memory = complete(eager, Mode.MEMORY, prefix)
        differ += memory != plain
        for mode in (Mode.ABLATION, Mode.MEMORY):
            assert complete(static, mode, prefix) == complete(eager, mode, prefix), (mode, prefix)
    assert differ > 0  # the comparisons above could fail
