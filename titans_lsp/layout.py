"""Prompt layout that stays put while the user types, so each keystroke reuses the cache.

A plain left-truncation (``prefix_ids[-room:]``) moves the prompt's first token on every
keystroke once a file is longer than the window: the token-by-token prefix shared with the
previous prompt is then empty and every request prefills from scratch. Here, per document:

- the kept prefix starts at a line start, and that start moves only when the prefix no longer
  fits; it then jumps ahead by a quarter of the window (hysteresis), so about that many tokens
  can be typed before the next move;
- the cross-file block is kept while the user works in one region: it is retrieved again only
  when the text above the line where it was retrieved changes, or the cursor moves more than
  ``BLOCK_REGION_LINES`` lines below that line (or above it). A new block changes the prompt from
  its start, so every refresh costs a full prefill (about 3 s for 1,500 tokens on a laptop CPU);
  within a region the block lags the CrossCodeEval query (the last lines before the cursor) by at
  most a few lines. The eval does not use this (no document key: retrieval per sample).
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK_REGION_LINES = 4  # new lines typed below the block's anchor before the block is retrieved again


@dataclass
class DocumentLayout:
    """One document's prompt layout state (kept in ``Workspace.layouts`` by document key)."""

    start: int = 0  # character offset in the prefix where the kept text begins (a line start)
    block: str = ""  # the cross-file block used last
    block_key: tuple | None = None  # the settings it was retrieved with
    block_anchor: str = ""  # the text before the cursor's line when it was retrieved


def block_still_fits(layout: DocumentLayout, key: tuple, prefix: str, region_lines: int = BLOCK_REGION_LINES) -> bool:
    """Whether the document's block can stay for a cursor after ``prefix``: same settings, the text
    above its anchor line unchanged, and the cursor at most ``region_lines`` lines below it."""
    if layout.block_key != key or not prefix.startswith(layout.block_anchor):
        return False
    return prefix.count("\n", len(layout.block_anchor)) <= region_lines


def lines_before_cursor(prefix: str) -> str:
    """The prefix up to (and including) the last newline: unchanged while typing within a line."""
    return prefix[: prefix.rfind("\n") + 1]


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids if text else []


CHARS_PER_TOKEN = 8  # a first guess of the most characters a token covers; the window grows when it is short


def stable_prefix_ids(tokenizer, prefix: str, room: int, layout: DocumentLayout, slack: float = 0.25) -> list[int]:
    """Token ids of the prefix from ``layout.start`` on, fitting ``room`` tokens. ``layout.start``
    is moved (to a later line start, leaving ``slack * room`` tokens free) only when needed.

    Only a window of text near the cursor is ever tokenized (about ``room * CHARS_PER_TOKEN``
    characters, widened while it holds too few tokens), so the cost does not grow with the
    document: a 10 MB file is laid out as fast as a small one."""
    room = max(1, room)
    start = layout.start
    if 0 <= start <= len(prefix) and (start == 0 or prefix[start - 1] == "\n") \
            and len(prefix) - start <= room * CHARS_PER_TOKEN * 4:
        ids = _ids(tokenizer, prefix[start:])
        if len(ids) <= room:
            return ids
    # Move the start: keep about (1 - slack) * room tokens, beginning at a line start.
    keep = max(1, int(room * (1.0 - slack)))
    span = keep * CHARS_PER_TOKEN
    while True:
        base = _line_start_at_or_after(prefix, max(0, len(prefix) - span))
        encoding = tokenizer(prefix[base:], add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        if len(offsets) > keep or base == 0:
            break
        span *= 4  # too few tokens in the window (long tokens or a short text): look further back
    if len(offsets) <= keep:
        start = base
    else:
        cut = base + offsets[len(offsets) - keep][0]
        newline = prefix.find("\n", cut)
        start = newline + 1 if 0 <= newline < len(prefix) - 1 else cut
    ids = _ids(tokenizer, prefix[start:])
    if len(ids) > room:  # a very long last line: fall back to a token cut
        ids = ids[-room:]
    layout.start = start
    return ids


def _line_start_at_or_after(text: str, offset: int) -> int:
    """The first line start at or after ``offset`` (``offset`` itself when no newline follows)."""
    if offset <= 0:
        return 0
    if text[offset - 1] == "\n":
        return offset
    newline = text.find("\n", offset)
    return newline + 1 if 0 <= newline < len(text) - 1 else offset
