"""Issue 16, finding 5: persisted state is never trusted blindly. A memory state with NaN weights or
the wrong shapes is rejected with a log line and the folder starts fresh; the index is JSON + numpy
arrays (no pickle), checked when loaded, and a planted pickle is never read."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

from titans_lsp.engine import CompletionEngine
from titans_lsp.folder import FolderState
from titans_lsp.model.loading import load_model
from titans_lsp.model.memory import MemoryConfig, MemoryState
from titans_lsp.priming import Primer
from titans_lsp.retrieval.index import WorkspaceIndex


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"),
                            memory_config=MemoryConfig(memory_dim=32, chunk_size=8, layers=[1, 3]))


def primed_folder(tmp_path, engine) -> FolderState:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.py").write_text("def load_config(path):\n    with open(path) as f:\n        return f.read()\n" * 3)
    folder = FolderState(root.as_uri(), root, str(tmp_path / "cache"))
    folder.load_index(dense_model=None)
    Primer(folder, engine).run()
    assert folder.primed and folder.workspace.memory.tokens_written > 0
    return folder


def reopen(folder: FolderState, engine) -> FolderState:
    again = FolderState(folder.uri, folder.root, folder.cache_dir)
    again.ensure_memory(engine)
    return again


def rewrite(path, change) -> None:
    state = MemoryState.load(path)
    change(state)
    state.save(path)


def test_a_good_memory_state_resumes(tmp_path, engine):
    folder = primed_folder(tmp_path, engine)
    again = reopen(folder, engine)
    assert again.primed == folder.primed and again.workspace.memory.tokens_written > 0


@pytest.mark.parametrize("damage", ["nan", "inf", "shape", "dtype", "layers"])
def test_a_bad_memory_state_is_rejected_with_a_log_line_and_starts_fresh(tmp_path, engine, caplog, damage):
    folder = primed_folder(tmp_path, engine)
    memory_path, _ = folder._memory_paths(engine)

    def change(state: MemoryState) -> None:
        layer = state.layers[0]
        w = state.weights[layer][0]
        if damage == "nan":
            w.view(-1)[0] = float("nan")
        elif damage == "inf":
            state.momentum[layer][0].view(-1)[-1] = float("inf")
        elif damage == "shape":
            state.weights[layer][0] = torch.zeros(w.shape[0] + 1, *w.shape[1:])
        elif damage == "dtype":
            state.weights[layer][0] = w.to(torch.float16)
        else:
            for table in (state.weights, state.momentum, state.initial):
                table[99] = table.pop(layer)

    rewrite(memory_path, change)
    with caplog.at_level(logging.WARNING, logger="titans_lsp.folder"):
        again = reopen(folder, engine)
    assert "rejected" in caplog.text and "starting fresh" in caplog.text
    assert again.primed == {} and again.workspace.memory.tokens_written == 0
    fresh = engine.patch.new_state()
    again.workspace.memory.check_like(fresh)  # what is served fits the model


def test_index_is_json_and_npz_and_a_planted_pickle_is_never_read(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.py").write_text("def area(r):\n    return 3.14 * r * r\n")
    state = tmp_path / "state"
    index = WorkspaceIndex.load_or_build(root, state, dense_model=None)
    assert {p.name for p in state.iterdir()} >= {"index.json", "index.npz"}
    assert not (state / "index.pkl").exists()

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (state / "index.pkl").write_bytes(pickle.dumps(Payload()))
    again = WorkspaceIndex.load_or_build(root, state, dense_model=None)
    assert not marker.exists(), "the planted pickle was executed"
    assert again.files() == index.files() == ["a.py"]

    # An arrays file holding objects (which only pickle could read) is rejected, then rebuilt.
    np.savez(state / "index.npz", df=np.array([{"x": 1}], dtype=object))
    rebuilt = WorkspaceIndex.load_or_build(root, state, dense_model=None)
    assert rebuilt.files() == ["a.py"] and not marker.exists()


@pytest.mark.parametrize("field,value", [
    ("schema", 1), ("arrays_sha256", "0" * 64), ("doc_ids", [-1]), ("doc_ids", [10 ** 9]), ("chunks", [[1, 2]]),
])
def test_a_tampered_index_json_is_rebuilt_with_a_log_line(tmp_path, caplog, field, value):
    import json

    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.py").write_text("def area(r):\n    return 3.14 * r * r\n")
    state = tmp_path / "state"
    WorkspaceIndex.load_or_build(root, state, dense_model=None)
    data = json.loads((state / "index.json").read_text())
    if field in ("doc_ids", "chunks"):
        data["entries"]["a.py"][field] = value
    else:
        data[field] = value
    (state / "index.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        again = WorkspaceIndex.load_or_build(root, state, dense_model=None)
    if field != "schema":
        assert "rebuilding" in caplog.text
    assert again.files() == ["a.py"] and again.retrieve("def area", "b.py", "bm25")


def _scale_post_tfs(arrays: dict) -> None:
    arrays["post_tfs"] = arrays["post_tfs"] * np.nan


@pytest.mark.parametrize("damage", [
    lambda a: a["post_docs"].__setitem__(0, 10 ** 6), lambda a: a["post_docs"].__setitem__(0, -5),
    lambda a: a.__setitem__("alive", a["alive"][:1]), lambda a: a.__setitem__("doc_len", a["doc_len"][:1]),
    _scale_post_tfs, lambda a: a["doc_terms"].__setitem__(0, 10 ** 6), lambda a: a["live_docs"].__setitem__(0, 10 ** 6),
    lambda a: a["post_lengths"].__setitem__(0, -3), lambda a: a["df"].__setitem__(0, -1),
], ids=["post_docs-big", "post_docs-negative", "alive-short", "doc_len-short", "post_tfs-nan", "doc_terms-big",
        "live_docs-big", "post_lengths-negative", "df-negative"])
def test_index_arrays_that_match_their_checksum_but_not_each_other_are_rebuilt(tmp_path, caplog, damage):
    """index.json's checksum only ties the two files together: a state written wrong (or by someone
    else) with a fresh checksum used to load, then fail every completion with an IndexError or
    silently retrieve nothing."""
    import hashlib
    import io
    import json

    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.py").write_text("def area(r):\n    return 3.14 * r * r\n")
    (root / "b.py").write_text("def volume(r):\n    return area(r) * r\n")
    state = tmp_path / "state"
    WorkspaceIndex.load_or_build(root, state, dense_model=None)
    with np.load(state / "index.npz") as npz:
        arrays = {key: npz[key].copy() for key in npz.files}
    damage(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (state / "index.npz").write_bytes(buffer.getvalue())
    meta = json.loads((state / "index.json").read_text())
    meta["arrays_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (state / "index.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        again = WorkspaceIndex.load_or_build(root, state, dense_model=None)
    assert "rebuilding" in caplog.text
    assert [s.filename for s in again.retrieve("def area(r):\n    return", "c.py", "bm25")][:1] == ["a.py"]


def test_a_full_or_read_only_cache_keeps_the_index_and_priming_and_says_so_once(tmp_path, engine):
    """State that cannot be saved (disk full, a cache dir owned by root) used to throw the freshly
    built index away (concat then had no cross-file context, silently) and stop priming at its
    first periodic save; now both go on in memory and the user is told once why nothing persists."""
    from titans_lsp.server import TitansServer

    root = tmp_path / "ws"
    root.mkdir()
    for name in ("a.py", "b.py", "c.py"):
        (root / name).write_text(f"def {name[0]}_area(r):\n    return 3.14 * r * r\n")
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache directory should be")  # unwritable, even for root
    server = TitansServer(cache_dir=str(cache), events_db=str(tmp_path / "events.db"))
    shown = []
    server.show_message = lambda message, kind=None: shown.append(message)
    folder = server.add_folder(root.as_uri())
    folder.load_index(dense_model=None)
    assert folder.index.files() == ["a.py", "b.py", "c.py"]
    assert [s.filename for s in folder.index.retrieve("def a_area(r):\n    return", "d.py", "bm25")][:1] == ["a.py"]
    result = Primer(folder, engine, save_every_s=0.0).run()  # a save after every file
    assert result.primed == 3 and len(folder.primed) == 3
    folder.save_index()
    assert len(shown) == 1 and "cannot save the state of ws" in shown[0] and str(cache) in shown[0]


def test_prime_on_the_command_line_still_fails_on_an_unwritable_cache(tmp_path):
    """Without a server to keep the state in memory, writing it is the whole point: the error stays."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    cache = tmp_path / "cache"
    cache.write_text("not a directory")
    folder = FolderState(root.as_uri(), root, str(cache))
    with pytest.raises(OSError):
        folder.load_index(dense_model=None)


def test_a_memory_state_that_does_not_fit_on_the_disk_is_an_oserror(tmp_path):
    """safetensors reports a full disk as its own SafetensorError; the savers catch OSError."""
    import subprocess
    import sys

    script = f"""
import resource, signal, torch
from titans_lsp.model.memory import _atomic_save_safetensors
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # writes past 4 KB fail, as on a full disk
try:
    _atomic_save_safetensors({{"w": torch.zeros(10000)}}, __import__("pathlib").Path({str(tmp_path / "m.safetensors")!r}), {{}})
except OSError as exc:
    print("OSError", exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("OSError cannot write") and "File too large" in out.stdout, out.stderr
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp file left behind
