"""Dense retrieval with the default encoder (all-MiniLM-L6-v2 wheel): lazy, incremental, persisted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from titans_lsp.retrieval.index import WorkspaceIndex

import pathspec as _real_package

REPO = Path(_real_package.__file__).parent
SUBSET = ["__init__.py", "pathspec.py", "gitignore.py", "backend.py", "_backends/simple/gitignore.py",
          "_backends/simple/pathspec.py", "patterns/gitwildmatch.py"]
PREFIX = "def match_files(self, files):\n    for path in files:\n        if self.match_file(path):\n"


@pytest.fixture(scope="module")
def encoder_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense") / "pathspec"
    for rel in SUBSET:  # a small slice keeps CPU encoding short (about 100 chunks)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
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

    path = index.root / "gitignore.py"
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
    assert again.build_dense() == 0  # every row comes from the cache: nothing is encoded
    assert len(again.dense.matrix) == len(index.dense.matrix)
    assert len(again._pending_dense()) == 0


def test_server_mode_never_blocks_on_encoding(encoder_index, tmp_path):
    index = WorkspaceIndex(encoder_index.root, None, dense_model="default", dense_sync_limit=0)
    index.build()
    from titans_lsp.retrieval.dense import DenseStore

    index._dense = DenseStore("default")
    index._dense._encoder = encoder_index.dense._encoder
    assert index.retrieve(PREFIX, "pathspec.py", "dense") == []  # nothing encoded yet: no answer, no wait
    assert [s.retriever for s in index.retrieve(PREFIX, "pathspec.py", "hybrid")] == ["rrf"] * 5  # BM25 still counts
    progress = []
    index.build_dense(lambda done, total: progress.append((done, total)), batch=20)  # the background job
    assert progress[-1][0] == progress[-1][1] > 0
    assert len(index.retrieve(PREFIX, "pathspec.py", "dense")) == 5
