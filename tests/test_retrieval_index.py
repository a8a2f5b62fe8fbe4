"""The workspace index: BM25 equals rank-bm25, incremental updates equal a rebuild, persistence."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import pytest
from rank_bm25 import BM25Okapi

from titans_lsp.retrieval.chunking import bm25_tokens, last_nonempty_lines, rg1_chunks
from titans_lsp.retrieval.index import Snippet, WorkspaceIndex, rrf

import pathspec as _real_package  # a real multi-file pure-Python package to index

REAL_PACKAGE = Path(_real_package.__file__).parent


@pytest.fixture(scope="module")
def real_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo") / "pathspec"
    shutil.copytree(REAL_PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def queries(root: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """CrossCodeEval-style queries: (file, prefix cut at a random line of it)."""
    rng = random.Random(seed)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if p.stat().st_size > 500)
    out = []
    for _ in range(n):
        rel = rng.choice(files)
        lines = (root / rel).read_text().split("\n")
        out.append((rel, "\n".join(lines[:rng.randrange(5, len(lines))])))
    return out


def ranking(index: WorkspaceIndex, rel: str, prefix: str, k: int = 10) -> list[tuple[str, str, float]]:
    return [(s.filename, s.text, round(s.score, 9)) for s in index.retrieve(prefix, rel, "bm25", k=k, next_chunk=False)]


def test_bm25_ranks_like_rank_bm25(real_repo, tmp_path):
    index = WorkspaceIndex(real_repo, tmp_path, dense_model=None)
    index.build()
    assert len(index.files()) > 10
    for rel, prefix in queries(real_repo, 25):
        docs = [(other, c) for other in index.files() if other != rel for c in rg1_chunks((real_repo / other).read_text())]
        reference = BM25Okapi([bm25_tokens(c.text) for _, c in docs]).get_scores(bm25_tokens(last_nonempty_lines(prefix)))
        order = sorted(range(len(docs)), key=lambda i: (-reference[i], docs[i][0], docs[i][1].index))
        expected, seen = [], set()
        for i in order:  # identical chunk texts are returned once (CrossCodeEval's selection dedups too)
            if docs[i][1].text not in seen and len(expected) < 10:
                seen.add(docs[i][1].text)
                expected.append(i)
        got = index.retrieve(prefix, rel, "bm25", k=10, next_chunk=False)
        assert [(s.filename, s.text) for s in got] == [(docs[i][0], docs[i][1].text) for i in expected]
        assert [s.score for s in got] == pytest.approx([reference[i] for i in expected], rel=1e-9)


def test_current_file_never_returned(real_repo, tmp_path):
    index = WorkspaceIndex(real_repo, tmp_path, dense_model=None)
    index.build()
    for rel, prefix in queries(real_repo, 10, seed=1):
        for snippet in index.retrieve(prefix, str(real_repo / rel), "bm25", k=20):
            assert snippet.filename != rel


def test_next_chunk_replacement(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    body = "\n".join(f"def alpha_{i}(beta):\n    return beta + {i}" for i in range(10))  # 20 lines = 2 chunks
    (root / "a.py").write_text(body + "\n")
    (root / "b.py").write_text("x = 1\n")
    index = WorkspaceIndex(root, None, dense_model=None)
    index.build()
    chunks = rg1_chunks(body)
    got = index.retrieve("alpha_1 alpha_2 alpha_3 alpha_4", "b.py", "bm25", k=5)
    assert [s.text for s in got] == [chunks[1].text]  # hit chunk 0 -> its follower; chunk 1 (last) -> itself, deduplicated


def mutate(root: Path, rng: random.Random) -> list[Path]:
    """Edit, delete and add files; returns the paths to re-index."""
    files = sorted(p for p in root.rglob("*.py"))
    touched = []
    for path in rng.sample(files, 4):
        lines = path.read_text().split("\n")
        cut = rng.randrange(len(lines))
        path.write_text("\n".join(lines[:cut] + ["def injected_helper(pattern, lines):", "    return pattern.match(lines)"] + lines[cut:]))
        touched.append(path)
    gone = rng.choice([p for p in files if p not in touched])
    gone.unlink()
    touched.append(gone)
    new = root / "extra" / "added.py"
    new.parent.mkdir(exist_ok=True)
    new.write_text("from pathspec import PathSpec\n\ndef compile_patterns(lines):\n    return PathSpec.from_lines('gitwildmatch', lines)\n")
    touched.append(new)
    return touched


def test_incremental_update_equals_rebuild(real_repo, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(real_repo, root)
    incremental = WorkspaceIndex(root, tmp_path / "inc", dense_model=None)
    incremental.build()
    before = [ranking(incremental, rel, prefix) for rel, prefix in queries(root, 5, seed=3)]  # warm caches
    touched = mutate(root, random.Random(0))
    for path in touched:
        if path.exists():
            incremental.update_file(path)
        else:
            incremental.remove_file(path)
    rebuilt = WorkspaceIndex(root, tmp_path / "full", dense_model=None)
    rebuilt.build()
    assert incremental.files() == rebuilt.files()
    assert incremental.num_chunks() == rebuilt.num_chunks()
    checks = queries(root, 30, seed=4) + [("extra/added.py", "def compile_patterns(lines):\n    return PathSpec.from_lines(")]
    for rel, prefix in checks:
        assert ranking(incremental, rel, prefix) == ranking(rebuilt, rel, prefix)
    assert before  # the pre-edit queries ran against the pre-edit index


def test_save_load_and_sync(real_repo, tmp_path, caplog):
    root = tmp_path / "copy"
    shutil.copytree(real_repo, root)
    state = tmp_path / "state"
    first = WorkspaceIndex.load_or_build(root, state, dense_model=None)
    checks = queries(root, 10, seed=5)
    expected = [ranking(first, rel, prefix) for rel, prefix in checks]
    again = WorkspaceIndex.load_or_build(root, state, dense_model=None)
    assert [ranking(again, rel, prefix) for rel, prefix in checks] == expected
    # changes made while the server was down are picked up on reload, without a rebuild
    mutate(root, random.Random(1))
    reloaded = WorkspaceIndex.load_or_build(root, state, dense_model=None)
    fresh = WorkspaceIndex(root, None, dense_model=None)
    fresh.build()
    checks = queries(root, 10, seed=6)
    assert [ranking(reloaded, r, p) for r, p in checks] == [ranking(fresh, r, p) for r, p in checks]
    # a damaged file is rebuilt, with a log line
    (state / "index.json").write_text("{\"schema\": 2, garbage")
    with caplog.at_level(logging.WARNING):
        repaired = WorkspaceIndex.load_or_build(root, state, dense_model=None)
    assert "rebuilding" in caplog.text
    assert [ranking(repaired, r, p) for r, p in checks] == [ranking(fresh, r, p) for r, p in checks]


def test_rrf_fuses_by_rank():
    a = [Snippet("a.py", "A", 9.0), Snippet("b.py", "B", 5.0)]
    b = [Snippet("b.py", "B", 0.9), Snippet("c.py", "C", 0.8)]
    fused = rrf([a, b], k=3)
    assert [s.text for s in fused] == ["B", "A", "C"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_unknown_retriever_is_an_error(tmp_path):
    index = WorkspaceIndex(tmp_path, None, dense_model=None)
    index.build()
    with pytest.raises(ValueError, match="unknown retriever"):
        index.retrieve("x", None, "tfidf")


def test_empty_query_returns_nothing(real_repo, tmp_path):
    index = WorkspaceIndex(real_repo, None, dense_model=None)
    index.build()
    assert index.retrieve("", "util.py", "bm25") == []
    assert index.retrieve("\n\n   \n", "util.py", "bm25") == []


def test_bm25_contains_answers_for_a_set_of_documents():
    from titans_lsp.retrieval.bm25 import IncrementalBM25

    bm25 = IncrementalBM25()
    docs = [bm25.add(tokens) for tokens in (["a", "b"], ["c"], ["d", "b"], ["e"], ["a"])]
    assert bm25.contains("b", [0, 1]) and bm25.contains("b", [1, 2]) and bm25.contains("a", [4])
    assert not bm25.contains("b", [1]) and not bm25.contains("a", [1, 2, 3])
    assert not bm25.contains("b", [1, 3]) and bm25.contains("b", [0, 3])  # not consecutive: doc 2 is not one of them
    assert not bm25.contains("unknown", docs) and not bm25.contains("a", [])
    bm25.freeze()
    assert bm25.contains("e", [2, 3]) and not bm25.contains("e", [0, 2])


def test_an_unchanged_text_is_not_reindexed_and_its_digest_survives_a_restart(tmp_path):
    import os

    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.py").write_text("def alpha(value):\n    return value + 1\n")
    (root / "b.py").write_text("def beta(value):\n    return alpha(value) * 2\n")
    index = WorkspaceIndex.load_or_build(root, tmp_path / "state", dense_model=None)
    before = index.retrieve("x = alpha(", "b.py", "bm25")
    generation, ids = index.bm25.generation, list(index.entries["a.py"].doc_ids)
    assert index.bm25._cache  # the query's statistics, kept while nothing changes
    # a save with the same text (editor buffer or disk, newer mtime): nothing re-indexed, caches kept
    os.utime(root / "a.py", ns=(10**18, 10**18))
    assert index.update_file(root / "a.py") and index.update_file(root / "a.py", "def alpha(value):\n    return value + 1\n")
    assert index.bm25.generation == generation and index.bm25._cache and index.entries["a.py"].doc_ids == ids
    assert index.entries["a.py"].mtime_ns == 10**18
    assert index.retrieve("x = alpha(", "b.py", "bm25") == before
    # a changed text is re-indexed
    assert index.update_file(root / "a.py", "def alpha(value):\n    return value + 2\n")
    assert index.bm25.generation > generation and index.entries["a.py"].doc_ids != ids
    # the digest is saved; after a restart, a touched file with the same text keeps its documents
    (root / "a.py").write_text("def alpha(value):\n    return value + 2\n")
    index.update_file(root / "a.py")
    index.save()
    ids = list(index.entries["a.py"].doc_ids)
    os.utime(root / "a.py", ns=(2 * 10**18, 2 * 10**18))
    reloaded = WorkspaceIndex.load_or_build(root, tmp_path / "state", dense_model=None)
    assert reloaded.entries["a.py"].doc_ids == ids and reloaded.entries["a.py"].mtime_ns == 2 * 10**18
    assert reloaded.entries["a.py"].clean_digest == index.entries["a.py"].clean_digest != ""
