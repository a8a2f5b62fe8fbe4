"""``titans-lsp eval build``: CrossCodeEval-format samples from real Python packages.

Recipe (facts/crosscodeeval.md): in every .py file, candidate cut points sit right before a
name that is defined at top level in *another* file of the same package (and not in this
one), outside import statements and attribute accesses; prompt = file text up to the cut,
groundtruth = rest of that line, right_context = the file after it. Cross-file context is
CrossCodeEval's rg1 (``titans_lsp.retrieval.cceval.rg1_retrieve``, BM25 or the dense
encoder). Everything is sorted and seeded, so the same inputs give the same file byte for byte.
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

from titans_lsp.retrieval.packages import fetch_pypi

log = logging.getLogger(__name__)

MAX_PER_FILE = 3
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


# ---- samples ------------------------------------------------------------------------------
def build_repo(root: Path, repository: str, per_repo: int, seed: int, retriever: str = "bm25", encoder=None) -> list[dict]:
    """Up to ``per_repo`` samples from one repository, chosen with ``seed``."""
    from titans_lsp.retrieval.cceval import crossfile_text, repo_python_files, rg1_retrieve

    sources = repo_python_files(root)
    defined = {rel: top_level_names(text) for rel, text in sources.items()}
    owners: dict[str, set[str]] = {}
    for rel, names in defined.items():
        for name in names:
            owners.setdefault(name, set()).add(rel)
    candidates = []
    for rel, text in sources.items():
        foreign = {n for n, files in owners.items() if files - {rel} and n not in defined[rel]}
        # one candidate per line: the first foreign name on it
        seen_lines = set()
        for line_no, col, name in cut_points(text, foreign):
            if line_no not in seen_lines:
                seen_lines.add(line_no)
                candidates.append((rel, line_no, col, name))
    rng = random.Random(f"{seed}:{repository}")
    rng.shuffle(candidates)
    chosen, per_file = [], {}
    for cand in candidates:
        if per_file.get(cand[0], 0) >= MAX_PER_FILE:
            continue
        per_file[cand[0]] = per_file.get(cand[0], 0) + 1
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
        samples.append({
            "prompt": prompt,
            "groundtruth": lines[line_no][col:],
            "right_context": "\n".join(lines[line_no + 1:]),
            "metadata": {"task_id": f"{repository}/{number}", "repository": repository, "file": rel,
                         "context_start_lineno": 0, "groundtruth_start_lineno": line_no,
                         "right_context_start_lineno": line_no + 1, "crossfile_symbol": name,
                         "defined_in": sorted(owners[name] - {rel})},
            "crossfile_context": {"text": crossfile_text(items), "list": items},
        })
    return samples


def build(out: Path, dirs: list[str], pypi: list[str], per_repo: int, seed: int, cache: Path,
          retriever: str = "bm25") -> tuple[int, list[tuple[str, Path]]]:
    """Write the samples of every repository to ``out``; returns (count, [(repository, root)])."""
    repos: list[tuple[str, Path]] = [(f"{Path(d).resolve().name}", Path(d).resolve()) for d in dirs]
    for spec in pypi:
        root = fetch_pypi(spec, cache)  # <cache>/packages/src/<name>-<version>: metadata.repository = its name
        repos.append((root.name, root))
    encoder = None
    if retriever == "dense":
        from titans_lsp.retrieval.cceval import default_encoder

        encoder = default_encoder()
    count = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for repository, root in repos:
            samples = build_repo(root, repository, per_repo, seed, retriever, encoder)
            log.info("%s: %d samples", repository, len(samples))
            print(f"{repository}: {len(samples)} samples (files under {root})", file=sys.stderr)
            for sample in samples:
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")
            count += len(samples)
    return count, repos
