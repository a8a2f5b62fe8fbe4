"""Prompt layout that stays put while the user types, so each keystroke reuses the cache.

A plain left-truncation (``prefix_ids[-room:]``) moves the prompt's first token on every
keystroke once a file is longer than the window: the token-by-token prefix shared with the
previous prompt is then empty and every request prefills from scratch. Here, per document:

- the kept prefix starts at a line start, and that start moves only when the prefix no longer
  fits; it then jumps ahead by a quarter of the window (hysteresis), so about that many tokens
  can be typed before the next move;
- the cross-file block is recomputed only when the text before the cursor's line changes
  (a new line, an edit elsewhere), not on every keystroke within a line; when retrieval returns
  the same block the prompt's start is unchanged anyway.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DocumentLayout:
    """One document's prompt layout state (kept in ``Workspace.layouts`` by document key)."""

    start: int = 0  # character offset in the prefix where the kept text begins (a line start)
    block: str = ""  # the cross-file block used last
    block_key: tuple | None = None  # (settings, text before the cursor's line) it was computed for


def lines_before_cursor(prefix: str) -> str:
    """The prefix up to (and including) the last newline: unchanged while typing within a line."""
    return prefix[: prefix.rfind("\n") + 1]


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids if text else []


def stable_prefix_ids(tokenizer, prefix: str, room: int, layout: DocumentLayout, slack: float = 0.25) -> list[int]:
    """Token ids of the prefix from ``layout.start`` on, fitting ``room`` tokens. ``layout.start``
    is moved (to a later line start, leaving ``slack * room`` tokens free) only when needed."""
    room = max(1, room)
    start = layout.start
    if 0 <= start <= len(prefix) and (start == 0 or prefix[start - 1] == "\n"):
        ids = _ids(tokenizer, prefix[start:])
        if len(ids) <= room:
            return ids
    # Move the start: keep about (1 - slack) * room tokens, beginning at a line start.
    encoding = tokenizer(prefix, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    keep = max(1, int(room * (1.0 - slack)))
    if len(offsets) <= keep:
        start = 0
    else:
        cut = offsets[len(offsets) - keep][0]
        newline = prefix.find("\n", cut)
        start = newline + 1 if 0 <= newline < len(prefix) - 1 else cut
    ids = _ids(tokenizer, prefix[start:])
    if len(ids) > room:  # a very long last line: fall back to a token cut
        ids = ids[-room:]
    layout.start = start
    return ids
