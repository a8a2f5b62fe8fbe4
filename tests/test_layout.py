"""Prompt layout that survives typing: a stable start, the block kept within a region, and reuse
through the engine giving exactly the completions of a fresh, uncached run."""

from __future__ import annotations

import pytest

from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.layout import BLOCK_REGION_LINES, DocumentLayout, block_still_fits, stable_prefix_ids
from titans_lsp.model.generation import greedy_generate, heal_prompt
from titans_lsp.model.loading import load_model
from titans_lsp.retrieval.prompt import Snippet

FILE = "".join(f"def handler_{i}(self, host, port):\n    self.host = host + str({i})\n    return self.port\n\n"
               for i in range(12))
TYPED = "class Server:\n    def start(self):\n        return self.host"


def keystrokes(step: int = 3):
    for n in range(1, len(TYPED) + 1, step):
        yield FILE + TYPED[:n]


def test_prefix_start_is_a_line_start_and_moves_rarely(tiny_llama_dir):
    tok = load_model(str(tiny_llama_dir), device="cpu").tokenizer
    layout = DocumentLayout()
    starts = []
    for prefix in keystrokes(step=1):
        ids = stable_prefix_ids(tok, prefix, 40, layout)
        assert len(ids) <= 40
        assert layout.start == 0 or prefix[layout.start - 1] == "\n"
        assert tok.decode(ids) == prefix[layout.start:]
        starts.append(layout.start)
    moves = sum(1 for a, b in zip(starts, starts[1:]) if a != b)
    assert starts[0] > 0 and moves <= 2, (starts[0], moves)
    # A plain left-truncation to the same room moves the first kept token on most keystrokes.
    firsts = [len(tok(prefix, add_special_tokens=False).input_ids) for prefix in keystrokes(step=1)]
    assert sum(1 for a, b in zip(firsts, firsts[1:]) if a != b) > 10 * max(moves, 1)


class CountingIndex:
    """A stand-in index whose answer depends on the whole prefix, so it changes every keystroke."""

    def __init__(self):
        self.calls = 0

    def retrieve(self, prefix, path, retriever="bm25", k=5):
        self.calls += 1
        return [Snippet(f"pkg/mod_{len(prefix) % 7}.py", "def helper(x):\n    return x + 1")]


@pytest.mark.parametrize("arch", ["llama", "qwen3_5"])
def test_typing_through_the_engine_reuses_and_matches_uncached(arch, tiny_llama_dir, tiny_qwen_dir):
    loaded = load_model(str(tiny_llama_dir if arch == "llama" else tiny_qwen_dir), device="cpu")
    engine = CompletionEngine(loaded)
    index = CountingIndex()
    workspace = Workspace(index=index)
    settings = CompletionSettings(mode="concat", max_new_tokens=4, max_seq=200, context_budget=60)
    reused = []
    for prefix in keystrokes(step=4 if arch == "llama" else 9):
        warm = engine.complete(CompletionRequest(prefix=prefix, settings=settings, doc_key="a.py", path="a.py",
                                                 early_stop=False), workspace)
        ids, heal = heal_prompt(loaded.tokenizer, warm.prompt_ids)
        fresh = greedy_generate(loaded.model, loaded.tokenizer, ids, 4, heal_text=heal, lookahead=0)
        assert warm.raw == fresh.text
        assert warm.prompt_tokens <= 200 - 4
        reused.append(warm.reused)
    assert index.calls == 1  # TYPED is 3 lines: one region, so one retrieval, not one per keystroke
    assert sum(r > 0 for r in reused) >= len(reused) - 3, reused


def test_block_is_kept_within_a_region_and_refreshed_outside_it():
    layout = DocumentLayout(block="# block", block_key=("concat",), block_anchor=FILE)
    assert block_still_fits(layout, ("concat",), FILE + "class Server:")
    assert block_still_fits(layout, ("concat",), FILE + "x = 1\n" * BLOCK_REGION_LINES + "y")
    assert not block_still_fits(layout, ("concat",), FILE + "x = 1\n" * (BLOCK_REGION_LINES + 1))  # moved on
    assert not block_still_fits(layout, ("hybrid",), FILE + "class Server:")  # other settings
    assert not block_still_fits(layout, ("concat",), "import os\n" + FILE)  # edited above the anchor
    assert not block_still_fits(layout, ("concat",), FILE[:40])  # the cursor moved above it
