"""Shared fixtures: tiny random models (session-scoped, saved once) and an isolated cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import save_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen35"), "qwen3_5")


@pytest.fixture(scope="session")
def default_model():
    """The embedded default model, loaded once per test session (converted copy from the user cache)."""
    from titans_lsp.model.loading import load_model

    return load_model("default")
