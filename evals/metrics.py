"""CrossCodeEval metrics, as the reference ``scripts/eval_metric.py`` / ``eval_utils.py`` define them.

Per sample: the raw completion is cut after the first complete statement (tree-sitter), then
``#`` comments are stripped from prediction and ground truth. Then
  EM     stripped non-empty lines of prediction == those of the reference
  ES     fuzzywuzzy ``fuzz.ratio(pred.strip(), ref.strip())``: an integer 0-100 (rounded 100 x difflib ratio)
  ID-EM  the ordered identifier lists are equal
  ID-F1  F1 of the identifier *sets*: 2tp / (2tp + fp + fn), 0 when both are empty
Identifiers: ``\\w+`` tokens matching ``[_a-zA-Z][_a-zA-Z0-9]*`` after removing string
literals, Python keywords (``keyword.kwlist``) dropped.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from functools import lru_cache

ES_IMPLEMENTATION = "fuzzywuzzy.fuzz.ratio (integer 0-100, as the CrossCodeEval reference)"

IDENTIFIER_RE = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
WORD_RE = re.compile(r"\w+")
# The reference's string pattern: one double- or single-quoted literal with escapes.
STRING_RE = re.compile(r'"([^"\\]*(\\.[^"\\]*)*)"|\'([^\'\\]*(\\.[^\'\\]*)*)\'')
COMMENT_RE = re.compile(r"#.*")
PY_KEYWORDS = frozenset(keyword.kwlist)


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter_python
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_python.language()))


def _has_error_node(node) -> bool:
    """True if the tree holds an ERROR node (MISSING nodes do not count, as in the reference)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "ERROR":
            return True
        stack.extend(current.children)
    return False


def parses(code: str) -> bool:
    return not _has_error_node(_parser().parse(code.encode("utf8")).root_node)


def statement_cut(prompt: str, completion: str) -> str:
    """Cut ``completion`` at the first newline before which ``prompt + completion`` parses
    without an ERROR node (the text before that newline, right-stripped); uncut otherwise."""
    for i, ch in enumerate(completion):
        if ch == "\n" and i > 0 and parses(prompt + completion[:i]):
            return completion[:i].rstrip()
    return completion


def strip_comments(code: str) -> str:
    """The reference's comment removal: everything from ``#`` to the end of the line (even in strings)."""
    return COMMENT_RE.sub("", code)


def postprocess(prompt: str, raw: str) -> str:
    """The metric-time prediction: statement cut, then comments stripped."""
    return strip_comments(statement_cut(prompt, raw))


def identifiers(code: str) -> list[str]:
    without_strings = STRING_RE.sub("", code)
    return [t for t in WORD_RE.findall(without_strings) if IDENTIFIER_RE.match(t) and t not in PY_KEYWORDS]


def _lines(code: str) -> list[str]:
    return [line.strip() for line in code.split("\n") if line.strip()]


def edit_similarity(pred: str, ref: str) -> int:
    import warnings

    with warnings.catch_warnings():  # without python-Levenshtein it uses difflib: exactly the reference's numbers
        warnings.simplefilter("ignore")
        from fuzzywuzzy import fuzz

    return fuzz.ratio(pred.strip(), ref.strip())


def identifier_f1(pred_ids: list[str], ref_ids: list[str]) -> float:
    pred, ref = set(pred_ids), set(ref_ids)
    tp = len(pred & ref)
    fp, fn = len(pred - ref), len(ref - pred)
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


@dataclass(frozen=True)
class SampleScore:
    prediction: str  # post-processed (statement cut, comments stripped)
    reference: str  # comments stripped
    em: int  # 0/1
    es: int  # 0..100
    id_em: int  # 0/1
    id_f1: float  # 0..1


def score_sample(prompt: str, raw: str, groundtruth: str) -> SampleScore:
    pred = postprocess(prompt, raw)
    ref = strip_comments(groundtruth)
    pred_ids, ref_ids = identifiers(pred), identifiers(ref)
    return SampleScore(prediction=pred, reference=ref, em=int(_lines(pred) == _lines(ref)),
                       es=edit_similarity(pred, ref), id_em=int(pred_ids == ref_ids),
                       id_f1=identifier_f1(pred_ids, ref_ids))


def aggregate(scores: list[SampleScore]) -> dict[str, float]:
    """Means in percent, as the study's tables report them."""
    n = len(scores)
    if not n:
        return {"em": 0.0, "es": 0.0, "id_em": 0.0, "id_f1": 0.0, "n": 0}
    return {"em": 100 * sum(s.em for s in scores) / n, "es": sum(s.es for s in scores) / n,
            "id_em": 100 * sum(s.id_em for s in scores) / n, "id_f1": 100 * sum(s.id_f1 for s in scores) / n, "n": n}
