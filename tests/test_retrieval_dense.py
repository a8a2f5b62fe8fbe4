"""Dense retrieval with the default encoder (all-MiniLM-L6-v2 wheel): lazy, incremental, persisted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from titans_lsp.retrieval.index import WorkspaceIndex

import pathspec as _real_package

REPO = Path(_real_package.__file__).parent
PREFIX = "def match_files(self, files):\n    for path in files:\n        if self.match_file(path):\n"


@pytest.fixture(scope="module")
def encoder_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense") / "pathspec"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "secret.key").write_text("CANARY_dense_leak = 1\n")
    index = WorkspaceIndex(root, tmp_path_factory.mktemp("state"), dense_model="default")
    index.build()
    return index


def test_dense_is_lazy_then_incremental(encoder_index):
    index = encoder_index
    assert index._dense is None  # building BM25 never loads the encoder
    got = index.retrieve(PREFIX, "pathspec.py", "dense", k=5)
    assert len(got) == 5 and all(s.filename != "pathspec.py" for s in got)
    assert all("CANARY" not in s.text for s in got)
    rows = len(index.dense.matrix)
    assert rows >= index.num_chunks() - 5  # identical chunk texts share one row

    path = index.root / "util.py"
    path.write_text(path.read_text() + "\ndef brand_new_helper(patterns):\n    return sorted(patterns)\n")
    index.update_file(path)
    index.retrieve(PREFIX, "pathspec.py", "dense", k=5)
    assert len(index.dense.matrix) - rows <= 2  # only the changed tail of one file was encoded

    rebuilt = WorkspaceIndex(index.root, None, dense_model="default")
    rebuilt.build()
    rebuilt._dense = index._dense  # share the loaded encoder; rows are looked up by text
    for retriever in ("dense", "hybrid"):
        a = [(s.filename, s.text) for s in index.retrieve(PREFIX, "pathspec.py", retriever, k=8)]
        b = [(s.filename, s.text) for s in rebuilt.retrieve(PREFIX, "pathspec.py", retriever, k=8)]
        assert a == b


def test_dense_cache_persists(encoder_index):
    index = encoder_index
    index.build_dense()
    index.save()
    again = WorkspaceIndex.load_or_build(index.root, index.state_dir, dense_model="default")
    assert again.dense.matrix is not None and len(again.dense.keys) == len(index.dense.keys)
    again.dense._encoder = index.dense._encoder  # avoid a second model load in the test
    assert again.build_dense() == again.num_chunks()  # rows mapped from the cache...
    assert len(again.dense.matrix) == len(index.dense.matrix)  # ...without encoding anything
