"""CrossCodeEval prompt assembly: the comment-prefixed cross-file block within a token budget, then
the left-truncated prefix. One implementation for the server and the eval, so both see the same
prompts for the same snippets.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from .index import Snippet

BLOCK_HEADER = "{c} Here are some relevant code fragments from other files of the repo:\n\n"
CHUNK_HEADER = "{c} the below code fragment is found in {filename}\n"
HEADER = BLOCK_HEADER.format(c="#")

__all__ = ["HEADER", "Snippet", "SnippetLike", "build_prompt_ids", "count_tokens", "crossfile_block"]


class SnippetLike(Protocol):
    """Anything with a filename and a text: a retrieved :class:`Snippet`, or an eval's chunk."""

    filename: str
    text: str


def _fields(snippet) -> tuple[str, str]:
    """(filename, text) of a Snippet or of a CrossCodeEval ``crossfile_context.list`` item."""
    if isinstance(snippet, dict):
        return snippet["filename"], snippet["retrieved_chunk"]
    return snippet.filename, snippet.text


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0


def chunk_text(filename: str, text: str, comment: str = "#") -> str:
    """One fragment as the reference writes it: a header line, then each non-empty line commented."""
    lines = "\n".join(f"{comment} {line}" for line in text.split("\n") if line)
    return CHUNK_HEADER.format(c=comment, filename=filename) + lines + "\n\n"


def crossfile_block(snippets: Iterable, tokenizer, budget_tokens: int = 512, comment: str = "#") -> str:
    """Fragments added in rank order while the block fits ``budget_tokens`` (stopping at the first that
    does not, like the reference); empty when none fits. Each piece is counted separately as in the
    reference, then the joined block is re-counted, so the budget holds even where tokens merge
    across piece boundaries."""
    header = BLOCK_HEADER.format(c=comment)
    used = count_tokens(tokenizer, header)
    parts: list[str] = []
    for snippet in snippets:
        piece = chunk_text(*_fields(snippet), comment=comment)
        cost = count_tokens(tokenizer, piece)
        if used + cost > budget_tokens:
            break
        parts.append(piece)
        used += cost
    while parts and count_tokens(tokenizer, header + "".join(parts)) > budget_tokens:
        parts.pop()
    return header + "".join(parts) if parts else ""


def leading_special_ids(tokenizer) -> list[int]:
    """The ids the tokenizer puts before any text by itself (a BOS token, for models that use one)."""
    with_special = tokenizer("a").input_ids
    without = tokenizer("a", add_special_tokens=False).input_ids
    for start in range(len(with_special) - len(without) + 1):
        if with_special[start:start + len(without)] == without:
            return list(with_special[:start])
    return []


def build_prompt_ids(tokenizer, block: str, prefix: str, max_seq: int = 2048, gen_tokens: int = 50) -> list[int]:
    """[BOS if the model uses one] + block + the prefix's last tokens, within ``max_seq - gen_tokens``.

    Block and prefix are tokenized separately (as in the reference) without special tokens, so no BOS
    lands between them. A block that leaves no room for the prefix is dropped.
    """
    lead = leading_special_ids(tokenizer)
    block_ids = tokenizer.encode(block, add_special_tokens=False) if block else []
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
    room = max_seq - gen_tokens - len(lead) - len(block_ids)
    if room <= 0:
        block_ids, room = [], max_seq - gen_tokens - len(lead)
    kept = prefix_ids[len(prefix_ids) - room:] if len(prefix_ids) > room else prefix_ids
    return lead + block_ids + kept
