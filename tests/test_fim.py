"""Fill-in-the-middle on tiny random models whose tokenizers carry each family's special tokens:
format detection, the prompt layout per family (repository level where the model has it), the
suffix reaching the model, and post-processing that never re-inserts the suffix."""

from __future__ import annotations

import pytest

from tiny_models import FIM_SPECIAL_TOKENS, save_tiny_model

from titans_lsp import fim as fimlib
from titans_lsp.backends import Backend, BackendError, GenerateCall
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings
from titans_lsp.model.generation import GenerationResult
from titans_lsp.model.loading import load_model
from titans_lsp.postprocess import clean_completion, cut_at_suffix
from titans_lsp.retrieval.prompt import Snippet

PREFIX = "def load_config(path):\n    with open(path) as f:\n        return "
SUFFIX = "\n\nclass Server:\n    pass\n"


@pytest.fixture(scope="module", params=["qwen", "starcoder", "deepseek", "codellama"])
def fim_engine(request, tmp_path_factory):
    directory = save_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), "llama", fim=request.param)
    return request.param, CompletionEngine(load_model(str(directory), device="cpu"))


@pytest.fixture(scope="module")
def plain_engine(tmp_path_factory):
    directory = save_tiny_model(tmp_path_factory.mktemp("tiny-smollm2-like"), "llama", fim="smollm2")
    return CompletionEngine(load_model(str(directory), device="cpu"))


def markers(engine) -> tuple[int, int, int]:
    tokens = engine.fim_tokens
    return tokens.prefix, tokens.suffix, tokens.middle


def test_the_family_is_detected_from_the_special_tokens(fim_engine, plain_engine):
    family, engine = fim_engine
    assert engine.fim_tokens is not None and engine.fim_tokens.family == family
    vocab = engine.tokenizer.get_vocab()
    assert engine.fim_tokens.prefix == vocab[engine.fim_tokens.format.prefix]
    assert engine.fim_tokens.repo_level == (family in ("qwen", "starcoder"))
    # The default model's shape: repository tokens but no FIM markers -> no FIM.
    assert plain_engine.fim_tokens is None


def test_prompt_layout_per_family_and_the_suffix_is_seen(fim_engine):
    family, engine = fim_engine
    tok = engine.tokenizer
    settings = CompletionSettings(mode="none", max_new_tokens=4)
    completion = engine.complete(CompletionRequest(prefix=PREFIX, suffix=SUFFIX, settings=settings))
    p, s, m = markers(engine)
    ids = completion.prompt_ids
    assert completion.fim == family
    assert ids[-1] == m and ids.count(p) == 1 and ids.count(s) == 1
    prefix_part = ids[ids.index(p) + 1:ids.index(s)]
    suffix_part = ids[ids.index(s) + 1:-1]
    assert tok.decode(prefix_part) == PREFIX
    assert tok.decode(suffix_part) == SUFFIX  # the model sees the text after the cursor
    # A different suffix changes the prompt; the prefix part stays.
    other = engine.complete(CompletionRequest(prefix=PREFIX, suffix="\nx = 1\n", settings=settings))
    assert other.prompt_ids != ids and other.prompt_ids[:ids.index(s)] == ids[:ids.index(s)]


def test_fim_off_lays_out_the_prefix_only(fim_engine):
    _, engine = fim_engine
    p, s, m = markers(engine)
    completion = engine.complete(CompletionRequest(prefix=PREFIX, suffix=SUFFIX,
                                                   settings=CompletionSettings(mode="none", max_new_tokens=4, fim="off")))
    assert completion.fim is None and not {p, s, m} & set(completion.prompt_ids)
    assert engine.tokenizer.decode(completion.prompt_ids).endswith(PREFIX)


def test_cross_file_snippets_use_the_repository_format_where_the_model_has_it(fim_engine):
    family, engine = fim_engine
    tok = engine.tokenizer
    snippets = [Snippet("pkg/util.py", "def helper(x):\n    return x + 1"), Snippet("pkg/io.py", "def read(path):\n    pass")]
    completion = engine.complete(CompletionRequest(prefix=PREFIX, suffix=SUFFIX, path="pkg/config.py", snippets=snippets,
                                                   settings=CompletionSettings(mode="concat", max_new_tokens=4)))
    p, s, m = markers(engine)
    ids = completion.prompt_ids
    if engine.fim_tokens.repo_level:
        fmt = engine.fim_tokens.format
        assert completion.context.startswith(fmt.repo_name)
        assert f"{fmt.file_sep}pkg/util.py\ndef helper(x):" in completion.context
        before = tok.decode(ids[:ids.index(p)])  # repository files, then this file's header, then the FIM part
        assert before.endswith(f"{fmt.file_sep}pkg/config.py\n") and "pkg/io.py" in before
    else:  # the comment block goes inside the prefix part
        assert ids[0] == p or ids[1] == p
        prefix_part = tok.decode(ids[ids.index(p) + 1:ids.index(s)])
        assert prefix_part.startswith("# Here are some relevant code fragments") and prefix_part.endswith(PREFIX)
    assert ids[-1] == m


