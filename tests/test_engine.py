"""The shared completion engine on a tiny model and on the default model."""

from __future__ import annotations

import threading

import pytest

from titans_lsp.engine import Cancelled, CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.model.loading import load_model
from titans_lsp.retrieval.prompt import HEADER, Snippet


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_dir):
    return CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"))


def test_settings_validation_and_editor_mapping():
    settings = CompletionSettings.from_editor({"mode": "memory", "maxNewTokens": 16, "retriever": ["bm25", "dense"]})
    assert settings.mode == "memory" and settings.max_new_tokens == 16 and settings.retriever == ("bm25", "dense")
    for bad in ({"mode": "telepathy"}, {"retriever": "grep"}, {"maxNewTokens": 0}, {"multiline": "sometimes"}):
        with pytest.raises(ValueError, match="invalid"):
            CompletionSettings.from_editor(bad)


def test_none_mode_sees_only_the_prefix(tiny_engine):
    request = CompletionRequest(prefix="def load_config(path):\n    return ", settings=CompletionSettings(mode="none", max_new_tokens=6),
                                snippets=[Snippet("util.py", "def helper():\n    pass")])
    completion = tiny_engine.complete(request)
    assert completion.context == "" and completion.mode == "none"
    assert completion.prompt_tokens > 0 and completion.decoded <= 6


def test_concat_mode_prepends_the_crossfile_block(tiny_engine):
    snippets = [Snippet("pkg/util.py", "def helper(x):\n    return x + 1"), Snippet("pkg/io.py", "def read(path):\n    pass")]
    settings = CompletionSettings(mode="concat", max_new_tokens=4)
    completion = tiny_engine.complete(CompletionRequest(prefix="from pkg.util import helper\nvalue = ", settings=settings,
                                                        snippets=snippets))
    assert completion.context.startswith(HEADER)
    assert "# the below code fragment is found in pkg/util.py" in completion.context
    plain = tiny_engine.complete(CompletionRequest(prefix="from pkg.util import helper\nvalue = ",
                                                   settings=CompletionSettings(mode="none", max_new_tokens=4)))
    assert completion.prompt_tokens > plain.prompt_tokens


def test_invoked_requests_get_up_to_three_distinct_items(tiny_engine):
    completion = tiny_engine.complete(CompletionRequest(prefix="x = [1, 2, 3]\ny = ", num_items=3,
                                                        settings=CompletionSettings(mode="none", max_new_tokens=5)))
    assert 1 <= len(completion.items) <= 3
    assert len(set(completion.items)) == len(completion.items)


def test_cancelled_request_raises_and_releases_the_model(tiny_engine):
    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled):
        tiny_engine.complete(CompletionRequest(prefix="import os\n", cancel=event, settings=CompletionSettings(mode="none")))
    assert not tiny_engine.model_lock.locked()


def test_document_cache_reuse_gives_the_same_completion(tiny_engine):
    workspace = Workspace()
    settings = CompletionSettings(mode="none", max_new_tokens=6)
    prefix = "class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self."
    cold = tiny_engine.complete(CompletionRequest(prefix=prefix, settings=settings, doc_key="a.py"), workspace)
    warm = tiny_engine.complete(CompletionRequest(prefix=prefix + "p", settings=settings, doc_key="a.py"), workspace)
    fresh = tiny_engine.complete(CompletionRequest(prefix=prefix + "p", settings=settings))
    assert warm.reused > 0 and warm.prefilled < fresh.prefilled
    assert warm.raw == fresh.raw and warm.items == fresh.items
    assert cold.reused == 0


@pytest.mark.slow
def test_default_model_completes_plausibly(default_model):
    engine = CompletionEngine(default_model)
    completion = engine.complete(CompletionRequest(prefix="def load_config(path):\n    with open(path) as f:\n        return ",
                                                   settings=CompletionSettings(mode="none")))
    assert completion.text and "f" in completion.text and "\n" not in completion.text
