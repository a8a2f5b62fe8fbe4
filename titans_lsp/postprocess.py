"""Turn a raw model continuation into what an editor should insert at the cursor.

Rules: one line (or, with ``multiline``, the block that starts at the cursor); never repeat
the text that already follows the cursor (on its line, or the next lines of a block); never close a bracket that was not
opened; no trailing whitespace.
"""

from __future__ import annotations

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
MAX_BLOCK_LINES = 12


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def wants_block(prefix: str, multiline: str) -> bool:
    """Whether to complete a block: always, never, or (auto) at an empty line after ``:``."""
    if multiline == "always":
        return True
    if multiline == "never":
        return False
    line_start = prefix.rfind("\n") + 1
    if prefix[line_start:].strip():
        return False
    previous = [ln for ln in prefix[:line_start].splitlines() if ln.strip()]
    return bool(previous) and previous[-1].rstrip().endswith(":")


def block_indent(prefix: str) -> int:
    """Indentation of the line the cursor is on (the block's own level)."""
    return _indent(prefix[prefix.rfind("\n") + 1:])


def make_stop(prefix: str, multiline: str):
    """A ``stop(text)`` predicate for the decoder: end of line, or end of the block."""
    if not wants_block(prefix, multiline):
        line_has_text = bool(prefix[prefix.rfind("\n") + 1:].strip())

        def stop_line(text: str) -> bool:
            body = text if line_has_text else text.lstrip("\n")
            return "\n" in body and bool(body[: body.index("\n")].strip() or line_has_text)
        return stop_line

    base = block_indent(prefix)

    def stop_block(text: str) -> bool:
        lines = text.split("\n")
        if len(lines) > MAX_BLOCK_LINES:
            return True
        # A complete later line that dedents below the block ends it.
        return any(line.strip() and _indent(line) < base for line in lines[1:-1])
    return stop_block


def cut_unbalanced(line_prefix: str, completion: str) -> str:
    """Cut the completion before the first closer that has no opener on the line or in it."""
    stack: list[str] = []
    for ch in line_prefix:
        if ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS and stack and stack[-1] == CLOSERS[ch]:
            stack.pop()
    for i, ch in enumerate(completion):
        if ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            if not stack or stack[-1] != CLOSERS[ch]:
                return completion[:i]
            stack.pop()
    return completion


def drop_suffix_overlap(completion: str, line_suffix: str) -> str:
    """Remove the end of the completion that repeats the text after the cursor on its line."""
    rest = line_suffix.strip()
    if not rest:
        return completion
    body = completion.rstrip()
    if body.endswith(rest):
        return body[: len(body) - len(rest)]
    # Partial overlap: the completion ends with a prefix of the rest (e.g. "x)" before "):").
    for n in range(min(len(rest), len(body)), 0, -1):
        if body.endswith(rest[:n]) and rest[:n].strip() and rest[:n][0] in CLOSERS:
            return body[: len(body) - n]
    return completion


def cut_at_suffix(completion: str, suffix: str) -> str:
    """Cut a multi-line completion where it starts repeating the text after the cursor: at the first
    line (after its first) equal to the suffix's next non-empty line. A fill-in-the-middle model sees
    those lines and often writes them again before it ends the middle."""
    following = next((line.strip() for line in suffix.split("\n")[1:] if line.strip()), None)
    if following is None or "\n" not in completion:
        return completion
    lines = completion.split("\n")
    for i in range(1, len(lines)):
        if lines[i].strip() == following:
            return "\n".join(lines[:i]).rstrip()
    return completion


def clean_completion(raw: str, prefix: str, suffix: str, multiline: str = "auto") -> str:
    """The text to insert at the cursor for a raw continuation ``raw`` of ``prefix``."""
    line_prefix = prefix[prefix.rfind("\n") + 1:]
    line_suffix = suffix.split("\n", 1)[0]
    if wants_block(prefix, multiline):
        base = block_indent(prefix)
        lines = raw.split("\n")
        if line_prefix and not line_prefix.strip():
            lines[0] = lines[0].lstrip(" \t")  # the cursor already sits at the block's indentation
        kept = [lines[0]]
        for line in lines[1:]:
            if line.strip() and _indent(line) < base:
                break
            kept.append(line)
        text = "\n".join(kept[:MAX_BLOCK_LINES]).rstrip()
        return cut_at_suffix(text, suffix)
    text = raw if line_prefix.strip() else raw.lstrip("\n")
    text = text.split("\n", 1)[0].rstrip()
    text = drop_suffix_overlap(text, line_suffix)
    text = cut_unbalanced(line_prefix, text)
    return text.rstrip()
