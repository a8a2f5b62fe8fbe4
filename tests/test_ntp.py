"""The ntp update rule (model/ntp.py): a low-rank delta on MLP down-projections trained on the
next-token loss while priming. Exactness (empty memory and shut gates = the base model bit for bit),
learning, clipping and retention, save/load, cached = uncached generation, the engine's modes."""

from __future__ import annotations

import pytest
from tiny_models import assert_cached_generation_equals_uncached
import torch

from titans_lsp.model.loading import load_model
from titans_lsp.model.memory import MemoryConfig, MemoryState
from titans_lsp.model.ntp import default_ntp_layers, ntp_step
from titans_lsp.model.patching import install_memory

CODE = "class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port\n"
PROMPT = "def load_config(path):\n    with open(path) as f:\n        return json.load(f)"


def ntp_config(**kw) -> MemoryConfig:
    settings = {"update_rule": "ntp", "ntp_rank": 4, "ntp_lr": 5.0, "ntp_steps": 2, "max_update_norm": 50.0}
    settings.update(kw)
    return MemoryConfig(**settings)


def ids_of(lm, text=PROMPT):
    return lm.tokenizer(text, return_tensors="pt").input_ids


def loss_on(model, ids) -> float:
    with torch.no_grad():
        return float(model(ids, labels=ids).loss)


def test_config_validation():
    assert MemoryConfig.from_json(ntp_config().to_json()) == ntp_config()
    for bad in ({"ntp_rank": 0}, {"ntp_steps": 0}, {"ntp_lr": 0.0}, {"ntp_decay": 1.0}, {"integration": "mac"}):
        with pytest.raises(ValueError):
            ntp_config(**bad)
    with pytest.raises(ValueError, match="ntp_optimizer must be one of"):
        ntp_config(ntp_optimizer="lion")
    with pytest.raises(ValueError, match="adam normalises per parameter"):
        ntp_config(ntp_optimizer="adam", ntp_normalize=True)


def test_default_layers_are_the_upper_quarter():
    assert default_ntp_layers(30) == [23, 24, 25, 26, 27, 28, 29]
    assert default_ntp_layers(4) == [3]
    assert default_ntp_layers(2) == [1]


def test_empty_memory_and_shut_gates_are_the_base_model_bit_for_bit(tiny):
    model, ids = tiny.model, ids_of(tiny)
    with torch.no_grad():
        reference = model(ids).logits
    patch = install_memory(model, ntp_config())
    assert patch.layers == default_ntp_layers(len(model.model.layers))
    state = patch.new_state()
    assert all(w.abs().sum() == 0 for i in state.layers for w in state.weights[i])
    with torch.no_grad(), patch.activate(state, gates="open"):
        fresh = model(ids).logits
    stats = patch.prime(state, [CODE * 3], tiny.tokenizer, chunk_tokens=24)
    assert stats.chunks >= 2 and state.updates == stats.chunks and stats.max_update_norm > 0
    with torch.no_grad():
        with patch.activate(state, gates="shut"):
            primed_shut = model(ids).logits
        with patch.activate(state, gates="open"):
            primed = model(ids).logits
        outside = model(ids).logits
    assert torch.equal(fresh, reference)  # empty memory == base model, bit for bit
    assert torch.equal(primed_shut, reference)  # ablation == base model, even with a full memory
    assert torch.equal(outside, reference)
    assert (primed - reference).abs().max() > 1e-3
    assert not any(p.requires_grad for p in model.parameters())
    patch.uninstall()


def prime_code(tiny, config: MemoryConfig):
    """Prime CODE into a fresh ntp memory; (state, loss on CODE before, after with gates open, after shut)."""
    model, text_ids = tiny.model, ids_of(tiny, CODE)
    patch = install_memory(model, config)
    try:
        state = patch.new_state()
        with patch.activate(state, gates="shut"):
            before = loss_on(model, text_ids)
        patch.prime(state, [CODE], tiny.tokenizer, chunk_tokens=256)
        with patch.activate(state, gates="open"):
            after = loss_on(model, text_ids)
        with patch.activate(state, gates="shut"):
            ablated = loss_on(model, text_ids)
    finally:
        patch.uninstall()
    return state, before, after, ablated


