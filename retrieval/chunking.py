"""Chunks of a file: CrossCodeEval's rg1 windows and tree-sitter definitions (signature + docstring).

Definitions are read per language (retrieval/languages.py): Python by its own chunker below, every
other language with a grammar by one generic chunker driven by the language's ``DefinitionRules``;
a file without a grammar has no definition chunks (its rg1 windows still index it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .languages import PYTHON, Language, parser

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


def python_parser():
    """The Python parser (the registry's; the Python grammar is a hard dependency)."""
    from .languages import parser

    return parser("python")


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


def definition_chunks(text: str, full_max: int = FULL_BODY_MAX_LINES, language: Language | None = None) -> list[Chunk]:
    """Top-level definitions (and class members) of ``text`` in ``language`` (default Python) as
    compact chunks; none for a language without a grammar."""
    if language is None or language is PYTHON:
        return _python_definition_chunks(text, full_max)
    if language.rules is None or parser(language.name) is None:
        return []
    return _generic_definition_chunks(text, language, full_max)


def _python_definition_chunks(text: str, full_max: int = FULL_BODY_MAX_LINES) -> list[Chunk]:
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


# ---- every other language: one chunker driven by the registry's DefinitionRules ----------------------------
VARIABLE_MAX_LINES = 5  # a constant is shown by its first lines, as Python's module-level assignments
HEADER_MAX_LINES = 6  # a long signature (generics, overloads) is cut after this many lines
MAX_LINE_CHARS = 240
MAX_DEFINITIONS = 2_000  # per file: more is generated code (a bundle), not definitions to look up


def _text(node) -> str:
    return node.text.decode("utf-8", errors="replace") if node is not None else ""


def _indent_of(line: str) -> str:
    return re.match(r"\s*", line).group(0)


def _last_row(node) -> int:
    """The node's last line (a Rust ``///`` comment ends at column 0 of the next line)."""
    row, column = node.end_point
    return row - 1 if column == 0 and row > node.start_point[0] else row


def _doc_comment(node, rules) -> tuple[int, int] | None:
    """(first, last) line of the comment block that ends right above ``node`` (JSDoc, ``///``, ``//``)."""
    first = None
    current = node.prev_named_sibling
    expected = node.start_point[0] - 1
    while current is not None and current.type in rules.doc_comments and _last_row(current) == expected:
        first = current.start_point[0]
        expected = first - 1
        current = current.prev_named_sibling
    return (first, node.start_point[0] - 1) if first is not None else None


def _doc_lines(lines: list[str], span: tuple[int, int] | None) -> list[str]:
    if span is None:
        return []
    start, end = span
    if end - start + 1 <= DOCSTRING_MAX_LINES:
        return lines[start:end + 1]
    return lines[start:start + DOCSTRING_MAX_LINES - 1] + [_indent_of(lines[start]) + " ... (comment continues)"]


def _closing_line(lines: list[str], node) -> list[str]:
    """The node's last line when it is only closing brackets (``}``, ``};``), to end a summary."""
    last = lines[node.end_point[0]]
    return [last] if last.strip() and not re.search(r"\w", last) else []


def _body(node):
    body = node.child_by_field_name("body")
    if body is None and node.type == "type_spec":  # Go: type X struct {...}
        body = node.child_by_field_name("type")
    return body


def _header(lines: list[str], start: int, node) -> list[str]:
    """From ``start`` to the line that opens the body (its ``{`` line), at most HEADER_MAX_LINES."""
    body = _body(node)
    stop = body.start_point[0] if body is not None else node.end_point[0]
    header = lines[start:stop + 1]
    if len(header) > HEADER_MAX_LINES:
        header = header[:HEADER_MAX_LINES - 1] + [_indent_of(header[0]) + "  ..."]
    return header


def _definition_name(node) -> str:
    name = node.child_by_field_name("name")
    if name is None and node.type == "impl_item":  # Rust: impl Trait for Type / impl Type
        name = node.child_by_field_name("type")
    return _text(name)


def _generic_summary(lines: list[str], outer, node, rules, full_max: int) -> str:
    """Doc comment + the definition whole when short; else its header and, for a function,
    ``...``; for a container, one line per member (capped), then its closing line."""
    doc = _doc_lines(lines, _doc_comment(outer, rules))
    start, end = outer.start_point[0], node.end_point[0]
    if end - start + 1 <= full_max:
        return "\n".join(doc + lines[start:end + 1])
    out = doc + _header(lines, start, node)
    body = _body(node)
    if body is None or node.type in rules.functions:
        if body is not None:
            out.append(_indent_of(lines[start]) + "  ...")
        return "\n".join(out + _closing_line(lines, node))
    listed = 0
    for member in body.named_children:
        row = member.start_point[0]
        if row <= body.start_point[0] or member.type in rules.doc_comments:
            continue
        if listed >= CLASS_MAX_LINES:
            out.append(_indent_of(lines[row]) + "...")
            break
        out.append(lines[row])
        listed += 1
    return "\n".join(out + _closing_line(lines, node))


def _declarator_chunk(lines: list[str], outer, declarator, rules, full_max: int) -> str:
    """A constant: its first lines (whole when short); a function-valued one like a function."""
    value = declarator.child_by_field_name("value")
    start, end = outer.start_point[0], declarator.end_point[0]
    doc = _doc_lines(lines, _doc_comment(outer, rules))
    if end - start + 1 <= max(full_max if value is not None and value.type in rules.function_values else 0,
                              VARIABLE_MAX_LINES):
        return "\n".join(doc + lines[start:end + 1])
    if value is not None and value.type in rules.function_values:
        return "\n".join(doc + _header(lines, start, value) + [_indent_of(lines[start]) + "  ..."]
                         + _closing_line(lines, declarator))
    return "\n".join(doc + lines[start:start + VARIABLE_MAX_LINES] + [_indent_of(lines[start]) + "  ..."])


def _wrapped(node) -> list:
    """What a wrapper holds: ``export``'s declaration, a namespace's body, a group's members."""
    declaration = node.child_by_field_name("declaration")
    if declaration is not None:
        return [declaration]
    body = node.child_by_field_name("body")
    if body is not None:
        return list(body.named_children)
    return list(node.named_children)


def _generic_definition_chunks(text: str, language: Language, full_max: int) -> list[Chunk]:
    rules = language.rules
    tree = parser(language.name).parse(text.encode("utf-8", errors="replace"))
    # a minified bundle is one huge line: its chunks show the start of each line only
    lines = [line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " ..." for line in text.split("\n")]
    chunks: list[Chunk] = []

    def add(chunk_text: str, outer, node, name: str) -> None:
        if name and len(chunks) < MAX_DEFINITIONS:
            chunks.append(Chunk(chunk_text, len(chunks), outer.start_point[0], node.end_point[0], "def", name))

    def visit(node, outer, depth: int) -> None:
        if node.type in rules.wrappers and depth < 4:
            for child in _wrapped(node):
                # export's declaration starts at `export`; a namespace's members start where they do
                visit(child, outer if child.start_point[0] == outer.start_point[0] else child, depth + 1)
            return
        if node.type in rules.variables:
            for declarator in node.named_children:
                if declarator.type in rules.declarators:
                    name = declarator.child_by_field_name("name")
                    if name is not None and name.type in ("identifier", "type_identifier"):
                        add(_declarator_chunk(lines, outer, declarator, rules, full_max), outer, declarator, _text(name))
            return
        if node.type not in rules.definitions:
            return
        name = _definition_name(node)
        add(_generic_summary(lines, outer, node, rules, full_max), outer, node, name)
        if node.type in rules.containers and name:
            body = _body(node)
            for member in body.named_children if body is not None else []:
                if member.type in rules.methods:
                    member_name = _definition_name(member)
                    if member_name:
                        add(_generic_summary(lines, member, member, rules, full_max), member, member, f"{name}.{member_name}")

    for child in tree.root_node.named_children:
        visit(child, child, 0)
    return chunks
