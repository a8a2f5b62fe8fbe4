"""Cleaning raw continuations into editor insertions."""

import pytest

from titans_lsp.postprocess import clean_completion, cut_unbalanced, drop_suffix_overlap, make_stop, wants_block


def test_single_line_is_cut_at_newline_and_trailing_space():
    assert clean_completion("json.load(f)  \n\nprint(x)", "    return ", "\n") == "json.load(f)"


def test_text_after_cursor_is_not_repeated():
    assert clean_completion("a, b)", "foo(", ")\n") == "a, b"
    assert clean_completion("x):", "def f(", "):\n") == "x"


def test_unmatched_closer_is_cut():
    assert cut_unbalanced("print(len(", "items)) + 1)") == "items)) + 1"
    assert cut_unbalanced("x = ", "[1, 2]]") == "[1, 2]"


def test_block_mode_after_colon():
    prefix = "def add(a, b):\n    "
    assert wants_block(prefix, "auto")
    assert not wants_block("x = ", "auto")
    assert not wants_block(prefix, "never")
    raw = "total = a + b\n    return total\n\nprint(add(1, 2))\n"
    assert clean_completion(raw, prefix, "\n", "auto") == "total = a + b\n    return total"


def test_line_stop_predicate():
    stop = make_stop("x = ", "auto")
    assert not stop("foo(")
    assert stop("foo()\n")
    # On an empty line a leading newline does not end the line.
    stop_empty = make_stop("import os\n", "never")
    assert not stop_empty("\n")
    assert stop_empty("\nimport sys\n")


def test_block_stop_predicate_on_dedent():
    stop = make_stop("def f():\n    ", "auto")
    assert not stop("x = 1\n    y = 2\n")
    assert stop("x = 1\nprint(x)\n")


def test_partial_overlap_with_closers():
    assert drop_suffix_overlap("value)", "):") == "value"


# ---- brace languages (TypeScript, JavaScript, Java, Go, Rust, C#, ...) --------------------------------
from titans_lsp.retrieval.languages import PYTHON, TYPESCRIPT, by_name  # noqa: E402

GO = by_name("go")


@pytest.mark.parametrize("raw, prefix, suffix, want", [
    # the editor already closed the bracket: the completion never closes it again
    ("a, b);\nfoo()", "const x = foo(", ");\n", "a, b"),
    ("a, b);", "const x = foo(", ")", "a, b"),
    ("x), y));", "f(bar(", "))", "x"),
    ("1, 2];", "const xs = [", "];", "1, 2"),
    ("b: 2 };", "const o = { a: 1, ", " };", "b: 2"),
    # no closer after the cursor: the statement ends at its first top-level semicolon
    ("a, b); const y = 2;", "const x = foo(", "", "a, b);"),
    ("i < n; i++) {", "for (let i = 0; ", "", "i < n; i++) {"),
    ("'a;b'); z();", "log(", "", "'a;b');"),
    ("x) + 1)", "print(len(", "", "x) + 1)"),
    ("items)) + 1)", "print(len(", "", "items)) + 1"),  # a closer with no opener is cut
])
def test_brace_line_completions(raw, prefix, suffix, want):
    assert clean_completion(raw, prefix, suffix, "auto", TYPESCRIPT) == want


def test_brace_block_after_an_opening_brace():
    prefix = "function add(a: number, b: number) {\n  "
    assert wants_block(prefix, "auto", TYPESCRIPT) and not wants_block(prefix, "auto", PYTHON)
    assert not wants_block("def f():\n    ", "auto", TYPESCRIPT) and wants_block("def f():\n    ", "auto", PYTHON)
    raw = "const total = a + b;\n  return total;\n}\n\nexport function sub() {"
    # the editor inserted the closing brace: it is not repeated
    assert clean_completion(raw, prefix, "\n}\n", "auto", TYPESCRIPT) == "const total = a + b;\n  return total;"
    # no closing brace below the cursor yet: the block's own closer comes with it, nothing after
    assert clean_completion(raw, prefix, "\n\nexport const z = 1;\n", "auto", TYPESCRIPT) == \
        "const total = a + b;\n  return total;\n}"
    assert clean_completion("x = 1;\n} else {\n  y();\n}", "if (c) {\n  ", "", "auto", GO) == "x = 1;\n}"


def test_brace_block_stop_predicate():
    stop = make_stop("if (ok) {\n  ", "auto", TYPESCRIPT)
    assert not stop("run();\n  done();\n")
    assert stop("run();\n}\n")


def test_python_and_unknown_languages_keep_the_indent_rules():
    for language in (None, PYTHON, by_name("text")):
        assert clean_completion("a, b)", "foo(", ")\n", "auto", language) == "a, b"
        assert clean_completion("x = 1; y = 2", "", "\n", "never", language) == "x = 1; y = 2"


def test_brace_block_stops_where_it_repeats_the_lines_after_the_cursor():
    prefix = "function f(a: number) {\n  "
    suffix = "\n  return b;\n}\n"
    raw = "const b = a * 2;\n  return b;\n}\n"
    assert clean_completion(raw, prefix, suffix, "always", TYPESCRIPT) == "const b = a * 2;"
