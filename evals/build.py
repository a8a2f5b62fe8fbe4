"""``titans-lsp eval build``: CrossCodeEval-format samples from real packages, in any language.

Recipe (facts/crosscodeeval.md): in every source file of the repository's language, candidate cut
points sit right before a name that is defined at top level in *another* file of the same
repository (and not in this one), outside import statements and attribute accesses; prompt = file
text up to the cut, groundtruth = rest of that line, right_context = the file after it. Cross-file
context is CrossCodeEval's rg1 (``titans_lsp.retrieval.cceval.rg1_retrieve``, BM25 or the dense
encoder) over the files of that language, written in its comment syntax. Python is read with
``ast``/``tokenize`` (the original recipe); other languages with their tree-sitter grammar and the
registry's definition rules (retrieval/languages.py). A repository's language is the one most of
its source files are in, unless ``language`` says. Everything is sorted and seeded, so the same
inputs give the same file byte for byte.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import random
import sys
import tokenize
from pathlib import Path

from titans_lsp.retrieval.ecmascript import is_declaration_file
from titans_lsp.retrieval.languages import LANGUAGES, PYTHON, Language, detect, parser
from titans_lsp.retrieval.packages import fetch_npm, fetch_pypi

log = logging.getLogger(__name__)

MAX_PER_FILE = 3
# Other languages: at most this many samples cut before the same name per repository, so one helper
# used everywhere (zod's util.assertEqual in 20 test files) does not make up the set. Python keeps the
# original recipe (its dev set is reproduced byte for byte).
MAX_PER_SYMBOL = 4
MIN_PROMPT_LINES = 10
MAX_GROUNDTRUTH_CHARS = 160


def top_level_names(source: str) -> set[str]:
    """Names a module defines at top level (functions, classes, assignments)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if len(n) > 2 and not (n.startswith("__") and n.endswith("__"))}


