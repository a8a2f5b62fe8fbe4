"""Titans memory: module-level recall, patching into tiny Qwen3.5 / Llama, states, checkpoints."""

from __future__ import annotations

import pytest
from tiny_models import assert_cached_generation_equals_uncached
import torch
import torch.nn.functional as F

from titans_lsp.model.loading import load_model
from titans_lsp.model.memory import (MemoryConfig, MemoryState, init_memory_weights, recall_error, sgd_update,
                                     titans_coefficients, titans_update)
from titans_lsp.model.patching import default_memory_layers, install_memory, load_memory_config

CODE = "class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port\n"
PROMPT = "def load_config(path):\n    with open(path) as f:\n        return json.load(f)"


def tiny_config(arch: str, **kw) -> MemoryConfig:
    settings = {"memory_dim": 32, "chunk_size": 8,
                "layers": [1, 3] if arch == "llama" else None}  # Qwen3.5 default: its full-attention layers (3, 7)
    settings.update(kw)
    return MemoryConfig(**settings)


def ids_of(lm, text=PROMPT):
    return lm.tokenizer(text, return_tensors="pt").input_ids


# ---------------------------------------------------------------------------------------------
# Module level


def test_config_json_round_trip_and_validation():
    config = MemoryConfig(memory_dim=64, update_rule="titans", layers=[1, 5], retrieve="tied", gate_floor=0.1)
    assert MemoryConfig.from_json(config.to_json()) == config
    assert MemoryConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        MemoryConfig(update_rule="adam")
    with pytest.raises(ValueError):
        MemoryConfig.from_dict({"memory_dim": 8, "nope": 1})


@pytest.mark.parametrize("rule", ["sgd", "titans"])
def test_recall_positive_control(rule):
    """Writing random key -> value pairs makes them recallable, far below the empty memory's error."""
    g = torch.Generator().manual_seed(0)
    dim, n = 64, 16
    keys = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    values = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    weights = init_memory_weights(dim, 2, g)
    momentum = [torch.zeros_like(w) for w in weights]
    untrained = recall_error(weights, keys, values)
    assert untrained == pytest.approx(1.0)
    for _ in range(10):
        if rule == "sgd":
            weights, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=4.0)
        else:
            weights, momentum, _ = titans_update(weights, momentum, keys, values, torch.full((n,), 0.5),
                                                 torch.full((n,), 0.5), torch.full((n,), 1e-4), 8, 4.0)
    assert recall_error(weights, keys, values) < 0.1 * untrained
    # unrelated keys are not "recalled" as these values
    other = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    assert recall_error(weights, other, values) > 0.5


def test_titans_closed_form_matches_the_recurrence():
    """The block coefficients reproduce S_t = eta S - theta g, W_t = (1 - alpha) W + S step by step."""
    g = torch.Generator().manual_seed(1)
    c = 6
    theta, eta, alpha = torch.rand(c, generator=g), torch.rand(c, generator=g), torch.rand(c, generator=g) * 0.1
    grads = torch.randn(c, 3, generator=g)
    w0, s0 = torch.randn(3, generator=g), torch.randn(3, generator=g)
    w, s = w0.clone(), s0.clone()
    for t in range(c):
        s = eta[t] * s - theta[t] * grads[t]
        w = (1 - alpha[t]) * w + s
    w_decay, s_to_w, b, s_decay, a = titans_coefficients(theta, eta, alpha)
    torch.testing.assert_close(w_decay * w0 + s_to_w * s0 - b @ grads, w)
    torch.testing.assert_close(s_decay * s0 - a @ grads, s)


