"""The cross-file block: packing (definitions first, de-duplicated, oversized fragments cut, never
dropped), every server retriever through the eval path, and one block for eval and server."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tiny_models import make_tokenizer
from toy_repos import write_toy_package
from titans_lsp.retrieval.index import Snippet, WorkspaceIndex, expand_retrievers
from titans_lsp.retrieval.prompt import BLOCK_HEADER, count_tokens, crossfile_block

HEADER = BLOCK_HEADER.format(c="#")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def long_definition(n: int = 80) -> str:
    return "def build_settings(host, port):\n" + "".join(f"    option_{i} = load_value('key_{i}', {i})\n"
                                                         for i in range(n)) + "    return host, port\n"


def fragments(block: str) -> list[tuple[str, list[str]]]:
    """(filename, uncommented lines) of each fragment of a block."""
    out = []
    for part in block[len(HEADER):].split("# the below code fragment is found in ")[1:]:
        head, *lines = [line for line in part.split("\n") if line]
        out.append((head, [line[2:] for line in lines]))
    return out


# ---- packing ------------------------------------------------------------------------------------
def test_oversized_first_snippet_is_cut_at_a_line_boundary(tokenizer):
    text = long_definition()
    snippets = [Snippet("pkg/settings.py", text), Snippet("pkg/other.py", "x = 1")]
    assert count_tokens(tokenizer, text) > 200
    block = crossfile_block(snippets, tokenizer, budget_tokens=200)
    assert block and count_tokens(tokenizer, block) <= 200
    (name, lines), = fragments(block)  # the block is full after the cut fragment
    assert name == "pkg/settings.py"
    source = [line for line in text.split("\n") if line]
    assert 1 < len(lines) < len(source) and lines == source[:len(lines)]  # a head of whole lines
    # one more line would not have fit
    assert count_tokens(tokenizer, crossfile_block([Snippet("pkg/settings.py", "\n".join(source[:len(lines) + 1]))],
                                                   tokenizer, budget_tokens=10_000)) > 200
    # the reference rule (CrossCodeEval's rows) still drops it, and with it the whole block
    assert crossfile_block(snippets, tokenizer, budget_tokens=200, packing="reference") == ""


def test_a_later_snippet_that_does_not_fit_is_cut_and_ends_the_block(tokenizer):
    snippets = [Snippet("a.py", "def small():\n    return 1"), Snippet("b.py", long_definition()),
                Snippet("c.py", "def never():\n    pass")]
    block = crossfile_block(snippets, tokenizer, budget_tokens=220)
    assert [name for name, _ in fragments(block)] == ["a.py", "b.py"]
    assert count_tokens(tokenizer, block) <= 220


def test_repeats_are_packed_once(tokenizer):
    definition = "class Settings:\n    def __init__(self, host):\n        self.host = host\n\n    def url(self):\n" \
                 "        return self.host"
    window = "    def url(self):\n        return self.host"  # a ranked chunk inside the definition
    snippets = [Snippet("pkg/config.py", definition, retriever="imports"), Snippet("pkg/config.py", window),
                Snippet("pkg/config.py", definition), Snippet("pkg/copy.py", window), Snippet("pkg/empty.py", "\n\n")]
    block = crossfile_block(snippets, tokenizer, budget_tokens=10_000)
    assert [name for name, _ in fragments(block)] == ["pkg/config.py", "pkg/copy.py"]  # same text elsewhere stays
    reference = crossfile_block(snippets, tokenizer, budget_tokens=10_000, packing="reference")
    assert [name for name, _ in fragments(reference)] == ["pkg/config.py"] * 3 + ["pkg/copy.py", "pkg/empty.py"]


@pytest.mark.parametrize("budget", [24, 64, 200, 512])
def test_packed_block_stays_within_budget_and_keeps_order(tokenizer, budget):
    rng = random.Random(budget)
    words = ["self", "config", "return", "def", "(", ")", ":", "=", "load", "x", "1", "é", "\t"]
    for _ in range(40):
        snippets = [Snippet(f"m{i}.py", "\n".join(" ".join(rng.choice(words) for _ in range(rng.randrange(1, 14)))
                                                  for _ in range(rng.randrange(1, 30)))) for i in range(rng.randrange(1, 8))]
        block = crossfile_block(snippets, tokenizer, budget_tokens=budget)
        assert count_tokens(tokenizer, block) <= budget
        names = [name for name, _ in fragments(block)]
        assert names == [s.filename for s in snippets[:len(names)]]
        if snippets and count_tokens(tokenizer, HEADER + f"# the below code fragment is found in m0.py\n# "
                                     f"{snippets[0].text.split(chr(10))[0]}\n\n") <= budget - 2:
            assert names, "a first fragment whose first line fits is never dropped"


def test_unknown_packing_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="unknown packing"):
        crossfile_block([Snippet("a.py", "x = 1")], tokenizer, packing="greedy")


# ---- retrievers ---------------------------------------------------------------------------------
def write_repo(root: Path) -> Path:
    return write_toy_package(root, filler="# filler line {i} about settings and ports\n", init=True).parent


MAIN_PREFIX = ("from toypkg.server import start_server\nfrom toypkg.config import Settings\n\n\ndef main():\n"
               "    server = start_server('config.json')\n    other = ")


def test_expand_retrievers():
    assert expand_retrievers("hybrid") == ["bm25", "dense"]
    assert expand_retrievers(["usages", "bm25", "imports"]) == ["usages", "bm25", "imports"]
    assert expand_retrievers(["imports", "hybrid", "bm25"]) == ["imports", "bm25", "dense"]
    with pytest.raises(ValueError, match="unknown retriever 'tfidf'"):
        expand_retrievers(["imports", "tfidf"])
    with pytest.raises(ValueError, match="no retriever"):
        expand_retrievers([])


def test_the_block_follows_the_order_of_the_list(tmp_path):
    index = WorkspaceIndex(write_repo(tmp_path), dense_model=None)
    index.build()
    definitions = index.retrieve(MAIN_PREFIX, "toypkg/main.py", "imports", k=3)
    ranked = index.retrieve(MAIN_PREFIX, "toypkg/main.py", "bm25", k=3)
    uses = index.retrieve(MAIN_PREFIX, "toypkg/main.py", "usages", k=3)
    assert definitions and ranked and uses
    assert index.retrieve(MAIN_PREFIX, "toypkg/main.py", ["imports", "bm25"], k=3) == definitions + ranked
    assert index.retrieve(MAIN_PREFIX, "toypkg/main.py", ["bm25", "imports"], k=3) == ranked + definitions
    assert index.retrieve(MAIN_PREFIX, "toypkg/main.py", ["usages", "imports", "bm25"], k=3) == uses + definitions + ranked


def test_usages_are_call_sites_of_imported_names_in_other_files(tmp_path):
    root = write_repo(tmp_path)
    (root / "toypkg" / "cli.py").write_text(
        "from toypkg.config import (\n    DEFAULT_PORT,\n    Settings,\n)\n\n\ndef parse(argv):\n    host = argv[0]\n"
        "    return Settings(host, DEFAULT_PORT)\n")
    index = WorkspaceIndex(root, dense_model=None)
    index.build()
    uses = index.retrieve(MAIN_PREFIX, "toypkg/main.py", "usages", k=5)
    assert sorted(s.filename for s in uses) == ["toypkg/cli.py", "toypkg/server.py"]
    assert all(s.retriever == "usages" and s.filename != "toypkg/main.py" for s in uses)
    by_file = {s.filename: s.text.split("\n") for s in uses}
    # the window ends two lines after the first use, and starts with the lines leading to it
    assert by_file["toypkg/cli.py"][-1] == "    return Settings(host, DEFAULT_PORT)"
    assert by_file["toypkg/cli.py"][0] == "from toypkg.config import ("  # 8 lines before the use reach the top
    assert "    settings = Settings('localhost', DEFAULT_PORT)" in by_file["toypkg/server.py"]
    assert not any(s.filename == "toypkg/config.py" for s in uses)  # `class Settings:` defines it, no use
    # nothing typed yet, or a file that imports nothing from the workspace: no usages
    assert index.retrieve("", "toypkg/main.py", "usages") == []
    assert index.retrieve("import os\nx = os.getcwd()\n", "toypkg/other.py", "usages") == []


MODULE_PREFIX = ("import toypkg.config as cfg\nfrom toypkg import server\nfrom toypkg.config import DEFAULT_PORT, not_defined\n"
                 "\n\ndef main():\n    path = cfg.load_config('a.json')\n    other = server.start_server(path)\n    x = ")


def import_context_names(index: WorkspaceIndex, prefix: str, current: str) -> list[str]:
    """The names ``usages`` took before workspace_names: those ``import_context`` resolves to definitions."""
    from titans_lsp.retrieval.imports import import_context

    found = import_context(prefix, current, index.module_map(), index._read_rel, limit=20, lookup=index._lookup)
    return list(dict.fromkeys(s.name.rsplit(".", 1)[-1] for s in found))


@pytest.mark.parametrize("prefix", [MAIN_PREFIX, MODULE_PREFIX])
def test_usages_names_come_from_the_module_map_and_match_import_context(tmp_path, monkeypatch, prefix):
    import titans_lsp.retrieval.index as index_module
    from titans_lsp.retrieval.imports import workspace_names

    root = write_repo(tmp_path)
    (root / "toypkg" / "cli.py").write_text(
        "from toypkg.config import (\n    DEFAULT_PORT,\n    Settings,\n    load_config,\n)\nfrom toypkg.server import start_server\n"
        "\n\ndef parse(argv):\n    host = argv[0]\n    start_server(load_config(host))\n    return Settings(host, DEFAULT_PORT)\n")
    index = WorkspaceIndex(root, dense_model=None)
    index.build()
    current = "toypkg/main.py"
    names = workspace_names(prefix, current, index.module_map(), 20, index._mentions)
    assert set(names) == set(import_context_names(index, prefix, current))
    # the same snippets as with the names import_context gives (what usages did before)
    monkeypatch.setattr(index_module, "workspace_names", lambda p, c, m, limit, mentions: import_context_names(index, p, c))
    before = index.usage_snippets(prefix, current, 5)
    monkeypatch.undo()
    # and no file is read on the way: the module map and the index's postings answer
    monkeypatch.setattr(index.rules, "load", lambda *a, **k: pytest.fail("a file was read"))
    assert index.usage_snippets(prefix, current, 5) == before
    assert before and all(s.filename != current for s in before)


def test_workspace_names_keeps_what_the_module_mentions_unused_first(tmp_path):
    from titans_lsp.retrieval.imports import workspace_names

    index = WorkspaceIndex(write_repo(tmp_path), dense_model=None)
    index.build()
    modules = index.module_map()
    # cfg.load_config is used last (nearest the cursor); DEFAULT_PORT is imported, unused; `server` is a
    # submodule (its attribute start_server counts); `not_defined` appears nowhere in config.py
    assert workspace_names(MODULE_PREFIX, "toypkg/main.py", modules, 20, index._mentions) == \
        ["DEFAULT_PORT", "start_server", "load_config"]
    assert workspace_names(MODULE_PREFIX, "toypkg/main.py", modules, 2, index._mentions) == ["DEFAULT_PORT", "start_server"]
    # without the index's postings, a name is kept unseen (nothing says the module lacks it)
    assert "not_defined" in workspace_names(MODULE_PREFIX, "toypkg/main.py", modules, 20)
    # a file does not count its own module; a language without import rules has none
    assert workspace_names("from toypkg.main import main\nmain()", "toypkg/main.py", modules) == []
    assert workspace_names("import foo.Bar;\nBar.x", "src/Main.java", modules) == []


def test_first_use_skips_imports_definitions_and_name_lists():
    from titans_lsp.retrieval.usages import first_use, import_lines, use_window

    lines = ["from pkg import (", "    Settings,", "    load as get,", ")", "class Settings(Base):",
             "Settings = make()", "print('no')", "    value = Settings.from_env()", "after"]
    assert import_lines(lines) == [True] * 4 + [False] * 5
    assert first_use(lines, ("Settings",), 0, len(lines)) == 7
    assert first_use(lines, ("Settings",), 0, 7) is None
    assert first_use(lines, ("Setting",), 0, len(lines)) is None  # whole words only
    assert first_use(lines, ("get", "Settings"), 0, len(lines)) == 7
    assert use_window(lines, 7) == (0, 9)
    assert use_window(lines, 7, before=2, after=0) == (5, 8)
    with pytest.raises(ValueError, match="outside"):
        use_window(lines, 9)


def test_parse_retrieve():
    from titans_lsp.evals.runner import parse_retrieve, retrieve_label

    assert parse_retrieve("imports, bm25") == "imports,bm25"
    assert parse_retrieve("rg1-dense") == "rg1-dense"
    with pytest.raises(ValueError, match="rg1-bm25"):
        parse_retrieve("rg1-tfidf")
    assert retrieve_label("concat", "imports,bm25") == "concat-imports+bm25"
    assert retrieve_label("none", None) == "none"


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_dir):
    from titans_lsp.engine import CompletionEngine

    engine = CompletionEngine.load(str(tiny_llama_dir), device="cpu")
    yield engine
    engine.close()


def sample_at(repo_root: Path, rel: str, prefix: str) -> dict:
    return {"prompt": prefix, "groundtruth": "Settings('0.0.0.0', 1)", "right_context": "",
            "metadata": {"task_id": "toy/0", "repository": repo_root.name, "file": rel,
                         "crossfile_symbol": "Settings", "defined_in": ["toypkg/config.py"]}}


@pytest.mark.parametrize("retriever", ["bm25", "dense", "hybrid", "imports", "imports,bm25", "usages", "usages,bm25",
                                       "rg1-bm25"])
def test_every_retriever_through_the_eval_path(tmp_path, tiny_engine, retriever):
    from titans_lsp.evals.runner import RunSpec, SnippetSource, run_one
    from titans_lsp.modes import Mode

    repo = write_repo(tmp_path / "repos" / "toy")
    source = SnippetSource(retriever, tmp_path / "repos")
    sample = sample_at(repo, "toypkg/main.py", MAIN_PREFIX)
    row = run_one(tiny_engine, sample, RunSpec("concat", Mode.CONCAT, max_seq=512, context_budget=200), source)
    assert row["retriever"] == retriever
    if retriever == "rg1-bm25":  # the reference rows: CrossCodeEval's retrieval and packing
        snippets = source.snippets(sample)
        assert snippets and all(s.filename != "toypkg/main.py" for s in snippets)
        assert row["context"] == crossfile_block(snippets, tiny_engine.tokenizer, 200, packing="reference")
        return
    assert row["context"].startswith(HEADER)
    names = [name for name, _ in fragments(row["context"])]
    assert names and "toypkg/main.py" not in names  # never the file being completed
    if retriever.startswith("imports"):
        assert names[0] == "toypkg/config.py" and "class Settings:" in row["context"]
    if retriever.startswith("usages"):  # the call-site window (its head: 200 tokens cut it before the use)
        assert names[0] == "toypkg/server.py" and "# # filler line 6 about settings and ports" in row["context"]


def test_eval_and_server_build_the_same_block(tmp_path, tiny_engine):
    """The eval's row for a file and cursor carries the block the server's folder state gives an
    editor request there (same index code, same retriever, same packing)."""
    from titans_lsp.engine import CompletionRequest
    from titans_lsp.evals.runner import RunSpec, SnippetSource, run_one
    from titans_lsp.folder import FolderState
    from titans_lsp.modes import Mode

    repo = write_repo(tmp_path / "repos" / "toy")
    for retriever in ("imports,bm25", "bm25", "imports", "usages,bm25"):
        state = FolderState(repo.as_uri(), repo, cache_dir=str(tmp_path / "cache"))
        changed, errors = state.apply_settings({"retriever": retriever, "contextBudget": 160})
        assert not errors
        state.load_index(dense_model=None)
        uri = (repo / "toypkg/main.py").as_uri()
        request = CompletionRequest(prefix=MAIN_PREFIX, path="toypkg/main.py", settings=state.settings, doc_key=uri,
                                    automatic=True, language_id="python")  # as server.py builds it
        server_block = tiny_engine.context_for(request, state.workspace)
        row = run_one(tiny_engine, sample_at(repo, "toypkg/main.py", MAIN_PREFIX),
                      RunSpec("concat", Mode.CONCAT, max_seq=512, context_budget=160), SnippetSource(retriever, repo.parent))
        assert server_block and row["context"] == server_block, retriever


def test_definition_in_block():
    from titans_lsp.evals.definitions import definition_in_block, definition_rate

    block = (HEADER + "# the below code fragment is found in pkg/a.py\n# class Settings(Base):\n#     pass\n\n"
             "# the below code fragment is found in pkg/b.py\n# def load(path):\n# LIMIT: int = 3\n\n")
    assert definition_in_block(block, "Settings", ["pkg/a.py"]) is True
    assert definition_in_block(block, "Settings", ["pkg/b.py"]) is False  # defined in another file than shown
    assert definition_in_block(block, "load", ["pkg/b.py"]) is True
    assert definition_in_block(block, "LIMIT", ["pkg/b.py"]) is True
    assert definition_in_block(block, "Set", ["pkg/a.py"]) is False  # whole names only
    assert definition_in_block(block, None, ["pkg/a.py"]) is None
    assert definition_rate([{"context": block, "crossfile_symbol": "load", "defined_in": ["pkg/b.py"]},
                            {"context": "", "crossfile_symbol": "load", "defined_in": ["pkg/b.py"]},
                            {"context": block}]) == (0.5, 2)
