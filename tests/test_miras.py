"""Miras options of the associative update rules: the attentional-bias objective (l2, huber, lp)
and the retention gate (decay, l2_prev). Each reduces exactly to the study's rule at its neutral
setting, changes the update otherwise, and keeps the patch's exactness (fresh = shut = base model)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from titans_lsp.model.loading import load_model
from titans_lsp.model.memory import (L2, MemoryConfig, Objective, init_memory_weights, recall_error, sgd_update,
                                     titans_update)
from titans_lsp.model.patching import install_memory

CODE = "class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port\n"


def pairs(seed: int = 0, n: int = 12, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    keys = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    values = F.normalize(torch.randn(n, dim, generator=g), dim=-1) * 3  # errors beyond 1: huber clips them
    return keys, values, init_memory_weights(dim, 2, g)


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_config_validation():
    MemoryConfig(objective="lp", objective_p=3.0, retention="l2_prev", retention_strength=0.1, retention_steps=3)
    for bad in ({"objective": "l1"}, {"objective": "lp", "objective_p": 1.0}, {"huber_delta": 0.0},
                {"retention": "forget"}, {"retention": "decay", "update_rule": "titans"},
                {"retention": "decay", "retention_strength": 1.0}, {"retention_steps": 0}):
        with pytest.raises(ValueError):
            MemoryConfig(**bad)


def test_objectives_at_their_neutral_settings_are_l2_exactly():
    keys, values, weights = pairs()
    reference, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0)
    for objective in (Objective("lp", p=2.0), Objective("huber", delta=1e6)):
        new, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0, objective=objective)
        assert same(new, reference), objective
    n = keys.shape[0]
    args = (torch.full((n,), 0.5), torch.full((n,), 0.5), torch.full((n,), 1e-3), 4, 0.0)
    ref_w, ref_s, _ = titans_update(weights, [torch.zeros_like(w) for w in weights], keys, values, *args)
    lp_w, lp_s, _ = titans_update(weights, [torch.zeros_like(w) for w in weights], keys, values, *args,
                                  objective=Objective("lp", p=2.0))
    assert same(lp_w, ref_w) and same(lp_s, ref_s)


def test_objectives_change_the_error_they_feed_back():
    err = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.equal(Objective("huber", delta=1.0).error_grad(err), torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    assert torch.allclose(Objective("lp", p=3.0).error_grad(err), torch.tensor([-9.0, -0.25, 0.0, 0.25, 9.0]))
    assert torch.equal(L2.error_grad(err), err)
    keys, values, weights = pairs()
    reference, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0)
    huber, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0, objective=Objective("huber", delta=0.1))
    assert not same(huber, reference)


@pytest.mark.parametrize("objective", [Objective("huber", delta=0.5), Objective("lp", p=3.0), Objective("lp", p=1.5)])
def test_every_objective_still_memorizes(objective):
    keys, values, weights = pairs(n=8)
    values = values / 3
    for _ in range(30):
        weights, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=4.0, objective=objective)
    assert recall_error(weights, keys, values) < 0.3


def test_retention_gates():
    keys, values, weights = pairs()
    plain, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0)
    assert same(sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0, retention="decay", strength=0.0)[0], plain)
    assert same(sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0, retention="l2_prev", strength=0.5,
                           steps=1)[0], plain)  # one proximal step from W_prev is plain sgd
    decayed, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0, retention="decay", strength=0.2)
    for d, p, w in zip(decayed, plain, weights):
        torch.testing.assert_close(d, p - 0.2 * w)  # (1 - s) W - step
    three = weights
    for _ in range(3):
        three, _ = sgd_update(three, keys, values, lr=0.5, max_update_norm=0.0)
    prox0, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0, retention="l2_prev", strength=0.0, steps=3)
    for a, b in zip(prox0, three):
        torch.testing.assert_close(a, b)  # no proximal pull: three sgd steps
    prox, _ = sgd_update(weights, keys, values, lr=0.5, max_update_norm=0.0, retention="l2_prev", strength=0.9, steps=3)
    dist = lambda ws: float(sum((w - w0).pow(2).sum() for w, w0 in zip(ws, weights)))  # noqa: E731
    assert dist(prox) < dist(prox0)  # the retention holds the state nearer the previous one


@pytest.mark.parametrize("settings", [
    {"objective": "huber", "huber_delta": 0.1}, {"objective": "lp", "objective_p": 3.0},
    {"retention": "decay", "retention_strength": 0.05}, {"retention": "l2_prev", "retention_strength": 0.5, "retention_steps": 2},
    {"update_rule": "titans", "objective": "huber", "huber_delta": 0.1},
])
def test_patched_model_exactness_with_each_option(tiny_llama_dir, settings):
    lm = load_model(str(tiny_llama_dir), device="cpu")
    ids = lm.tokenizer("def load_config(path):\n    return path", return_tensors="pt").input_ids
    with torch.no_grad():
        reference = lm.model(ids).logits
    patch = install_memory(lm.model, MemoryConfig(memory_dim=32, chunk_size=8, layers=[1, 3], **settings))
    state = patch.new_state()
    with torch.no_grad():
        with patch.activate(state):
            fresh = lm.model(ids).logits
        patch.prime(state, [CODE * 2], lm.tokenizer, chunk_tokens=24)
        with patch.activate(state, gates="shut"):
            shut = lm.model(ids).logits
        with patch.activate(state):
            primed = lm.model(ids).logits
    assert (fresh - reference).abs().max() <= 1e-5 and (shut - reference).abs().max() <= 1e-5
    assert (primed - reference).abs().max() > 1e-4
    patch.uninstall()
