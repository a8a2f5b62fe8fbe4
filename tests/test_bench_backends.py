"""`titans-lsp bench --backends`: the cold prompt really has --cold-tokens tokens, and ratios are
against `local` from the same run."""

from __future__ import annotations

from titans_lsp.benchrun import _cold_prompt_ids, _ratios
from titans_lsp.model.loading import load_tokenizer


def test_short_trace_files_are_joined_until_the_cold_prompt_is_long_enough(tiny_llama_dir):
    tokenizer = load_tokenizer(str(tiny_llama_dir), None)
    own = "def cursor_file():\n    return 1\n"
    others = ["def other_%d():\n    pass\n" % i for i in range(3)]
    ids = _cold_prompt_ids(tokenizer, [own, *others], 400)
    assert len(ids) >= 400  # every text is far shorter than 400 tokens: they are cycled
    text = tokenizer.decode(ids)
    assert text.rstrip().endswith(own.rstrip())  # the trace's own file stays nearest the cursor
    assert all(other.strip() in text for other in others)
    assert _cold_prompt_ids(tokenizer, ["", ""], 10) == []  # nothing to build from: no endless loop


def test_ratios_are_each_backend_over_local_and_skip_missing_figures():
    local = {"none": {"p50_ms": 200.0, "p95_ms": 600.0, "ms_per_token": 80.0, "first_token_ms": None},
             "speed": {"decode_ms_per_token": 80.0, "cold_request_ms": 5000.0, "prefill_ms": 4000.0}}
    fast = {"none": {"p50_ms": 100.0, "p95_ms": 150.0, "ms_per_token": 20.0, "first_token_ms": 50.0},
            "speed": {"decode_ms_per_token": 16.0, "cold_request_ms": 4500.0, "prefill_ms": 4400.0}}
    ratios = _ratios({"local": local, "llamacpp": fast}, ["none"])
    entry = ratios["llamacpp/local"]
    assert entry["none.p50_ms"] == 0.5 and entry["none.p95_ms"] == 0.25 and entry["speed.decode_ms_per_token"] == 0.2
    assert entry["speed.cold_request_ms"] == 0.9 and entry["speed.prefill_ms"] == 1.1
    assert entry["none.first_token_ms"] is None
    assert _ratios({"llamacpp": fast}, ["none"]) == {}
