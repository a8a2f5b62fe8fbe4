"""Cleaning raw continuations into editor insertions."""

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