# ---- cut points -------------------------------------------------------------------------
def _import_lines(source: str) -> set[int]:
    """1-based line numbers covered by import statements (also multi-line ones)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    return {row for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            for row in range(node.lineno, (node.end_lineno or node.lineno) + 1)}


def cut_points(source: str, foreign: set[str]) -> list[tuple[int, int, str]]:
    """(line index, column, name) of NAME tokens in ``foreign`` outside import statements."""
    points = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []
    lines = source.split("\n")
    import_lines = _import_lines(source)
    for tok in tokens:
        if tok.type != tokenize.NAME or tok.string not in foreign:
            continue
        row, col = tok.start
        if tok.end[0] != row:
            continue
        line = lines[row - 1]
        if row in import_lines or line.lstrip().startswith("@") or row - 1 < MIN_PROMPT_LINES:
            continue
        if line[:col].rstrip().endswith(".") or len(line) - col > MAX_GROUNDTRUTH_CHARS:  # attributes are not the name
            continue
        points.append((row - 1, col, tok.string))
    return points


# ---- other languages (tree-sitter) ------------------------------------------------------------
IDENTIFIER_NODES = frozenset({"identifier", "type_identifier"})  # not property/field identifiers: attributes
IMPORT_NODES = frozenset({"import_statement", "import_declaration", "using_directive", "use_declaration",
                          "package_declaration", "package_clause"})


def tree_top_level_names(source: str, language: Language) -> set[str]:
    """Names a file defines at top level (the registry's definitions, members left out)."""
    from titans_lsp.retrieval.chunking import definition_chunks

    names = {c.name for c in definition_chunks(source, language=language) if "." not in c.name}
    return {n for n in names if len(n) > 2}


def exported_names(source: str, language: Language) -> set[str]:
    """Names a TypeScript/JavaScript module exports from its own definitions (``export const/function/
    class/...`` and ``export {a, b as c}``); re-exports from other modules are theirs."""
    from titans_lsp.retrieval.imports import parse_ecma_module

    defined = tree_top_level_names(source, language)
    tree = parser(language.name).parse(source.encode("utf-8", errors="replace"))
    names: set[str] = set()
    for node in tree.root_node.named_children:
        if node.type != "export_statement" or node.child_by_field_name("source") is not None:
            continue
        declaration = node.child_by_field_name("declaration")
        if declaration is not None:
            name = declaration.child_by_field_name("name")
            if name is not None:
                names.add(name.text.decode("utf-8", errors="replace"))
            for declarator in declaration.named_children:
                target = declarator.child_by_field_name("name") if declarator.type == "variable_declarator" else None
                if target is not None:
                    names.add(target.text.decode("utf-8", errors="replace"))
    for exported, local in parse_ecma_module(source, language)[1]:
        if local in defined and exported != "default":
            names.add(exported)
    for clause in (c for n in tree.root_node.named_children if n.type == "export_statement"
                   and n.child_by_field_name("source") is None for c in n.named_children if c.type == "export_clause"):
        for spec in clause.named_children:
            name = spec.child_by_field_name("name")
            if name is not None and name.text.decode("utf-8", errors="replace") in defined:
                names.add(name.text.decode("utf-8", errors="replace"))
    return {n for n in names if len(n) > 2}


def imported_names(source: str, language: Language) -> set[str]:
    """The names a TypeScript/JavaScript module imports as definitions (named and default imports;
    a namespace import names a module, not a definition)."""
    from titans_lsp.retrieval.imports import parse_ecma_module

    return {b.alias for b in parse_ecma_module(source, language)[0] if b.symbol is not None}


def tree_cut_points(source: str, foreign: set[str], language: Language) -> list[tuple[int, int, str]]:
    """(line index, column, name) of identifiers in ``foreign`` outside imports (and re-exports),
    comments, attribute accesses and decorators."""
    tree = parser(language.name).parse(source.encode("utf-8", errors="replace"))
    lines = source.split("\n")
    points = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type in IMPORT_NODES or (node.type == "export_statement" and node.child_by_field_name("source")):
            continue
        if node.type in IDENTIFIER_NODES and node.child_count == 0:
            name = node.text.decode("utf-8", errors="replace")
            row = node.start_point[0]
            if name not in foreign or node.end_point[0] != row or row < MIN_PROMPT_LINES:
                continue
            line = lines[row]
            col = len(line.encode("utf-8")[:node.start_point[1]].decode("utf-8", errors="replace"))
            if line[:col].rstrip().endswith(".") or line.lstrip().startswith("@") or len(line) - col > MAX_GROUNDTRUTH_CHARS:
                continue
            points.append((row, col, name))
            continue
        stack.extend(reversed(node.children))
    return sorted(points)


def language_files(root: Path, language: Language) -> dict[str, str]:
    """The repository's source files in ``language`` (TypeScript includes TSX; declaration files
    ``.d.ts``/``.d.mts``/``.d.cts`` are generated from sources and left out), by the workspace rules."""
    from titans_lsp.retrieval.workspace import iter_workspace_files

    if language is PYTHON:
        from titans_lsp.retrieval.cceval import repo_python_files

        return repo_python_files(root)
    wanted = {language.name} | ({"tsx"} if language.name == "typescript" else set())
    return {f.rel: f.text for f in iter_workspace_files(root, extensions={e for l in LANGUAGES if l.name in wanted
                                                                          for e in l.extensions})
            if not is_declaration_file(f.rel)}


def main_language(root: Path) -> Language:
    """The language most of the repository's source files are in (among languages with definition
    rules, and Python); Python when none."""
    from titans_lsp.retrieval.workspace import WorkspaceFilter

    counts: dict[str, int] = {}
    for rel in WorkspaceFilter(root).iter_rel_paths():
        language = detect(rel)
        if (language.rules is not None or language is PYTHON) and not is_declaration_file(rel):
            name = "typescript" if language.name == "tsx" else language.name
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return PYTHON
    if counts.get("typescript") and "javascript" in counts:
        del counts["javascript"]  # next to TypeScript sources, JavaScript files are their build output
    order = [l.name for l in LANGUAGES]
    best = max(counts, key=lambda name: (counts[name], -order.index(name)))
    return next(l for l in LANGUAGES if l.name == best)


# ---- samples ------------------------------------------------------------------------------
def build_repo(root: Path, repository: str, per_repo: int, seed: int, retriever: str = "bm25", encoder=None,
               language: Language | None = None) -> list[dict]:
    """Up to ``per_repo`` samples from one repository, chosen with ``seed``."""
    from titans_lsp.retrieval.cceval import crossfile_text, rg1_retrieve

    language = language or main_language(root)
    if language is not PYTHON and (language.rules is None or parser(language.name) is None):
        raise ValueError(f"{repository}: no definition rules or grammar for {language.name}")
    sources = language_files(root, language)
    names_of = top_level_names if language is PYTHON else (lambda text: tree_top_level_names(text, language))
    points_of = cut_points if language is PYTHON else (lambda text, foreign: tree_cut_points(text, foreign, language))
    defined = {rel: names_of(text) for rel, text in sources.items()}
    # TypeScript/JavaScript: a name counts when another file exports it and this file imports it
    # (any other use of the name is a local of its own); elsewhere, defined at top level elsewhere.
    modular = language.imports == "ecmascript"
    exported = {rel: exported_names(text, language) for rel, text in sources.items()} if modular else defined
    imported = {rel: imported_names(text, language) for rel, text in sources.items()} if modular else {}
    owners: dict[str, set[str]] = {}
    for rel, names in exported.items():
        for name in names:
            owners.setdefault(name, set()).add(rel)
    candidates = []
    for rel, text in sources.items():
        foreign = {n for n, files in owners.items() if files - {rel} and n not in defined[rel]
                   and (not modular or n in imported[rel])}
        # one candidate per line: the first foreign name on it
        seen_lines = set()
        for line_no, col, name in points_of(text, foreign):
            if line_no not in seen_lines:
                seen_lines.add(line_no)
                candidates.append((rel, line_no, col, name))
    rng = random.Random(f"{seed}:{repository}")
    rng.shuffle(candidates)
    chosen, per_file, per_symbol = [], {}, {}
    for cand in candidates:
        if per_file.get(cand[0], 0) >= MAX_PER_FILE:
            continue
        if language is not PYTHON and per_symbol.get(cand[3], 0) >= MAX_PER_SYMBOL:
            continue
        per_file[cand[0]] = per_file.get(cand[0], 0) + 1
        per_symbol[cand[3]] = per_symbol.get(cand[3], 0) + 1
        chosen.append(cand)
        if len(chosen) >= per_repo:
            break
    chosen.sort(key=lambda c: (c[0], c[1]))
    if not chosen:
        return []
    samples = []
    for number, (rel, line_no, col, name) in enumerate(chosen):
        lines = sources[rel].split("\n")
        prompt = "\n".join(lines[:line_no] + [lines[line_no][:col]])
        items = rg1_retrieve(prompt, rel, sources, ranker=retriever, encoder=encoder)
        metadata = {"task_id": f"{repository}/{number}", "repository": repository, "file": rel,
                    "context_start_lineno": 0, "groundtruth_start_lineno": line_no,
                    "right_context_start_lineno": line_no + 1, "crossfile_symbol": name,
                    "defined_in": sorted(owners[name] - {rel})}
        if language is not PYTHON:  # Python files stay byte for byte what they were
            metadata["language"] = language.name
        samples.append({
            "prompt": prompt,
            "groundtruth": lines[line_no][col:],
            "right_context": "\n".join(lines[line_no + 1:]),
            "metadata": metadata,
            "crossfile_context": {"text": crossfile_text(items, comment=language.comment), "list": items},
        })
    return samples


def build(out: Path, dirs: list[str], pypi: list[str], per_repo: int, seed: int, cache: Path,
          retriever: str = "bm25", npm: list[str] | None = None,
          language: Language | None = None) -> tuple[int, list[tuple[str, Path]]]:
    """Write the samples of every repository to ``out``; returns (count, [(repository, root)]).
    ``language``: read every repository in it (default: each one's main language)."""
    repos: list[tuple[str, Path]] = [(f"{Path(d).resolve().name}", Path(d).resolve()) for d in dirs]
    for spec in pypi:
        root = fetch_pypi(spec, cache)  # <cache>/packages/src/<name>-<version>: metadata.repository = its name
        repos.append((root.name, root))
    for spec in npm or []:
        root = fetch_npm(spec, cache)
        repos.append((root.name, root))
    encoder = None
    if retriever == "dense":
        from titans_lsp.retrieval.cceval import default_encoder

        encoder = default_encoder()
    count = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for repository, root in repos:
            samples = build_repo(root, repository, per_repo, seed, retriever, encoder, language)
            log.info("%s: %d samples", repository, len(samples))
            print(f"{repository}: {len(samples)} samples (files under {root})", file=sys.stderr)
            for sample in samples:
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")
            count += len(samples)
    return count, repos
