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


PACKINGS = ("pack", "reference")  # how crossfile_block fills the budget (see there)


def crossfile_block(snippets: Iterable, tokenizer, budget_tokens: int = 512, comment: str = "#",
                    packing: str = "pack") -> str:
    """The cross-file block: fragments in the order given (retrieval puts definitions of the names
    used near the cursor first, then ranked snippets) while the block fits ``budget_tokens``.

    ``packing="pack"`` (the server's, and the eval's server-retriever rows): a fragment already in the
    block (the same file, its lines contained in a packed fragment) is skipped, and the first fragment
    that does not fit is cut at a line boundary to the room left, never dropped, then the block ends.
    ``packing="reference"``: CrossCodeEval's rule, kept for the reference rows: stop at the first
    fragment that does not fit (so an oversized first fragment leaves no block).

    Each piece is counted separately as in the reference, then the joined block is re-counted, so the
    budget holds even where tokens merge across piece boundaries."""
    if packing not in PACKINGS:
        raise ValueError(f"unknown packing {packing!r}; choose from {', '.join(PACKINGS)}")
    header = BLOCK_HEADER.format(c=comment)
    used = count_tokens(tokenizer, header)
    kept: list[tuple[str, str, str]] = []  # (filename, text, piece as written)
    for snippet in snippets:
        filename, text = _fields(snippet)
        if packing == "pack":
            norm = _normalized(text)
            if not norm or any(name == filename and norm in _normalized(other) for name, other, _ in kept):
                continue
        piece = chunk_text(filename, text, comment=comment)
        cost = count_tokens(tokenizer, piece)
        if used + cost > budget_tokens:
            if packing == "pack" and (cut := _cut_to_fit(filename, text, comment, tokenizer, budget_tokens - used)):
                kept.append((filename, text, cut))
            break
        kept.append((filename, text, piece))
        used += cost
    while kept and (over := count_tokens(tokenizer, header + "".join(p for _, _, p in kept)) - budget_tokens) > 0:
        filename, text, last = kept.pop()  # tokens merged across piece boundaries: shorten the last piece
        if packing == "pack":
            cut = _cut_to_fit(filename, text, comment, tokenizer, count_tokens(tokenizer, last) - over)
            if cut and cut != last:
                kept.append((filename, text, cut))
    return header + "".join(p for _, _, p in kept) if kept else ""


def _normalized(text: str) -> str:
    """A fragment's non-empty lines, right-stripped: what the block shows of it (for de-duplication)."""
    return "\n".join(line.rstrip() for line in text.split("\n") if line.strip())


def _cut_to_fit(filename: str, text: str, comment: str, tokenizer, room: int) -> str:
    """The longest head of ``text`` (whole non-empty lines) whose piece costs at most ``room`` tokens;
    "" when not even its header and first line fit."""
    lines = [line for line in text.split("\n") if line]
    low, high = 0, len(lines)  # invariant: a head of `low` lines fits (0 lines: checked below)
    while low < high:
        mid = (low + high + 1) // 2
        if count_tokens(tokenizer, chunk_text(filename, "\n".join(lines[:mid]), comment)) <= room:
            low = mid
        else:
            high = mid - 1
    return chunk_text(filename, "\n".join(lines[:low]), comment) if low else ""


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