def test_priming_lowers_the_next_token_loss_of_the_primed_text(tiny):
    _, before, after, ablated = prime_code(tiny, ntp_config(ntp_steps=4, ntp_lr=200.0))
    assert after < before - 0.05
    assert ablated == before


def test_adam_priming_lowers_the_loss_and_keeps_only_b(tiny):
    """Adam within each chunk: the state holds B alone (moments restart), the primed text gets likelier."""
    state, before, after, ablated = prime_code(tiny, ntp_config(ntp_optimizer="adam", ntp_lr=0.05, ntp_steps=4))
    assert after < before - 0.05 and ablated == before
    assert all(len(state.weights[i]) == 1 and state.momentum[i][0].abs().sum() == 0 for i in state.layers)


def test_chunk_adam_first_step_is_the_sign():
    from titans_lsp.model.ntp import ChunkAdam

    grads = [torch.tensor([[3.0, -0.001], [0.0, 20.0]])]
    first = ChunkAdam().direction(grads)[0]
    torch.testing.assert_close(first, torch.tensor([[1.0, -1.0], [0.0, 1.0]]), atol=1e-4, rtol=0)


def test_step_is_clipped_and_retained():
    old = [torch.ones(3, 2), torch.zeros(4, 2)]
    grads = [torch.full((3, 2), 10.0), torch.full((4, 2), -10.0)]
    new, raw = ntp_step(old, grads, lr=1.0, decay=0.0, max_norm=1.0)
    change = torch.sqrt(sum((n - o).pow(2).sum() for n, o in zip(new, old)))
    assert raw > 1.0 and float(change) == pytest.approx(1.0, rel=1e-5)
    kept, _ = ntp_step(old, [torch.zeros_like(g) for g in grads], lr=1.0, decay=0.25, max_norm=0.0)
    assert torch.allclose(kept[0], 0.75 * old[0])  # retention toward zero without a gradient
    unit, _ = ntp_step(old, grads, lr=0.5, decay=0.0, max_norm=0.0, normalize=True)
    for n, o in zip(unit, old):
        assert float((n - o).norm()) == pytest.approx(0.5, rel=1e-5)  # lr per layer, whatever the gradient's scale


def test_write_with_small_clip_bounds_the_change(tiny):
    patch = install_memory(tiny.model, ntp_config(max_update_norm=0.01, ntp_steps=1))
    state = patch.new_state()
    norm = patch.write(state, ids_of(tiny, CODE))
    total = torch.sqrt(sum(state.weights[i][0].pow(2).sum() for i in state.layers))
    assert norm > 0.01 and float(total) <= 0.01 + 1e-6
    patch.uninstall()


def test_bad_inputs(tiny):
    patch = install_memory(tiny.model, ntp_config())
    state = patch.new_state()
    assert patch.write(state, ids_of(tiny)[:, :1]) == 0.0  # one token: nothing to predict, nothing written
    assert state.updates == 0
    with pytest.raises(ValueError, match="no parameters to train"):
        patch.write(state, ids_of(tiny), create_graph=True)
    assert patch.trainable_parameters() == []
    titans = MemoryState.fresh({i: [torch.zeros(8, 8)] for i in patch.layers})
    with pytest.raises(ValueError, match="shape does not match"):
        patch.check_state(titans)
    with pytest.raises(ValueError, match="shape does not match"):
        with patch.activate(titans):
            pass
    patch.uninstall()


def test_state_save_load_round_trip(tiny, tmp_path):
    assert_cached_generation_equals_uncached(tiny, ntp_config(), CODE * 2, ids_of(tiny))


