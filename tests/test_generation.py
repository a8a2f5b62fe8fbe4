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


def test_typing_on_a_line_reuses_recurrent_state_snapshot(tiny):
    """Keystrokes on one line change the prompt's last tokens: pure-attention caches are cropped,
    DeltaNet states come back from the snapshot at the start of the line; tokens stay identical."""
    tok = tiny.tokenizer
    cache = PrefixCache()
    head = "import os\nimport sys\n\nclass Server:\n    def __init__(self, host, port):\n        self.host = host\n"
    line = "        self.port = port"
    results = []
    for n in range(4, len(line) + 1, 8):
        ids = tok(head + line[:n], add_special_tokens=False).input_ids
        reused = greedy_generate(tiny.model, tok, ids, 6, cache=cache, cache_key="k")
        assert reused.token_ids == greedy_generate(tiny.model, tok, ids, 6).token_ids
        results.append(reused)
    line_start = len(tok(head, add_special_tokens=False).input_ids)
    assert all(r.reused >= line_start - 1 for r in results[1:]), [r.reused for r in results]


def test_lookup_draft_copies_what_followed_the_last_ngram():
    from titans_lsp.model.generation import lookup_draft

    assert lookup_draft([5, 6, 7, 8, 9, 1, 5, 6, 7], 3) == [8, 9, 1]
    assert lookup_draft([1, 2, 3], 4) == []


def test_prompt_lookup_decoding_equals_plain_greedy(tiny):
    """Speculative prompt-lookup decoding keeps only guesses equal to the greedy token: the
    output must be identical to plain greedy, with and without a reused cache."""
    if "linear_attention" in (getattr(tiny.model.config, "layer_types", None) or []):
        pytest.skip("prompt lookup needs a cache that can be cut back; DeltaNet models decode plainly")
    tok = tiny.tokenizer
    text = ("class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port\n\n"
            "class Client:\n    def __init__(self, host, port):\n        self.")
    ids = tok(text, add_special_tokens=False).input_ids
    plain = greedy_generate(tiny.model, tok, ids, 24, lookahead=0)
    fast = greedy_generate(tiny.model, tok, ids, 24, lookahead=8)
    assert fast.token_ids == plain.token_ids and fast.text == plain.text
    cache = PrefixCache()
    for cut in (len(ids) - 10, len(ids)):
        again = greedy_generate(tiny.model, tok, ids[:cut], 24, cache=cache, cache_key="k", lookahead=8)
        assert again.token_ids == greedy_generate(tiny.model, tok, ids[:cut], 24, lookahead=0).token_ids
    assert fast.drafted > 0


class _OneTokenPerId:  # a minimal tokenizer: one token per id
    eos_token_id = 31

    def decode(self, ids):
        return " ".join(str(i) for i in ids)


def _cycle_model():
    """A one-layer Llama whose greedy output is a fixed cycle: next(t) = (t + 1) % 8."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                         eos_token_id=31, bos_token_id=30)).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        for t in range(8):
            model.model.embed_tokens.weight[t, t] = 1.0
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        for t in range(8):
            model.lm_head.weight[(t + 1) % 8, t] = 10.0
    return model


def test_prompt_lookup_accepts_guesses_when_the_model_copies():
    """A model that always predicts "copy the token after the previous occurrence" accepts guesses,
    so fewer forward passes produce the same tokens as plain greedy."""
    model, Tok = _cycle_model(), _OneTokenPerId
    prompt = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2]
    plain = greedy_generate(model, Tok(), prompt, 20, lookahead=0)
    fast = greedy_generate(model, Tok(), prompt, 20, lookahead=8)
    assert plain.token_ids == [(3 + i) % 8 for i in range(20)]
    assert fast.token_ids == plain.token_ids
    assert fast.accepted > 10 and fast.decoded < plain.decoded / 2


def test_cancelled_request_keeps_its_prefill_for_the_next_keystroke(tiny):
    """Editors cancel most requests while the user types: their prefill must not be thrown away."""
    tok = tiny.tokenizer
    cache = PrefixCache()
    ids = tok("class Server:\n    def __init__(self, host, port):\n        self.host = host\n", add_special_tokens=False).input_ids
    event = threading.Event()

    def stop(text: str) -> bool:
        event.set()  # the next keystroke arrives while decoding
        return False

    with pytest.raises(Cancelled):
        greedy_generate(tiny.model, tok, ids, 8, stop=stop, cancel=event, cache=cache, cache_key="k")
    longer = ids + tok("        self.port", add_special_tokens=False).input_ids
    again = greedy_generate(tiny.model, tok, longer, 4, cache=cache, cache_key="k")
    assert again.reused >= len(ids) - 1
    assert again.token_ids == greedy_generate(tiny.model, tok, longer, 4).token_ids


class _CancelAfter:
    """A cancel event that turns set after ``n`` checks (mid-prefill)."""

    def __init__(self, n: int):
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_prefill_is_cancellable_between_chunks_and_keeps_its_progress(tiny):
    tok = tiny.tokenizer
    cache = PrefixCache()
    ids = tok("import os\nimport sys\n\nclass Server:\n    def __init__(self, host, port):\n        self.host = host\n",
              add_special_tokens=False).input_ids
    with pytest.raises(Cancelled):
        greedy_generate(tiny.model, tok, ids, 4, cancel=_CancelAfter(2), cache=cache, cache_key="k", prefill_chunk=8)
    kept = len(cache.ids)
    assert 0 < kept < len(ids) and cache.ids == ids[:kept]
    again = greedy_generate(tiny.model, tok, ids, 4, cache=cache, cache_key="k", prefill_chunk=8)
    assert again.reused == kept
    assert again.token_ids == greedy_generate(tiny.model, tok, ids, 4).token_ids


def test_prompt_lookup_stops_guessing_after_wrong_drafts(monkeypatch):
    """Drafts that are wrong cost a wider forward each: after MAX_MISSED_DRAFTS in a row the request
    decodes plainly (same tokens)."""
    from titans_lsp.model import generation

    model, tok = _cycle_model(), _OneTokenPerId()
    calls = []

    def wrong_draft(ids, max_tokens, ngram_sizes=(3, 2)):
        calls.append(len(ids))
        return [(ids[-1] + 2) % 8]  # greedy continues with +1

    monkeypatch.setattr(generation, "lookup_draft", wrong_draft)
    prompt = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2]
    result = greedy_generate(model, tok, prompt, 12, lookahead=8)
    assert result.token_ids == [(3 + i) % 8 for i in range(12)]
    assert len(calls) == generation.MAX_MISSED_DRAFTS and result.accepted == 0
