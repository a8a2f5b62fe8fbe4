"""The shared completion engine on a tiny model and on the default model."""

from __future__ import annotations

import threading
import time

import pytest

from titans_lsp.engine import Cancelled, CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.model.loading import load_model
from titans_lsp.retrieval.prompt import HEADER, Snippet


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_dir):
    return CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"))


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


def test_a_typescript_file_gets_the_block_in_its_comment_syntax_and_its_cut(tiny_engine):
    snippets = [Snippet("src/cart.ts", "export class Cart {\n  add(): void {}\n}")]
    settings = CompletionSettings(mode="concat", max_new_tokens=4)
    for path, language_id in (("src/main.ts", None), ("untitled-1", "typescript")):
        completion = tiny_engine.complete(CompletionRequest(prefix="const c = new ", settings=settings, snippets=snippets,
                                                            path=path, language_id=language_id))
        assert completion.context.startswith("// Here are some relevant code fragments from other files of the repo:")
        assert "// the below code fragment is found in src/cart.ts\n// export class Cart {" in completion.context
        assert "\n# " not in completion.context
    request = CompletionRequest(prefix="x", path="src/main.ts")
    assert request.language.name == "typescript" and CompletionRequest(prefix="x").language.name == "text"


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


def test_request_cancelled_while_waiting_for_the_model_gives_up_at_once(tiny_engine):
    """Priming (or another holder) has the model: a request cancelled meanwhile must not wait for it."""
    cancel = threading.Event()
    request = CompletionRequest(prefix="import os\n", cancel=cancel, settings=CompletionSettings(mode="none"))
    outcome = []

    def run():
        try:
            tiny_engine.complete(request)
            outcome.append("completed")
        except Cancelled:
            outcome.append("cancelled")

    with tiny_engine.model_lock:
        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.2)
        assert tiny_engine._waiting == 1 and not outcome  # waiting for the model, visible to priming
        cancel.set()
        thread.join(timeout=2)
        assert outcome == ["cancelled"]  # while the lock is still held
    assert tiny_engine._waiting == 0 and not tiny_engine.model_lock.locked()


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


def test_closing_a_document_forgets_its_cache_and_layout_only(tiny_engine):
    workspace = Workspace()
    settings = CompletionSettings(mode="none", max_new_tokens=4)
    prefix = "class Server:\n    def __init__(self, host, port):\n        self."
    for key in ("a.py", "b.py"):
        tiny_engine.complete(CompletionRequest(prefix=prefix, settings=settings, doc_key=key), workspace)
    assert {"a.py", "b.py"} <= set(workspace.caches) and {"a.py", "b.py"} <= set(workspace.layouts)
    workspace.close_document("a.py")
    assert "a.py" not in workspace.caches and "a.py" not in workspace.layouts
    assert "b.py" in workspace.caches and "b.py" in workspace.layouts
    reopened = tiny_engine.complete(CompletionRequest(prefix=prefix, settings=settings, doc_key="a.py"), workspace)
    assert reopened.reused == 0  # starts cold, as a newly opened document does


class _FixedIndex:
    """A workspace index stand-in: the same two snippets for every query."""

    def retrieve(self, prefix, path, retriever="bm25", k=5):
        return [Snippet("pkg/util.py", "def helper(x):\n    return x + 1"), Snippet("pkg/io.py", "def read(path):\n    pass")]


class _SetAfter(threading.Event):
    """A cancel event that reads as set from its ``calls``-th check on (cancel mid-prefill)."""

    def __init__(self, calls: int):
        super().__init__()
        self.calls = calls

    def is_set(self) -> bool:
        self.calls -= 1
        return self.calls < 0


@pytest.mark.parametrize("mode", ["none", "concat"])
def test_prepare_prewarms_the_cursor_so_the_first_keystroke_is_warm(tiny_engine, mode):
    settings = CompletionSettings(mode=mode, max_new_tokens=6)
    prefix = "".join(f"def handler_{i}(request):\n    return request.value + {i}\n\n" for i in range(40)) + "def main():\n    x"
    workspace = Workspace(index=_FixedIndex())
    prepared = tiny_engine.prepare(CompletionRequest(prefix=prefix, settings=settings, doc_key="a.py", automatic=True),
                                   workspace)
    assert prepared.items == [] and prepared.decoded == 0 and prepared.prefilled == prepared.prompt_tokens > 200
    typed = CompletionRequest(prefix=prefix + "y", settings=settings, doc_key="a.py", automatic=True)
    warm = tiny_engine.complete(typed, workspace)
    fresh = tiny_engine.complete(CompletionRequest(prefix=prefix + "y", settings=settings, automatic=True),
                                 Workspace(index=_FixedIndex()))
    assert warm.prefilled <= 3 and warm.reused >= prepared.prompt_tokens - 2
    assert warm.raw == fresh.raw and warm.items == fresh.items
    if mode == "concat":
        assert warm.context == prepared.context != ""


def test_cancelled_prepare_keeps_the_chunks_it_finished(tiny_engine):
    settings = CompletionSettings(mode="none", max_new_tokens=4)
    prefix = "values = [\n" + "".join(f"    {i} * {i},\n" for i in range(300))
    workspace = Workspace()
    with pytest.raises(Cancelled):  # one 512-token chunk, then cancelled before the second
        tiny_engine.prepare(CompletionRequest(prefix=prefix, settings=settings, doc_key="b.py", cancel=_SetAfter(2)),
                            workspace)
    assert len(workspace.caches["b.py"].ids) == 512
    later = tiny_engine.complete(CompletionRequest(prefix=prefix + "]", settings=settings, doc_key="b.py"), workspace)
    assert later.reused == 512
    with pytest.raises(ValueError, match="document key"):
        tiny_engine.prepare(CompletionRequest(prefix=prefix, settings=settings), workspace)


@pytest.mark.slow
def test_default_model_completes_plausibly(default_model):
    engine = CompletionEngine(default_model)
    completion = engine.complete(CompletionRequest(prefix="def load_config(path):\n    with open(path) as f:\n        return ",
                                                   settings=CompletionSettings(mode="none")))
    assert completion.text and "f" in completion.text and "\n" not in completion.text


def test_a_memory_checkpoint_that_does_not_fit_the_model_fails_every_memory_request_not_only_the_first(
        tmp_path, tiny_llama_dir):
    """The patch was kept when the checkpoint's parameters failed to load: the first memory request got
    an internal error, every later one ran on untrained memory parameters as if nothing had happened."""
    import json

    from titans_lsp.backends import BackendError
    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.model.patching import install_memory

    lm = load_model(str(tiny_llama_dir), device="cpu")
    patch = install_memory(lm.model, MemoryConfig())
    patch.save_parameters(tmp_path / "ckpt")
    patch.uninstall()
    info = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**info, "hidden_size": 4096}))  # another model's
    engine = CompletionEngine(lm, memory_checkpoint=tmp_path / "ckpt")
    request = CompletionRequest(prefix="def add(a, b):\n    return ", settings=CompletionSettings(mode="memory", max_new_tokens=2))
    for _ in range(2):
        with pytest.raises(BackendError, match=r"cannot install the Titans memory.*does not fit"):
            engine.complete(request)
    assert engine.patch is None and getattr(lm.model, "_titans_patch", None) is None  # the model is left as it was
    assert engine.complete(CompletionRequest(prefix=request.prefix, settings=CompletionSettings(mode="none", max_new_tokens=2)))
