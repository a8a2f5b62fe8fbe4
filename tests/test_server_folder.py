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


def test_prime_command_index_only(tmp_path):
    root = write_fixture(tmp_path / "repo")
    out = subprocess.run([sys.executable, "-m", "titans_lsp", "prime", str(root), "--index-only", "--cache-dir",
                          str(tmp_path / "cache")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"indexed {len(FIXTURE_FILES)} files" in out.stdout
    assert list((tmp_path / "cache" / "workspaces").glob("repo-*/index.json"))


def test_priming_pauses_while_the_user_types():
    """Background priming yields while a completion is in flight or one was requested within
    the typing pause's quiet time, so a chunk does not start between two keystrokes."""
    import threading
    import time

    from titans_lsp.scheduling import TypingPause

    typing, stopping = TypingPause(), threading.Event()
    policy = typing.policy(stopping)
    assert not policy.should_yield()  # nobody typed yet
    typing.request_started()
    assert policy.should_yield()  # in flight
    typing.request_finished()
    assert policy.should_yield()  # answered, but the user typed within quiet_s
    typing.last_request_at = time.monotonic() - typing.quiet_s - 0.1
    assert not policy.should_yield()
    typing.request_started()
    stopping.set()
    assert policy.should_yield()
    policy.wait()  # returns at once when stopping