def test_long_suffix_gets_at_most_a_quarter_of_the_window(fim_engine):
    _, engine = fim_engine
    settings = CompletionSettings(mode="none", max_new_tokens=8, max_seq=256, context_budget=64)
    long_suffix = "".join(f"\nvalue_{i} = compute({i})" for i in range(200))
    completion = engine.complete(CompletionRequest(prefix=PREFIX * 20, suffix=long_suffix, settings=settings))
    p, s, m = markers(engine)
    ids = completion.prompt_ids
    suffix_part = ids[ids.index(s) + 1:-1]
    assert len(ids) <= settings.max_seq - settings.max_new_tokens
    assert 0 < len(suffix_part) <= (settings.max_seq - settings.max_new_tokens) // fimlib.SUFFIX_SHARE
    assert long_suffix.startswith(engine.tokenizer.decode(suffix_part))  # its first lines, cut at a line end


def test_token_healing_takes_the_prefix_end_not_the_middle_marker(fim_engine):
    _, engine = fim_engine
    p, s, m = markers(engine)
    seen: list[GenerateCall] = []

    class Spy(Backend):
        name = "spy"
        tokenizer = engine.tokenizer

        @classmethod
        def create(cls, *args, **kwargs):
            raise NotImplementedError

        def generate(self, call):
            seen.append(call)
            return [GenerationResult([], "", len(call.prompt_ids), 0, 0, "eos")]

    spy_engine = CompletionEngine(backend=Spy())
    spy_engine.complete(CompletionRequest(prefix="x = [1, 2, 3]\nreturn ", suffix=SUFFIX,
                                          settings=CompletionSettings(mode="none", max_new_tokens=4)))
    call = seen[-1]
    ids = call.prompt_ids
    assert ids[-1] == m and call.heal_text  # the middle marker stays; the healed text came from the prefix's end
    assert engine.tokenizer.decode(ids[ids.index(p) + 1:ids.index(s)]) + call.heal_text == "x = [1, 2, 3]\nreturn "
    assert call.stop_ids == engine.fim_tokens.stop_ids  # the format's end-of-middle tokens end generation
    pad = engine.tokenizer.get_vocab().get(engine.fim_tokens.format.end[0])
    assert pad is None or pad in call.stop_ids


class Scripted(Backend):
    """Returns fixed text: what a FIM model that re-writes the following lines would produce."""

    name = "scripted"
    text = ""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def create(cls, *args, **kwargs):
        raise NotImplementedError

    def generate(self, call):
        return [GenerationResult([], self.text, len(call.prompt_ids), 0, 1, "eos")]


def test_completions_never_repeat_the_suffix(fim_engine):
    _, engine = fim_engine
    backend = Scripted(engine.tokenizer)
    scripted = CompletionEngine(backend=backend)
    prefix = "def area(w, h):\n    "
    suffix = "\n    return result\n\nprint(area(2, 3))\n"
    backend.text = "result = w * h\n    return result\n"
    settings = CompletionSettings(mode="none", max_new_tokens=16, multiline="always")
    completion = scripted.complete(CompletionRequest(prefix=prefix, suffix=suffix, settings=settings))
    assert completion.text == "result = w * h"
    # On one line: the text after the cursor is not inserted again.
    backend.text = "x, y)):\n"
    line = scripted.complete(CompletionRequest(prefix="if check(", suffix=")):\n    pass\n",
                                               settings=CompletionSettings(mode="none", max_new_tokens=8)))
    assert line.text == "x, y"


def test_fim_on_without_fim_tokens_names_the_fix(plain_engine):
    with pytest.raises(BackendError, match="no fill-in-the-middle tokens.*'auto' or 'off'"):
        plain_engine.complete(CompletionRequest(prefix=PREFIX, suffix=SUFFIX,
                                                settings=CompletionSettings(mode="none", fim="on")))
    auto = plain_engine.complete(CompletionRequest(prefix=PREFIX, suffix=SUFFIX, settings=CompletionSettings(mode="none", max_new_tokens=2)))
    assert auto.fim is None


def test_cut_at_suffix_unit():
    assert cut_at_suffix("a = 1\nb = 2\nc = 3", "\nb = 2\n") == "a = 1"
    assert cut_at_suffix("a = 1\nb = 2", "\n\n   \nz = 0\n") == "a = 1\nb = 2"
    assert cut_at_suffix("one line", "\nanything\n") == "one line"
    assert clean_completion("total = 0\n    for x in xs:\n", "def f(xs):\n    ", "\n    for x in xs:\n", "always") == "total = 0"


def test_every_family_in_the_table_is_a_test_tokenizer():
    assert {f.family for f in fimlib.FORMATS} <= set(FIM_SPECIAL_TOKENS)
