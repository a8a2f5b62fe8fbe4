"""CrossCodeEval prompt assembly, shared by the server and the eval.

The cross-file block is the reference ``scripts/eval.py`` format: a header, then per chunk a
``# the below code fragment is found in {filename}`` line and the chunk's non-empty lines as
comments, added in rank order while the block stays within ``budget_tokens``. The file prefix
is left-truncated so block + prefix fits ``max_seq - gen_tokens``. Block and prefix are
tokenized separately, without special tokens, so no BOS lands mid-sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

HEADER = "# Here are some relevant code fragments from other files of the repo:\n\n"


class SnippetLike(Protocol):
    filename: str
    text: str


@dataclass(frozen=True)
class Snippet:
    """A retrieved cross-file chunk."""

    filename: str
    text: str
    score: float = 0.0


def format_snippet(snippet: SnippetLike) -> str:
    lines = [f"# {line}" for line in snippet.text.splitlines() if line.strip()]
    return f"# the below code fragment is found in {snippet.filename}\n" + "\n".join(lines) + "\n\n"


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def crossfile_block(snippets: Sequence[SnippetLike], tokenizer, budget_tokens: int = 512) -> str:
    """The comment-prefixed block of ``snippets`` (rank order) within ``budget_tokens``; "" if none fit."""
    if not snippets or budget_tokens <= 0:
        return ""
    block = HEADER
    if _count(tokenizer, block) > budget_tokens:
        return ""
    added = 0
    for snippet in snippets:
        candidate = block + format_snippet(snippet)
        if _count(tokenizer, candidate) > budget_tokens:
            break
        block, added = candidate, added + 1
    return block if added else ""


def build_prompt_ids(tokenizer, block: str, prefix: str, max_seq: int = 2048, gen_tokens: int = 50) -> list[int]:
    """Token ids of ``block`` + ``prefix``, the prefix left-truncated to fit the window."""
    block_ids = tokenizer(block, add_special_tokens=False).input_ids if block else []
    prefix_ids = tokenizer(prefix, add_special_tokens=False).input_ids
    room = max(1, max_seq - gen_tokens - len(block_ids))
    return block_ids + prefix_ids[-room:]