def test_update_norm_is_clipped():
    g = torch.Generator().manual_seed(2)
    weights = init_memory_weights(16, 2, g)
    keys = torch.randn(200, 16, generator=g) * 100
    new, raw = sgd_update(weights, keys, torch.randn(200, 16, generator=g) * 100, lr=10.0, max_update_norm=1.0)
    change = torch.sqrt(sum((n - w).pow(2).sum() for n, w in zip(new, weights)))
    assert raw > 1.0 and float(change) == pytest.approx(1.0, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Patched tiny models


def test_default_layers(tiny):
    n = tiny.model.config.num_hidden_layers
    expected = [3, 7] if tiny.arch == "qwen3_5" else list(range(3, n, 4))
    assert default_memory_layers(tiny.model) == expected


@pytest.mark.parametrize("rule", ["sgd", "titans"])
def test_shut_gates_fresh_memory_and_priming(tiny, rule):
    model, ids = tiny.model, ids_of(tiny)
    with torch.no_grad():
        reference = model(ids).logits
        patch = install_memory(model, tiny_config(tiny.arch, update_rule=rule))
        state = patch.new_state()
        with patch.activate(state, gates="open"):
            fresh = model(ids).logits
        with patch.activate(state, gates="shut"):
            fresh_shut = model(ids).logits
        stats = patch.prime(state, [CODE * 3], tiny.tokenizer, chunk_tokens=24)
        assert stats.chunks >= 2 and stats.tokens > 24 and not stats.stopped_early
        with patch.activate(state, gates="shut"):
            primed_shut = model(ids).logits
        with patch.activate(state, gates="open"):
            primed = model(ids).logits
        outside = model(ids).logits
    assert (fresh - reference).abs().max() <= 1e-5  # fresh memory reads zero: memory == ablation
    assert (fresh_shut - reference).abs().max() <= 1e-5
    assert (primed_shut - reference).abs().max() <= 1e-5  # ablation == unpatched, even with a full memory
    assert (outside - reference).abs().max() == 0  # outside activate(): the unpatched model exactly
    assert (primed - reference).abs().max() > 1e-3  # priming changed what the model computes
    patch.uninstall()


def test_workspace_isolation(tiny):
    model, ids = tiny.model, ids_of(tiny)
    patch = install_memory(model, tiny_config(tiny.arch))
    a, b = patch.new_state(), patch.new_state()
    patch.prime(b, ["import os\nimport sys\n"], tiny.tokenizer)
    b_before = b.copy()
    with torch.no_grad(), patch.activate(b):
        logits_b = model(ids).logits
    patch.prime(a, [CODE * 2], tiny.tokenizer, chunk_tokens=16)
    with torch.no_grad(), patch.activate(b):
        logits_b_again = model(ids).logits
    with torch.no_grad(), patch.activate(a):
        logits_a = model(ids).logits
    assert torch.equal(logits_b, logits_b_again)
    assert all(torch.equal(x, y) for i in b.layers for x, y in zip(b.weights[i], b_before.weights[i]))
    assert (logits_a - logits_b).abs().max() > 1e-4


def test_reading_never_writes(tiny):
    model = tiny.model
    patch = install_memory(model, tiny_config(tiny.arch))
    state = patch.new_state()
    patch.prime(state, [CODE], tiny.tokenizer)
    before = state.copy()
    with torch.no_grad(), patch.activate(state):
        model(ids_of(tiny))
        model.generate(ids_of(tiny), max_new_tokens=3, do_sample=False)
    assert all(torch.equal(x, y) for i in state.layers for x, y in zip(state.weights[i], before.weights[i]))


@pytest.mark.parametrize("integration", ["additive", "mac"])
def test_cached_generation_equals_uncached_forward(tiny, integration):
    assert_cached_generation_equals_uncached(
        tiny, tiny_config(tiny.arch, update_rule="titans", integration=integration), CODE * 2, ids_of(tiny))


@pytest.mark.parametrize("integration,extra", [("mag", "mix"), ("mac", "memory_queries")])
def test_gradients_reach_retrieve_projections_and_gates(tiny, integration, extra):
    model, ids = tiny.model, ids_of(tiny)
    patch = install_memory(model, tiny_config(tiny.arch, integration=integration, num_memory_tokens=4))
    params = patch.trainable_parameters()
    state = patch.new_state()
    patch.prime(state, [CODE], tiny.tokenizer)
    with patch.activate(state):
        loss = model(ids, labels=ids).loss
    loss.backward()
    for i in patch.layers:
        mem = patch.memory[str(i)]
        own = mem.mix.weight if extra == "mix" else mem.memory_queries  # the integration's own parameter
        for p in (mem.retrieve_proj, mem.gate, mem.out_proj, own):
            assert p.grad is not None and p.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters())
    assert len(params) == (5 if integration == "mag" else 4) * len(patch.layers)


def test_tied_retrieve_has_no_retrieve_parameter(tiny):
    patch = install_memory(tiny.model, tiny_config(tiny.arch, retrieve="tied"))
    assert all(patch.memory[str(i)].retrieve_proj is None for i in patch.layers)
    assert len(patch.trainable_parameters()) == 2 * len(patch.layers)


