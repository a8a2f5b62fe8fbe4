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


@pytest.fixture(params=["llama", "qwen3_5"])
def tiny(request, tiny_llama_dir, tiny_qwen_dir):
    """A fresh tiny model per test (tests patch it), once per architecture; ``arch`` names which.
    Test files with other needs (a module-scoped model, one architecture) define their own ``tiny``."""
    from titans_lsp.model.loading import load_model

    directory = tiny_llama_dir if request.param == "llama" else tiny_qwen_dir
    lm = load_model(str(directory), device="cpu")
    lm.arch = request.param
    return lm


@pytest.fixture(scope="session")
def default_model():
    """The embedded default model, loaded once per test session (converted copy from the user cache)."""
    from titans_lsp.model.loading import load_model

    return load_model("default")
