"""CrossCodeEval metrics against hand-computed cases."""

import pytest

from titans_lsp.evals.metrics import (aggregate, edit_similarity, identifier_f1, identifiers, postprocess, score_sample,
                                      statement_cut, strip_comments)


def test_statement_cut_stops_at_first_parsable_newline():
    assert statement_cut("x = foo(", "a, b)\nprint(1)\n") == "a, b)"
    # the first line alone leaves "call(1," open: the cut waits for the closing line
    assert statement_cut("x = ", "call(1,\n  2)\nz = 3") == "call(1,\n  2)"
    assert statement_cut("def f():\n    return ", "g(1)   \n    y = 2") == "g(1)"


def test_statement_cut_keeps_uncut_text():
    assert statement_cut("x = ", "abc") == "abc"  # no newline at all
    assert statement_cut("x = ", "\nfoo") == "\nfoo"  # a leading newline is never a cut point
    assert statement_cut("x = (", "1,\n2,\n") == "1,\n2,\n"  # never parses: unchanged


def test_comment_stripping_matches_reference_regex():
    assert strip_comments("a = 1  # one\nb = 2 #two") == "a = 1  \nb = 2 "
    assert strip_comments('print("#x")') == 'print("'  # the reference strips inside strings too
    assert postprocess("x = ", "bar(a)  # note\nnext()") == "bar(a)  "


def test_edit_similarity_is_rounded_difflib_ratio():
    assert edit_similarity("abcd", "abce") == 75  # 2*3/8
    assert edit_similarity("foo(a)", "foo(b)") == 83  # 2*5/12 = 0.8333
    assert edit_similarity("  same ", "same") == 100  # both sides stripped
    assert edit_similarity("", "abc") == 0


def test_identifiers_drop_strings_and_keywords():
    assert identifiers('x = foo("bar baz", y)') == ["x", "foo", "y"]
    assert identifiers("return None if a else b2") == ["a", "b2"]
    assert identifiers("3abc + _x") == ["_x"]  # \w+ tokens must start like an identifier


def test_identifier_f1_on_sets():
    assert identifier_f1(["a", "b", "c"], ["a", "b", "d"]) == pytest.approx(4 / 6)
    assert identifier_f1(["a", "a"], ["a"]) == 1.0
    assert identifier_f1([], []) == 0.0
    assert identifier_f1(["a"], ["b"]) == 0.0


def test_score_sample_and_aggregate():
    exact = score_sample("y = ", "Foo(a)  # build it\nz = 1", "Foo(a)")
    assert (exact.prediction, exact.em, exact.es, exact.id_em, exact.id_f1) == ("Foo(a)  ", 1, 100, 1, 1.0)
    miss = score_sample("y = ", "Foo(b)\n", "Foo(a)")
    # lines differ; ES 2*5/12 -> 83; ids [Foo, b] vs [Foo, a]: not equal, F1 = 2/4
    assert (miss.em, miss.es, miss.id_em, miss.id_f1) == (0, 83, 0, 0.5)
    summary = aggregate([exact, miss])
    assert summary == {"em": 50.0, "es": 91.5, "id_em": 50.0, "id_f1": 75.0, "n": 2}


def test_em_ignores_blank_lines_and_indentation():
    multi = score_sample("x = f(", "1,\n\n    2)\n", "1,\n2)")
    assert multi.em == 1


# ---- per-language rules ---------------------------------------------------------------------------------
from titans_lsp.evals.metrics import bracket_statement, metric_language  # noqa: E402
from titans_lsp.retrieval.languages import PYTHON, TYPESCRIPT, by_name  # noqa: E402


def test_metric_language_comes_from_the_file_and_defaults_to_python():
    assert metric_language("src/a.ts") is TYPESCRIPT and metric_language("Foo.java").name == "java"
    assert metric_language("a.py") is PYTHON and metric_language("") is PYTHON and metric_language("notes.md") is PYTHON


def test_bracket_statement_cut_as_the_reference():
    assert bracket_statement("foo(a, b);\nbar();") == "foo(a, b);"
    assert bracket_statement("if (x) {\n  y();\n}") == "if (x) {"
    assert bracket_statement("a + b") == "a + b"
    assert bracket_statement("}\nfoo();") == "}\nfoo();"  # the reference treats index 0 as 'not found'
    assert statement_cut("const x = ", "make();\nother();", TYPESCRIPT) == "make();"


def test_typescript_comments_keywords_and_scores():
    assert strip_comments("a(); // call\nb(); # kept", TYPESCRIPT) == "a(); \nb(); # kept"
    assert strip_comments("x = a // b\n", PYTHON) == "x = a // b\n"  # integer division stays in Python
    assert identifiers("const total = await sum(items) as number; return this.total", TYPESCRIPT) == \
        ["total", "await", "sum", "items", "as", "number", "total"]
    assert identifiers("public static void main(String[] args) { int n = 0; }", by_name("java")) == \
        ["main", "String", "args", "n"]
    score = score_sample("const c = ", "new Cart(items); // make\nfoo();", "new Cart(items);", TYPESCRIPT)
    assert (score.prediction, score.em, score.id_em) == ("new Cart(items);", 1, 1)
    # the same text scored as Python keeps `new`-less identifiers and no statement cut on ';'
    assert score_sample("c = ", "Cart(items)\nfoo()", "Cart(items)").em == 1