def test_parameter_checkpoint_round_trip(tiny, tmp_path):
    model, ids = tiny.model, ids_of(tiny)
    config = tiny_config(tiny.arch, retrieve="tied", gate_floor=0.05)
    patch = install_memory(model, config)
    with torch.no_grad():
        for p in patch.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    patch.save_parameters(tmp_path / "ckpt")
    saved = {k: v.clone() for k, v in patch.memory.state_dict().items()}
    state = patch.new_state()
    patch.prime(state, [CODE], tiny.tokenizer)
    with torch.no_grad(), patch.activate(state):
        expected = model(ids).logits
    patch.uninstall()

    assert load_memory_config(tmp_path / "ckpt").retrieve == "tied"
    again = install_memory(model, checkpoint=tmp_path / "ckpt")
    assert again is not patch and again.config.gate_floor == 0.05
    for k, v in again.memory.state_dict().items():
        assert torch.equal(v, saved[k]), k
    with torch.no_grad(), again.activate(state):
        assert torch.equal(model(ids).logits, expected)
    other = tiny_config(tiny.arch, memory_dim=16)
    again.uninstall()
    mismatched = install_memory(model, other)
    with pytest.raises(ValueError, match="does not fit"):
        mismatched.load_parameters(tmp_path / "ckpt")


def test_state_save_load_copy_reset(tiny, tmp_path):
    patch = install_memory(tiny.model, tiny_config(tiny.arch, update_rule="titans"))
    state = patch.new_state()
    fresh = state.copy()
    patch.prime(state, [CODE], tiny.tokenizer)
    assert state.tokens_written > 0
    state.save(tmp_path / "ws" / "memory.safetensors")
    assert [p.name for p in (tmp_path / "ws").iterdir()] == ["memory.safetensors"]  # no temp file left
    loaded = MemoryState.load(tmp_path / "ws" / "memory.safetensors")
    assert loaded.tokens_written == state.tokens_written and loaded.layers == state.layers
    for table in ("weights", "momentum", "initial"):
        for i in state.layers:
            for x, y in zip(getattr(state, table)[i], getattr(loaded, table)[i]):
                assert torch.equal(x, y) and y.dtype == torch.float32
    assert any(m.abs().sum() > 0 for m in loaded.momentum[state.layers[0]])
    copy = state.copy()
    state.reset()
    assert all(torch.equal(x, y) for i in state.layers for x, y in zip(state.weights[i], fresh.weights[i]))
    assert not all(torch.equal(x, y) for i in copy.layers for x, y in zip(copy.weights[i], fresh.weights[i]))


def test_install_twice_and_uninstall(tiny):
    model, ids = tiny.model, ids_of(tiny)
    config = tiny_config(tiny.arch)
    patch = install_memory(model, config)
    assert install_memory(model, tiny_config(tiny.arch)) is patch
    with pytest.raises(ValueError):
        install_memory(model, tiny_config(tiny.arch, memory_dim=16))
    state = patch.new_state()
    patch.prime(state, [CODE], tiny.tokenizer)
    patch.uninstall()
    with torch.no_grad():
        reference = model(ids).logits
    assert not hasattr(model, "_titans_patch")
    mac = install_memory(model, tiny_config(tiny.arch, integration="mac"))  # another config once uninstalled
    mac.uninstall()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference)  # mac's attention routing is undone too
    with pytest.raises(ValueError, match="self-attention"):
        if tiny.arch == "qwen3_5":
            install_memory(model, MemoryConfig(memory_dim=8, layers=[0]))
        else:
            raise ValueError("self-attention: llama layers all have it")
    assert reference.shape[-1] == model.config.vocab_size


def test_prime_yields_and_reports_progress(tiny):
    patch = install_memory(tiny.model, tiny_config(tiny.arch))
    state = patch.new_state()
    ids = tiny.tokenizer(CODE * 4, add_special_tokens=False).input_ids
    calls = []

    def should_yield() -> bool:
        calls.append(1)
        return len(calls) > 2

    stats = patch.prime(state, [ids, ids], chunk_tokens=16, should_yield=should_yield)
    assert stats.stopped_early and stats.chunks == 2 and stats.tokens == 32
    assert stats.texts_completed == 0 and stats.offset_in_text == 32
    assert state.tokens_written == 32 and state.updates == 2


