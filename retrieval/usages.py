"""Call sites: windows around the uses, in other workspace files, of the names the current file imports.

Why: on the Python dev set the default 135M model completes an expression far more often by copying
another file's use of it (``_CustomMarkdownify(**kwargs).convert_soup(...)``, a sibling converter's
``-> DocumentConverterResult:``) than from the name's definition. BM25 over the whole workspace finds
such lines only when the lines before the cursor happen to match them; this source looks only at lines
that use a name the file imports from a workspace module (retrieval/imports.py ``workspace_names``),
ranks their chunks by BM25 against the rg1 query, and shows each use with the lines that lead to it.

The index side (which chunks contain a name, their BM25 scores) is in retrieval/index.py
``WorkspaceIndex.usage_snippets``; this module holds the text rules: what counts as a use, and the window.
"""

from __future__ import annotations

import re
from functools import lru_cache

USAGE_LINES_BEFORE = 8  # non-empty lines shown before the use (what leads to it, as the prefix leads to the cursor)
USAGE_LINES_AFTER = 2  # and after it (the rest of a call that spans lines)
IMPORT_START = re.compile(r"\s*(from\s|import\s|export\s.*\sfrom\s)")
NAME_LIST_LINE = re.compile(r"\s*\w+(\s+as\s+\w+)?\s*,?\s*$")  # `    Foo,` inside a multi-line import


@lru_cache(maxsize=256)
def _use_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(?<![\w]){re.escape(name)}(?!\w)")


@lru_cache(maxsize=256)
def _definition_pattern(name: str) -> re.Pattern:
    """A line that defines ``name`` (its definition is the ``imports`` source's job, not a use)."""
    word = re.escape(name)
    return re.compile(rf"\s*(?:async\s+)?(?:def|class|function|interface|type|enum)\s+{word}(?!\w)"
                      rf"|\s*(?:export\s+)?(?:const|let|var)\s+{word}(?!\w)|\s*{word}\s*(?::[^=]*)?=(?!=)")


def import_lines(lines: list[str]) -> list[bool]:
    """For each line, whether it belongs to an import statement (one line, or a bracketed list that
    an import line opens: ``from x import (`` ... ``)``)."""
    out: list[bool] = []
    depth = 0
    for line in lines:
        starts = depth == 0 and IMPORT_START.match(line) is not None
        inside = depth > 0 or starts
        if inside:
            depth = max(0, depth + line.count("(") + line.count("{") - line.count(")") - line.count("}"))
        out.append(inside)
    return out


def first_use(lines: list[str], names: tuple[str, ...], start: int, end: int,
              skip: list[bool] | None = None) -> int | None:
    """Index of the first line in ``lines[start:end]`` that uses one of ``names`` as a whole word and
    is neither an import, a bare name in a list (a multi-line import's item), nor a definition of it."""
    skip = skip if skip is not None else import_lines(lines)
    for i in range(max(0, start), min(end, len(lines))):
        line = lines[i]
        if skip[i] or NAME_LIST_LINE.match(line):
            continue
        for name in names:
            if _use_pattern(name).search(line) and not _definition_pattern(name).match(line):
                return i
    return None


def use_window(lines: list[str], use: int, before: int = USAGE_LINES_BEFORE, after: int = USAGE_LINES_AFTER) -> tuple[int, int]:
    """(first, last + 1) line indexes of the window shown for the use at line ``use``."""
    if not 0 <= use < len(lines):
        raise ValueError(f"use line {use} outside 0..{len(lines) - 1}")
    return max(0, use - before), min(len(lines), use + after + 1)
