"""Per-folder server state on a tiny model: settings validation, priming order, persistence, resume."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("titans_lsp.retrieval.index", reason="the workspace index (branch retrieval) is not merged yet")

from server_client import FIXTURE_FILES, write_fixture  # noqa: E402
from titans_lsp.folder import FolderState  # noqa: E402


def test_settings_keep_the_previous_value_of_an_invalid_key(tmp_path):
    state = FolderState("file:///x", None)
    changed, errors = state.apply_settings({"mode": "hybrid", "maxNewTokens": 20})
    assert set(changed) == {"mode", "max_new_tokens"} and not errors
    changed, errors = state.apply_settings({"mode": "telepathy", "maxNewTokens": 30, "retriever": ["bm25", "dense"]})
    assert state.settings.mode == "hybrid" and state.settings.max_new_tokens == 30
    assert state.settings.retriever == ("bm25", "dense")
    assert len(errors) == 1 and "telepathy" in errors[0]
    state.apply_settings({})  # keys the editor no longer sets go back to their defaults
    assert state.settings.mode == "concat" and state.settings.max_new_tokens == 48


def test_prime_persists_and_resumes(tmp_path, tiny_llama_dir):
    pytest.importorskip("titans_lsp.model.memory", reason="the Titans memory (branch memory) is not merged yet")
    from titans_lsp.engine import CompletionEngine
    from titans_lsp.model.loading import load_model

    root = write_fixture(tmp_path / "repo")
    engine = CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"))
    state = FolderState(root.as_uri(), root, str(tmp_path / "cache"))
    state.load_index()
    assert state.files_to_prime() == ["app.py", "pkg/__init__.py", "pkg/config.py", "pkg/geometry.py"]
    order = []
    result = state.prime_all(engine, progress=lambda done, total: order.append((done, total)))
    assert result.primed == len(FIXTURE_FILES)
    assert len(state.primed) == len(FIXTURE_FILES) and order[-1] == (4, 4)
    fingerprint = state.memory_summary(engine)["fingerprint"]

    # A restart: the same state dir gives back the memory and the primed map; nothing to prime.
    again = FolderState(root.as_uri(), root, str(tmp_path / "cache"))
    again.load_index()
    again.ensure_memory(engine)
    assert again.primed == state.primed and again.files_to_prime() == []
    assert again.memory_summary(engine)["fingerprint"] == pytest.approx(fingerprint)

    (root / "pkg" / "config.py").write_text(FIXTURE_FILES["pkg/config.py"] + "\nDEBUG = False\n")
    assert again.reindex(root / "pkg" / "config.py")
    assert again.files_to_prime() == ["pkg/config.py"]
    assert again.prime_file(engine, "pkg/config.py") and again.files_to_prime() == []

    # Priming interrupted by a waiting completion resumes at the first unwritten token (no double writes).
    big = "\n".join(f"def function_{i}(x):\n    return x * {i} + {i * i}\n" for i in range(120))
    (root / "big.py").write_text(big)
    fresh = FolderState(root.as_uri(), root, str(tmp_path / "other-cache"))
    fresh.load_index()
    polls = iter([False, True] + [False] * 100)  # polled before each 512-token chunk: stop before the second
    waited = []
    assert fresh.prime_file(engine, "big.py", should_yield=lambda: next(polls), wait=lambda: waited.append(1))
    n_tokens = len(engine.tokenizer(big, add_special_tokens=False)["input_ids"])
    assert n_tokens > 1024 and waited == [1]
    assert fresh.workspace.memory.tokens_written == n_tokens

    again.reset_memory(engine)
    assert again.primed == {} and again.workspace.memory.tokens_written == 0


def test_prime_command_index_only(tmp_path):
    root = write_fixture(tmp_path / "repo")
    out = subprocess.run([sys.executable, "-m", "titans_lsp", "prime", str(root), "--index-only", "--cache-dir",
                          str(tmp_path / "cache")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"indexed {len(FIXTURE_FILES)} files" in out.stdout
    assert list((tmp_path / "cache" / "workspaces").glob("repo-*/index.pkl"))


def test_priming_pauses_while_the_user_types():
    """Background priming yields while a completion is in flight or one was requested within
    typing_quiet_s, so a chunk does not start between two keystrokes."""
    import time

    from titans_lsp.server import TitansServer

    server = TitansServer()
    try:
        assert not server._should_yield()  # nobody typed yet
        server.last_request_at = time.monotonic()
        assert server._should_yield()
        server.last_request_at = time.monotonic() - server.typing_quiet_s - 0.1
        assert not server._should_yield()
        server.inflight = 1
        assert server._should_yield()
        server.inflight = 0
        server.stopping.set()
        assert server._should_yield()
        server._wait_for_idle()  # returns at once when stopping
    finally:
        server.stop_all()
