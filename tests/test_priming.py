"""The one priming loop (titans_lsp.priming.Primer) on a tiny model: order, persistence, resume,
yielding to the typist, stopping."""

from __future__ import annotations

import pytest

from server_client import FIXTURE_FILES, write_fixture
from titans_lsp.engine import CompletionEngine
from titans_lsp.folder import FolderState
from titans_lsp.model.loading import load_model
from titans_lsp.priming import Primer, YieldPolicy


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"))


def folder(root, cache) -> FolderState:
    state = FolderState(root.as_uri(), root, str(cache))
    state.load_index()
    return state


def test_prime_persists_and_resumes(tmp_path, engine):
    root = write_fixture(tmp_path / "repo")
    state = folder(root, tmp_path / "cache")
    primer = Primer(state, engine)
    assert primer.files_to_prime() == ["app.py", "pkg/__init__.py", "pkg/config.py", "pkg/geometry.py"]
    order = []
    result = primer.run(progress=lambda done, total: order.append((done, total)))
    assert result.primed == len(FIXTURE_FILES) and result.skipped == 0 and not result.stopped
    assert result.tokens == state.workspace.memory.tokens_written > 0
    assert len(state.primed) == len(FIXTURE_FILES) and order[0] == (0, 4) and order[-1] == (4, 4)
    assert state.priming is None and state.workspace.pending is None  # published at the end of the batch
    fingerprint = state.memory_summary(engine)["fingerprint"]

    # A restart: the same state dir gives back the memory and the primed map; nothing to prime.
    again = folder(root, tmp_path / "cache")
    again.ensure_memory(engine)
    assert again.primed == state.primed and Primer(again, engine).files_to_prime() == []
    assert again.memory_summary(engine)["fingerprint"] == pytest.approx(fingerprint)
    assert Primer(again, engine).run().skipped == len(FIXTURE_FILES)

    (root / "pkg" / "config.py").write_text(FIXTURE_FILES["pkg/config.py"] + "\nDEBUG = False\n")
    assert again.reindex(root / "pkg" / "config.py")
    assert Primer(again, engine).files_to_prime() == ["pkg/config.py"]
    assert Primer(again, engine).run(files=["pkg/config.py"]).primed == 1
    assert Primer(again, engine).files_to_prime() == []

    again.reset_memory(engine)
    assert again.primed == {} and again.workspace.memory.tokens_written == 0
    assert Primer(again, engine).run(force=True).primed == len(FIXTURE_FILES)


def test_a_yield_resumes_at_the_first_unwritten_token(tmp_path, engine):
    root = write_fixture(tmp_path / "repo")
    big = "\n".join(f"def function_{i}(x):\n    return x * {i} + {i * i}\n" for i in range(120))
    (root / "big.py").write_text(big)
    state = folder(root, tmp_path / "cache")
    # polled before reading the file, then before each 512-token chunk: stop before the second chunk
    polls = iter([False, False, True] + [False] * 100)
    waited = []
    result = Primer(state, engine, YieldPolicy(should_yield=lambda: next(polls), wait=lambda: waited.append(1))).run(
        files=["big.py"])
    n_tokens = len(engine.tokenizer(big, add_special_tokens=False)["input_ids"])
    assert n_tokens > 1024 and waited == [1] and result.primed == 1
    assert state.workspace.memory.tokens_written == n_tokens  # no chunk written twice


def test_files_are_read_only_while_the_user_is_idle(tmp_path, engine):
    root = write_fixture(tmp_path / "repo")
    state = folder(root, tmp_path / "cache")
    events = []
    real_load = state.index.rules.load
    state.index.rules.load = lambda path: events.append("read") or real_load(path)
    active = iter([True, False] * 50)  # the user types before each file, then pauses
    policy = YieldPolicy(should_yield=lambda: events.append("poll") or next(active), wait=lambda: events.append("wait"))
    result = Primer(state, engine, policy).run(files=["app.py", "pkg/config.py"])
    assert result.primed == 2
    assert events[:4] == ["poll", "wait", "read", "poll"]  # waited for the typist before reading the file
    assert events.count("read") == 2 and events.count("wait") >= 2
    for i, event in enumerate(events):
        if event == "read":
            assert events[i - 1] == "wait"  # never read right after a poll that said the user is active


def test_yield_without_wait_leaves_the_file_for_the_next_run(tmp_path, engine):
    root = write_fixture(tmp_path / "repo")
    state = folder(root, tmp_path / "cache")
    result = Primer(state, engine, YieldPolicy(should_yield=lambda: True)).run()
    assert result.primed == 1 and list(state.primed) == ["pkg/__init__.py"]  # empty: nothing to write
    assert state.workspace.memory.tokens_written == 0
    assert Primer(state, engine).files_to_prime() == ["app.py", "pkg/config.py", "pkg/geometry.py"]


def test_a_stopped_run_publishes_and_saves_what_it_wrote(tmp_path, engine):
    root = write_fixture(tmp_path / "repo")
    state = folder(root, tmp_path / "cache")
    calls = iter([False, False, True, True, True])
    result = Primer(state, engine).run(should_stop=lambda: next(calls))
    assert result.stopped and result.primed == 2 and len(state.primed) == 2
    assert state.workspace.pending is None and state.workspace.memory.tokens_written == result.tokens
    resumed = folder(root, tmp_path / "cache")
    resumed.ensure_memory(engine)
    assert resumed.primed == state.primed  # saved on the way out
    assert Primer(resumed, engine).files_to_prime() == ["pkg/config.py", "pkg/geometry.py"]
