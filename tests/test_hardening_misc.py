"""Issue 16, finding 8's smaller items: a 10 MB document, invalid UTF-8 in an eval data file, and
`prime` with a cache it cannot write."""

from __future__ import annotations

import json
import time

import pytest

from titans_lsp.cli import main
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.evals.data import read_samples
from titans_lsp.fim import suffix_ids
from titans_lsp.layout import DocumentLayout, stable_prefix_ids
from titans_lsp.model.loading import load_model

LINE = "    result = compute_value(alpha, beta) + other_function(gamma)  # note\n"
BIG = LINE * (10_000_000 // len(LINE))  # 10 MB


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"))


def test_a_10_mb_document_is_laid_out_in_well_under_a_second(engine):
    tok = engine.tokenizer
    small = LINE * 200
    started = time.perf_counter()
    stable_prefix_ids(tok, small + "x = ", 1500, DocumentLayout())
    baseline = time.perf_counter() - started
    for prefix, suffix in [(BIG + "x = ", ""), (BIG[:len(BIG) // 2] + "x = ", BIG[len(BIG) // 2:])]:
        layout = DocumentLayout()
        started = time.perf_counter()
        ids = stable_prefix_ids(tok, prefix, 1500, layout)
        after = suffix_ids(tok, suffix, 400)
        seconds = time.perf_counter() - started
        # Generous bound for a shared 2-core machine (before the fix: about 25 s here).
        assert seconds < 1.0, f"{seconds:.2f} s (a 14 KB document: {baseline:.3f} s)"
        assert 0 < len(ids) <= 1500 and len(after) <= 400
        assert layout.start > 0 and prefix[layout.start - 1] == "\n"
        assert ids == tok(prefix[layout.start:], add_special_tokens=False).input_ids
    # Typing on keeps the start (the cache is reused), and the whole request is fast too.
    layout = DocumentLayout()
    first = stable_prefix_ids(tok, BIG + "x = ", 1500, layout)
    start = layout.start
    again = stable_prefix_ids(tok, BIG + "x = 1", 1500, layout)
    assert layout.start == start and again[:len(first) - 1] == first[:-1]
    request = CompletionRequest(prefix=BIG + "x = ", settings=CompletionSettings(mode="none", max_new_tokens=2),
                                doc_key="big.py", path="big.py")
    started = time.perf_counter()
    engine.complete(request, Workspace())
    assert time.perf_counter() - started < 10


def test_invalid_utf8_in_an_eval_data_file_is_skipped_with_its_line_number(tmp_path):
    path = tmp_path / "d.jsonl"
    good = {"prompt": "x = ", "groundtruth": "1", "metadata": {"task_id": "t/0"}}
    other = {**good, "metadata": {"task_id": "t/1"}}
    path.write_bytes(json.dumps(good).encode() + b"\n" + b'{"prompt": "\xff\xfe"}\n' + json.dumps(other).encode() + b"\n")
    data = read_samples(path)
    assert [s["metadata"]["task_id"] for s in data.samples] == ["t/0", "t/1"]
    assert data.problems == ["line 2: invalid UTF-8 at byte 12"]


def test_prime_with_a_cache_it_cannot_write_says_so_in_one_line(tmp_path, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache directory should be")  # unwritable even for root
    assert main(["prime", str(root), "--index-only", "--cache-dir", str(cache)]) == 1
    err = capsys.readouterr().err
    assert "cannot write the workspace state" in err and "Traceback" not in err
