"""Turn a raw model continuation into what an editor should insert at the cursor.

Rules: one line (or, with ``multiline``, the block that starts at the cursor); never repeat
the text that already follows the cursor (on its line, or the next lines of a block); never close a bracket that was not
opened; no trailing whitespace.

How a block is recognised depends on the file's language (retrieval/languages.py, ``block``):
``indent`` languages (Python, and files of unknown languages) open a block after ``:`` and end it
at a dedent; ``brace`` languages (TypeScript, JavaScript, Java, Go, Rust, C#, C, ...) open one after
``{``, end the line's completion at the end of its statement (the first ``;`` outside brackets and
strings), and never close a bracket that the text after the cursor already closes (editors insert
the closing bracket as the user types the opening one), nor the block's ``}`` when it is already there.
"""

from __future__ import annotations

import re

from titans_lsp.retrieval.languages import Language

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
MAX_BLOCK_LINES = 12


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _brace(language: Language | None) -> bool:
    return language is not None and language.block == "brace"


def wants_block(prefix: str, multiline: str, language: Language | None = None) -> bool:
    """Whether to complete a block: always, never, or (auto) at an empty line after ``:`` (``{`` in
    brace languages)."""
    if multiline == "always":
        return True
    if multiline == "never":
        return False
    line_start = prefix.rfind("\n") + 1
    if prefix[line_start:].strip():
        return False
    previous = [ln for ln in prefix[:line_start].splitlines() if ln.strip()]
    return bool(previous) and previous[-1].rstrip().endswith("{" if _brace(language) else ":")


def block_indent(prefix: str) -> int:
    """Indentation of the line the cursor is on (the block's own level)."""
    return _indent(prefix[prefix.rfind("\n") + 1:])


def make_stop(prefix: str, multiline: str, language: Language | None = None):
    """A ``stop(text)`` predicate for the decoder: end of line, or end of the block."""
    if not wants_block(prefix, multiline, language):
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


def clean_completion(raw: str, prefix: str, suffix: str, multiline: str = "auto",
                     language: Language | None = None) -> str:
    """The text to insert at the cursor for a raw continuation ``raw`` of ``prefix`` in a file of
    ``language`` (None: the indent rules, as for Python and plain text)."""
    if _brace(language):
        return _clean_brace(raw, prefix, suffix, multiline, language)
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


# ---- brace languages -------------------------------------------------------------------------------------
QUOTES = "\"'`"
_LEADING_CLOSERS = re.compile(r"[ \t]*[)\]}]+[;,]?")


def _scan(text: str, stack: list[str], quote: str = "") -> str:
    """Update ``stack`` with the openers ``text`` leaves open (closers pop their match), skipping
    string literals; returns the quote still open at the end ("" when none)."""
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in QUOTES:
            quote = ch
        elif ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS and stack and stack[-1] == CLOSERS[ch]:
            stack.pop()
    return quote


def cut_at_suffix_closers(line_prefix: str, completion: str, line_suffix: str) -> str:
    """Cut the completion where it would close a bracket (opened before the cursor on this line) that
    the text after the cursor already closes, so ``foo(`` + ``a, b);`` before ``)`` gives ``a, b``;
    also cut before any closer that matches no opener."""
    stack: list[str] = []
    quote = _scan(line_prefix, stack)
    suffix_closes = 0  # how many of the open brackets, innermost first, the suffix closes
    for ch in line_suffix.lstrip():
        if ch not in CLOSERS or suffix_closes >= len(stack) or stack[-1 - suffix_closes] != CLOSERS[ch]:
            break
        suffix_closes += 1
    opened = len(stack)  # stack[opened - suffix_closes:opened] are closed by the text after the cursor
    escaped = False
    for i, ch in enumerate(completion):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in QUOTES:
            quote = ch
        elif ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            top = len(stack) - 1
            if not stack or stack[-1] != CLOSERS[ch] or opened - suffix_closes <= top < opened:
                return completion[:i]
            stack.pop()
    return completion


def statement_end(line_prefix: str, completion: str) -> str:
    """The completion up to its first ``;`` outside brackets and strings (counting the line before
    the cursor), the end of the statement."""
    stack: list[str] = []
    quote = _scan(line_prefix, stack)
    escaped = False
    for i, ch in enumerate(completion):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in QUOTES:
            quote = ch
        elif ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSERS:
            if stack and stack[-1] == CLOSERS[ch]:
                stack.pop()
        elif ch == ";" and not stack:
            return completion[:i + 1]
    return completion


def _suffix_closes_block(suffix: str, base: int) -> bool:
    """Whether the text after the cursor already holds the block's closing line: its first non-empty
    line after the cursor's starts with a closer, less indented than the block."""
    for line in suffix.split("\n")[1:]:
        if line.strip():
            return line.lstrip()[0] in CLOSERS and _indent(line) < base
    return False


def _clean_brace(raw: str, prefix: str, suffix: str, multiline: str, language: Language) -> str:
    line_prefix = prefix[prefix.rfind("\n") + 1:]
    line_suffix = suffix.split("\n", 1)[0]
    if wants_block(prefix, multiline, language):
        base = block_indent(prefix)
        lines = raw.split("\n")
        if line_prefix and not line_prefix.strip():
            lines[0] = lines[0].lstrip(" \t")
        kept, closing = [lines[0]], None
        for line in lines[1:]:
            if line.strip() and _indent(line) < base:
                closing = line
                break
            kept.append(line)
        text = "\n".join(kept[:MAX_BLOCK_LINES]).rstrip()
        cut = cut_at_suffix(text, suffix)
        if cut != text:  # it started repeating the lines after the cursor: the block is there already
            return cut
        if closing is not None and len(kept) <= MAX_BLOCK_LINES and not _suffix_closes_block(suffix, base):
            match = _LEADING_CLOSERS.match(closing)
            if match is not None:  # the block's own closing bracket, which the file does not have yet
                text += "\n" + match.group(0).rstrip()
        return text
    text = raw if line_prefix.strip() else raw.lstrip("\n")
    text = text.split("\n", 1)[0].rstrip()
    text = drop_suffix_overlap(text, line_suffix)
    text = cut_at_suffix_closers(line_prefix, text, line_suffix)
    text = statement_end(line_prefix, text)
    return text.rstrip()
