"""Prompt assembly: CrossCodeEval's block format, the token budget, truncation, no stray BOS."""

from __future__ import annotations

import random

import pytest

from tiny_models import make_tokenizer
from titans_lsp.retrieval.index import Snippet
from titans_lsp.retrieval.prompt import build_prompt_ids, count_tokens, crossfile_block


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def random_snippets(rng: random.Random, n: int) -> list[Snippet]:
    words = ["self", "config", "return", "def", "(", ")", ":", "=", "load", "path", "x", "1", "'a'", "\t", "é"]
    out = []
    for i in range(n):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randrange(1, 12))) for _ in range(rng.randrange(1, 12))]
        if rng.random() < 0.3:
            lines.insert(1, "")
        out.append(Snippet(f"pkg/mod_{i}.py", "\n".join(lines), 1.0))
    return out


def test_block_format(tokenizer):
    block = crossfile_block([Snippet("a/b.py", "def f(x):\n\n    return x", 1.0), {"filename": "c.py", "retrieved_chunk": "y = 2"}],
                            tokenizer, budget_tokens=10_000)
    assert block == ("# Here are some relevant code fragments from other files of the repo:\n\n"
                     "# the below code fragment is found in a/b.py\n# def f(x):\n#     return x\n\n"
                     "# the below code fragment is found in c.py\n# y = 2\n\n")
    assert crossfile_block([], tokenizer) == ""
    assert crossfile_block(random_snippets(random.Random(0), 3), tokenizer, budget_tokens=5) == ""


@pytest.mark.parametrize("budget", [20, 64, 128, 512])
def test_budget_never_exceeded(tokenizer, budget):
    rng = random.Random(budget)
    for _ in range(40):
        snippets = random_snippets(rng, rng.randrange(1, 12))
        block = crossfile_block(snippets, tokenizer, budget_tokens=budget)
        assert count_tokens(tokenizer, block) <= budget
        if block:  # chunks are kept in rank order, stopping at the first that does not fit
            included = block.count("# the below code fragment is found in")
            assert [f"found in {s.filename}\n" in block for s in snippets[:included]] == [True] * included
            assert all(f"found in {s.filename}\n" not in block for s in snippets[included:])


def test_prompt_ids_truncate_left_without_bos_inside(tokenizer):
    block = crossfile_block(random_snippets(random.Random(1), 4), tokenizer, budget_tokens=64)
    prefix = "def load_config(path):\n    with open(path) as f:\n        return json.load(f)\n" * 40
    ids = build_prompt_ids(tokenizer, block, prefix, max_seq=256, gen_tokens=50)
    block_ids = tokenizer.encode(block, add_special_tokens=False)
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    assert len(ids) == 256 - 50
    assert ids[:len(block_ids)] == block_ids and ids[len(block_ids):] == prefix_ids[-(206 - len(block_ids)):]
    assert tokenizer.bos_token_id not in ids
    assert build_prompt_ids(tokenizer, block, prefix, max_seq=256) == ids  # deterministic
    short = build_prompt_ids(tokenizer, "", "x = 1", max_seq=256)
    assert short == tokenizer.encode("x = 1", add_special_tokens=False)


def test_bos_only_at_start_for_tokenizers_that_add_it(tokenizer):
    from tokenizers import processors

    tokenizer = make_tokenizer()
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>", bos)])
    assert tokenizer("a").input_ids[0] == bos
    ids = build_prompt_ids(tokenizer, "# block\n\n", "def f():\n    return 1\n", max_seq=64, gen_tokens=8)
    assert ids[0] == bos and bos not in ids[1:]


def test_block_in_the_language_comment_syntax(tokenizer):
    block = crossfile_block([Snippet("src/cart.ts", "export class Cart {\n\n  add(): void {}\n}", 1.0)], tokenizer,
                            budget_tokens=10_000, comment="//")
    assert block == ("// Here are some relevant code fragments from other files of the repo:\n\n"
                     "// the below code fragment is found in src/cart.ts\n// export class Cart {\n//   add(): void {}\n// }\n\n")
