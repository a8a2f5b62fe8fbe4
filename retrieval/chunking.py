"""Chunks of a file: CrossCodeEval's rg1 windows and tree-sitter definitions (signature + docstring)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

RG1_CHUNK_LINES = 10  # CrossCodeEval: 10 non-empty lines per chunk, non-overlapping windows
WORD_RE = re.compile(r"\w+")
FULL_BODY_MAX_LINES = 12  # short functions are shown whole; longer ones as signature + docstring
DOCSTRING_MAX_LINES = 4
CLASS_MAX_LINES = 16


@dataclass(frozen=True)
class Chunk:
    text: str
    index: int  # position among the file's chunks of the same kind
    start_line: int  # 0-based line numbers in the original file (inclusive)
    end_line: int
    kind: str = "rg1"  # "rg1" | "def"
    name: str = ""  # qualified name for definitions ("Class.method")


def bm25_tokens(text: str) -> list[str]:
    """CrossCodeEval's BM25 tokens: ``\\w+`` runs, case kept.

    The reference applies ``re.findall(r"\\w+")`` to NLTK ``word_tokenize`` output; NLTK's punkt data is
    not available offline, and on code the two differ only inside English contractions in comments.
    """
    return WORD_RE.findall(text)


def rg1_chunks(text: str, chunk_lines: int = RG1_CHUNK_LINES) -> list[Chunk]:
    """Drop empty lines, cut into non-overlapping windows; chunks without a word token are dropped
    (they never get an id in the reference either)."""
    lines = [(number, line) for number, line in enumerate(text.split("\n")) if line.strip()]
    chunks: list[Chunk] = []
    for start in range(0, len(lines), chunk_lines):
        window = lines[start:start + chunk_lines]
        body = "\n".join(line for _, line in window)
        if WORD_RE.search(body):
            chunks.append(Chunk(body, len(chunks), window[0][0], window[-1][0]))
    return chunks


def last_nonempty_lines(text: str, n: int = RG1_CHUNK_LINES) -> str:
    """The rg1 query: the last ``n`` non-empty lines of the prompt."""
    return "\n".join([line for line in text.split("\n") if line.strip()][-n:])


@lru_cache(maxsize=1)
def python_parser():
    import tree_sitter_python
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_python.language()))


def _docstring(body) -> object | None:
    for child in body.named_children:
        if child.type == "comment":
            continue
        if child.type == "expression_statement" and child.named_children and child.named_children[0].type == "string":
            return child
        return None
    return None


def _docstring_lines(lines: list[str], doc) -> list[str]:
    start, end = doc.start_point[0], doc.end_point[0]
    if end - start + 1 <= DOCSTRING_MAX_LINES:
        return lines[start:end + 1]
    indent = re.match(r"\s*", lines[start]).group(0)
    return lines[start:start + DOCSTRING_MAX_LINES - 1] + [indent + "... (docstring continues)"]


def _header_lines(lines: list[str], definition) -> list[str]:
    """The ``def``/``class`` line(s) up to the body (decorators excluded)."""
    body = definition.child_by_field_name("body")
    start = definition.start_point[0]
    stop = body.start_point[0] if body is not None and body.start_point[0] > start else start + 1
    return lines[start:stop]


def _summary(lines: list[str], node, definition, full_max: int) -> str:
    """Decorators + header + (shortened) docstring; a short function whole; for a class, also its
    attributes and method signatures, capped so one definition fits a cross-file block."""
    start, end = node.start_point[0], node.end_point[0]
    if definition.type == "function_definition" and end - start + 1 <= full_max:
        return "\n".join(lines[start:end + 1])
    out = lines[start:definition.start_point[0]] + _header_lines(lines, definition)
    body = definition.child_by_field_name("body")
    if body is None:
        return "\n".join(out)
    doc = _docstring(body)
    if doc is not None:
        out += _docstring_lines(lines, doc)
    if definition.type == "function_definition":
        if body.start_point[0] > definition.start_point[0]:
            out.append((re.match(r"\s*", lines[body.start_point[0]]).group(0) or "    ") + "...")
        return "\n".join(out)
    for item in body.named_children:
        if len(out) >= CLASS_MAX_LINES:
            out.append((re.match(r"\s*", lines[item.start_point[0]]).group(0)) + "...")
            break
        inner = item.child_by_field_name("definition") if item.type == "decorated_definition" else item
        if inner is not None and inner.type == "function_definition":
            header = _header_lines(lines, inner)
            out += lines[item.start_point[0]:inner.start_point[0]] + (header if len(header) <= 2 else header[:1])
        elif item.type == "expression_statement" and item.named_children and item.named_children[0].type == "assignment":
            out.append(lines[item.start_point[0]])
    return "\n".join(out)


def definition_chunks(text: str, full_max: int = FULL_BODY_MAX_LINES) -> list[Chunk]:
    """Module-level functions, classes (and their methods) and assignments, as compact chunks."""
    source = text.encode("utf-8", errors="replace")
    tree = python_parser().parse(source)
    lines = text.split("\n")
    chunks: list[Chunk] = []

    def add(node, definition, prefix: str) -> None:
        name_node = definition.child_by_field_name("name")
        if name_node is None:
            return
        name = prefix + name_node.text.decode("utf-8", errors="replace")
        chunks.append(Chunk(_summary(lines, node, definition, full_max), len(chunks), node.start_point[0],
                            node.end_point[0], "def", name))
        if definition.type == "class_definition":
            body = definition.child_by_field_name("body")
            for item in body.named_children if body is not None else []:
                inner = item.child_by_field_name("definition") if item.type == "decorated_definition" else item
                if inner is not None and inner.type == "function_definition":
                    add(item, inner, name + ".")

    for node in tree.root_node.named_children:
        definition = node.child_by_field_name("definition") if node.type == "decorated_definition" else node
        if definition is not None and definition.type in ("function_definition", "class_definition"):
            add(node, definition, "")
        elif node.type == "expression_statement" and node.named_children and node.named_children[0].type == "assignment":
            target = node.named_children[0].child_by_field_name("left")
            if target is not None and target.type == "identifier":
                start, end = node.start_point[0], node.end_point[0]
                body = "\n".join(lines[start:min(end, start + 4) + 1])
                chunks.append(Chunk(body, len(chunks), start, end, "def", target.text.decode("utf-8", errors="replace")))
    return chunks