def test_bf16_model_keeps_memory_in_fp32(tiny_llama_dir):
    lm = load_model(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    patch = install_memory(lm.model, tiny_config("llama"))
    state = patch.new_state()
    patch.prime(state, [CODE], lm.tokenizer)
    assert all(w.dtype == torch.float32 for i in state.layers for w in state.weights[i])
    assert all(p.dtype == torch.float32 for p in patch.memory.parameters())
    with torch.no_grad(), patch.activate(state):
        out = lm.model(ids_of(lm)).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


@pytest.mark.slow
def test_default_model_memory_and_ablation(default_model):
    model, tok = default_model.model, default_model.tokenizer
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = model(ids).logits
    patch = install_memory(model, MemoryConfig())
    try:
        assert patch.layers == [3, 7, 11, 15, 19, 23, 27]
        state = patch.new_state()
        with torch.no_grad(), patch.activate(state):
            fresh = model(ids).logits
        stats = patch.prime(state, [CODE * 8], tok, chunk_tokens=128)
        assert stats.chunks >= 2
        with torch.no_grad(), patch.activate(state, gates="shut"):
            shut = model(ids).logits
        with torch.no_grad(), patch.activate(state):
            primed = model(ids).logits
        assert (fresh - reference).abs().max() <= 1e-5
        assert (shut - reference).abs().max() <= 1e-5
        assert (primed - reference).abs().max() > 1e-3
    finally:
        patch.uninstall()


def test_gradient_checkpointing_gives_the_same_gradients(tiny_llama_dir):
    """Checkpointed layers recompute their forward during backward: it must read the same memory
    (backward inside activate) and must not write anything."""
    grads = []
    for checkpointing in (False, True):
        lm = load_model(str(tiny_llama_dir), device="cpu")
        ids = ids_of(lm)
        patch = install_memory(lm.model, tiny_config("llama"))
        params = patch.trainable_parameters()
        state = patch.new_state()
        patch.prime(state, [CODE], lm.tokenizer)
        before = state.copy()
        if checkpointing:
            from titans_lsp.model.training import set_gradient_checkpointing

            assert set_gradient_checkpointing(lm.model, True)
            lm.model.train()
        with patch.activate(state):
            lm.model(ids, labels=ids, use_cache=False).loss.backward()
        grads.append([p.grad.clone() for p in params])
        assert all(torch.equal(x, y) for i in state.layers for x, y in zip(state.weights[i], before.weights[i]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------
# Memory as context ("mac": memory tokens prepended to attention)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_mac_fresh_shut_primed_and_uninstalled(tiny, attention):
    model, ids = tiny.model, ids_of(tiny)
    model.config._attn_implementation = attention
    with torch.no_grad():
        reference = model(ids).logits
        patch = install_memory(model, tiny_config(tiny.arch, integration="mac", num_memory_tokens=4))
        state = patch.new_state()
        with patch.activate(state):
            fresh = model(ids).logits
        patch.prime(state, [CODE * 3], tiny.tokenizer, chunk_tokens=24)
        with patch.activate(state, gates="shut"):
            shut = model(ids).logits
        with patch.activate(state):
            primed = model(ids).logits
            tokens = patch.memory[str(patch.layers[0])].memory_tokens(state.weights[patch.layers[0]])
        outside = model(ids).logits
        patch.uninstall()
        after = model(ids).logits
    assert tokens.shape == (4, model.config.hidden_size) and tokens.abs().max() > 0
    assert (fresh - reference).abs().max() <= 1e-5  # an empty memory draws no attention
    assert torch.equal(shut, reference)  # ablation: the layer's own attention, untouched
    assert torch.equal(outside, reference)
    assert (primed - reference).abs().max() > 1e-3
    assert torch.equal(after, reference)


def test_mac_chunked_prefill_with_cache_equals_one_forward(tiny):
    """Queries that start mid-sequence (a cached prefix, a later chunk of several tokens) see the
    memory tokens and exactly the causal part of the sequence."""
    from transformers import DynamicCache

    model, ids = tiny.model, ids_of(tiny, PROMPT + "\n" + CODE)
    patch = install_memory(model, tiny_config(tiny.arch, integration="mac", num_memory_tokens=3))
    state = patch.new_state()
    patch.prime(state, [CODE * 2], tiny.tokenizer, chunk_tokens=32)
    cut = ids.shape[1] // 2
    with torch.no_grad(), patch.activate(state):
        full = model(ids, use_cache=False).logits
        cache = DynamicCache(config=model.config)
        first = model(ids[:, :cut], cache=cache, use_cache=True).logits
        second = model(ids[:, cut:], cache=cache, use_cache=True).logits
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, atol=1e-4, rtol=1e-4)
