"""The decoding loop: reuse gives the same tokens as no reuse, healing, cancellation."""

from __future__ import annotations

import threading

import pytest
import torch

from titans_lsp.model.generation import Cancelled, PrefixCache, greedy_generate, heal_prompt
from titans_lsp.model.loading import load_model


@pytest.fixture(scope="module", params=["llama", "qwen3_5"])
def tiny(request, tiny_llama_dir, tiny_qwen_dir):
    return load_model(str(tiny_llama_dir if request.param == "llama" else tiny_qwen_dir), device="cpu")


def reference_greedy(model, ids: list[int], n: int) -> list[int]:
    """Plain recompute-everything greedy decoding, the ground truth for the cached loop."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([out])).logits[0, -1]
            out.append(int(torch.argmax(logits)))
    return out[len(ids):]


def test_greedy_matches_uncached_reference(tiny):
    ids = tiny.tokenizer("def load_config(path):\n    with open(path) as f:", add_special_tokens=False).input_ids
    result = greedy_generate(tiny.model, tiny.tokenizer, ids, 12)
    eos = tiny.tokenizer.eos_token_id
    expected = reference_greedy(tiny.model, ids, 12)
    if eos in expected:
        expected = expected[: expected.index(eos)]
    assert result.token_ids == expected


def test_prefix_cache_reuse_gives_identical_tokens(tiny):
    tok = tiny.tokenizer
    cache = PrefixCache()
    texts = ["class Server:\n    def __init__(self, host", "class Server:\n    def __init__(self, host, port):\n        self.",
             "class Server:\n    def start(self):\n        return"]
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        fresh = greedy_generate(tiny.model, tok, ids, 8)
        reused = greedy_generate(tiny.model, tok, ids, 8, cache=cache, cache_key="k")
        assert reused.token_ids == fresh.token_ids
    # The last prompt shares a prefix with the one before: part of it was reused where the cache can be cut.
    if "linear_attention" not in (getattr(tiny.model.config, "layer_types", None) or []):
        assert reused.reused > 0 and reused.prefilled < len(ids)


def test_extending_prompt_reuses_cache_for_recurrent_models_too(tiny):
    tok = tiny.tokenizer
    cache = PrefixCache()
    base = tok("for i in range(10):\n    print(i", add_special_tokens=False).input_ids
    first = greedy_generate(tiny.model, tok, base, 4, cache=cache, cache_key="k")
    # The user accepts the suggestion and types on: the new prompt extends everything cached.
    longer = base + first.token_ids[: first.decoded] + tok(" value", add_special_tokens=False).input_ids
    again = greedy_generate(tiny.model, tok, longer, 6, cache=cache, cache_key="k")
    assert again.reused == len(base) + first.decoded
    assert again.token_ids == greedy_generate(tiny.model, tok, longer, 6).token_ids


def test_cache_key_change_prevents_reuse(tiny):
    tok = tiny.tokenizer
    cache = PrefixCache()
    ids = tok("import os\nimport sys", add_special_tokens=False).input_ids
    greedy_generate(tiny.model, tok, ids, 3, cache=cache, cache_key="memory:1")
    result = greedy_generate(tiny.model, tok, ids, 3, cache=cache, cache_key="memory:2")
    assert result.reused == 0 and result.prefilled == len(ids)


def test_cancel_stops_before_the_next_step(tiny):
    ids = tiny.tokenizer("x = [1, 2, 3]", add_special_tokens=False).input_ids
    event = threading.Event()
    steps = []

    def stop(text: str) -> bool:
        steps.append(text)
        event.set()  # cancel right after the first token
        return False

    with pytest.raises(Cancelled):
        greedy_generate(tiny.model, tiny.tokenizer, ids, 20, stop=stop, cancel=event)
    assert len(steps) == 1


def test_healing_constrains_first_token_to_the_removed_text(default_model):
    tok = default_model.tokenizer
    ids = tok("def load_config(path):\n    with open(path) as f:\n        return ", add_special_tokens=False).input_ids
    healed_ids, heal_text = heal_prompt(tok, ids)
    assert heal_text == " " and healed_ids == ids[:-1]
    result = greedy_generate(default_model.model, tok, healed_ids, 8, heal_text=heal_text)
    first_piece = tok.decode(result.token_ids[:1])
    assert first_piece.startswith(" ") and first_piece.strip(), first_piece
    assert not result.text.startswith(" ")
    unhealed = greedy_generate(default_model.model, tok, ids, 8)
    assert result.text.strip() != unhealed.text.strip()  # the lone-space prompt derails the model


def test_no_healing_after_a_newline(tiny):
    ids = tiny.tokenizer("import os\n", add_special_tokens=False).input_ids
    assert heal_prompt(tiny.tokenizer, ids) == (ids, "")