def test_engine_modes_read_the_ntp_memory(tiny_llama_dir):
    """memory and hybrid read it, ablation is none's output, and the engine's KV reuse matches a fresh run."""
    from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
    from titans_lsp.modes import Mode

    engine = CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"), memory_config=ntp_config())
    workspace = Workspace(memory=engine.new_memory_state())
    stats = engine.prime(workspace, [CODE * 2])
    assert stats.tokens > 0 and workspace.memory.updates > 0

    def complete(mode: str, doc_key: str | None = None) -> str:
        settings = CompletionSettings(mode=Mode(mode), max_new_tokens=8)
        return engine.complete(CompletionRequest(prefix=PROMPT + "\n", settings=settings, early_stop=False,
                                                 snippets=[], doc_key=doc_key), workspace).raw

    assert complete("ablation") == complete("none")
    memory = complete("memory")
    assert complete("memory", doc_key="a") == memory
    assert complete("memory", doc_key="a") == memory  # second call reuses the document's KV cache
    complete("hybrid")  # runs (no snippets given: the block is empty)
    assert engine.patch.gate_values() == {i: 1.0 for i in engine.patch.layers}


def test_memory_config_flag(tmp_path):
    from titans_lsp.cli import UserError
    from titans_lsp.commands import memory_config_from

    assert memory_config_from(None) is None
    assert memory_config_from('{"update_rule": "ntp", "ntp_rank": 8}') == MemoryConfig(update_rule="ntp", ntp_rank=8)
    path = tmp_path / "memory.json"
    path.write_text('{"update_rule": "titans", "objective": "huber"}')
    assert memory_config_from(str(path)).objective == "huber"
    for bad in ('{"update_rule": "adam"}', "[1, 2]", "{not json", '{"nope": 1}'):
        with pytest.raises(UserError, match="--memory-config"):
            memory_config_from(bad)


def test_train_refuses_the_ntp_rule():
    import argparse

    from titans_lsp.cli import UserError
    from titans_lsp.commands.train import memory_config

    args = argparse.Namespace(memory_checkpoint=None, memory_config='{"update_rule": "ntp"}', gate_floor=None)
    with pytest.raises(UserError, match="test time"):
        memory_config(args)


def test_primer_persists_an_ntp_memory_and_refuses_a_mismatched_state(tmp_path, tiny_llama_dir):
    """Priming through the one Primer, saved and resumed; a state saved under another update rule
    starts fresh instead of loading (check_state), and the two configs keep separate files."""
    import shutil

    from server_client import write_fixture
    from titans_lsp.engine import CompletionEngine
    from titans_lsp.folder import FolderState
    from titans_lsp.priming import Primer

    lm = load_model(str(tiny_llama_dir), device="cpu")
    root = write_fixture(tmp_path / "repo")

    def folder() -> FolderState:
        state = FolderState(root.as_uri(), root, str(tmp_path / "cache"))
        state.load_index()
        return state

    engine = CompletionEngine(lm, memory_config=ntp_config())
    state = folder()
    result = Primer(state, engine).run()
    assert result.primed > 0 and state.workspace.memory.updates > 0
    again = folder()
    again.ensure_memory(engine)
    assert again.primed == state.primed
    assert all(torch.equal(a, b) for i in state.workspace.memory.layers
               for a, b in zip(again.workspace.memory.weights[i], state.workspace.memory.weights[i]))
    ntp_file, _ = again._memory_paths(engine)
    engine.patch.uninstall()

    titans = CompletionEngine(lm, memory_config=MemoryConfig(memory_dim=16, layers=[1, 3]))
    other = folder()
    titans_file, _ = other._memory_paths(titans)
    assert titans_file != ntp_file  # one state file per memory config
    shutil.copy(ntp_file, titans_file)  # a state of the wrong variant where the titans one belongs
    shutil.copy(ntp_file.with_name(ntp_file.name.replace("memory-", "primed-").replace(".safetensors", ".json")),
                titans_file.with_name(titans_file.name.replace("memory-", "primed-").replace(".safetensors", ".json")))
    other.ensure_memory(titans)
    assert other.primed == {} and other.workspace.memory.updates == 0  # refused, started fresh
    titans.patch.check_state(other.workspace.memory)
    titans.patch.uninstall()
