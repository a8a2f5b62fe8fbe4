"""CrossCodeEval metrics, as the reference ``scripts/eval_metric.py`` / ``eval_utils.py`` define them.

Per sample: the raw completion is cut after the first complete statement (Python: the first newline
where the text parses, tree-sitter; TypeScript, JavaScript, Java, C# and the other brace languages:
after the first ``;``, ``{`` or ``}``, as the reference's bracket rule, which leaves a completion
whose first character is one of them uncut), then line comments in the language's syntax (``#``,
``//``) are stripped from prediction and ground truth (the reference strips both ``#`` and ``//``
in every language; here ``//`` is kept in Python, where it is integer division, and ``#`` in
TypeScript, where it names private fields). Then
  EM     stripped non-empty lines of prediction == those of the reference
  ES     fuzzywuzzy ``fuzz.ratio(pred.strip(), ref.strip())``: an integer 0-100 (rounded 100 x difflib ratio)
  ID-EM  the ordered identifier lists are equal
  ID-F1  F1 of the identifier *sets*: 2tp / (2tp + fp + fn), 0 when both are empty
Identifiers: ``\\w+`` tokens matching ``[_a-zA-Z][_a-zA-Z0-9]*`` after removing string
literals, the language's keywords dropped (Python: ``keyword.kwlist``; the others: the registry's
lists, the reserved words CrossCodeEval's reference keeps per language). The language comes from
the sample's file (retrieval/languages.py); Python when it names none.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from titans_lsp.retrieval.languages import PLAIN_TEXT, PYTHON, Language, detect, parser

ES_IMPLEMENTATION = "fuzzywuzzy.fuzz.ratio (integer 0-100, as the CrossCodeEval reference)"

IDENTIFIER_RE = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
WORD_RE = re.compile(r"\w+")
# The reference's string pattern: one double- or single-quoted literal with escapes.
STRING_RE = re.compile(r'"([^"\\]*(\\.[^"\\]*)*)"|\'([^\'\\]*(\\.[^\'\\]*)*)\'')
COMMENT_RE = re.compile(r"#.*")
PY_KEYWORDS = frozenset(keyword.kwlist)


def metric_language(file: str | None) -> Language:
    """The language a sample is scored in: its file's, Python when the file names none (the
    official CrossCodeEval Python files, and every file this project built before languages)."""
    language = detect(file)
    return PYTHON if language is PLAIN_TEXT else language


def _has_error_node(node) -> bool:
    """True if the tree holds an ERROR node (MISSING nodes do not count, as in the reference)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "ERROR":
            return True
        stack.extend(current.children)
    return False


def parses(code: str, language: Language = PYTHON) -> bool:
    return not _has_error_node(parser(language.name).parse(code.encode("utf8")).root_node)


def statement_cut(prompt: str, completion: str, language: Language = PYTHON) -> str:
    """Python: cut ``completion`` at the first newline before which ``prompt + completion`` parses
    without an ERROR node (the text before that newline, right-stripped); uncut otherwise.
    Brace languages: :func:`bracket_statement`. Others: uncut."""
    if language.statement_cut == "bracket":
        return bracket_statement(completion)
    if language.statement_cut != "python":
        return completion
    for i, ch in enumerate(completion):
        if ch == "\n" and i > 0 and parses(prompt + completion[:i], language):
            return completion[:i].rstrip()
    return completion


def bracket_statement(completion: str) -> str:
    """The reference's statement rule for Java, C# and TypeScript: up to and including the first
    ``;``, ``{`` or ``}``; a completion that starts with one of them stays uncut (the reference's
    ``if end_idx`` treats index 0 as not found)."""
    for i, ch in enumerate(completion):
        if ch in ";{}":
            return completion[:i + 1] if i else completion
    return completion


def strip_comments(code: str, language: Language = PYTHON) -> str:
    """The reference's comment removal: everything from the line-comment marker (``#`` in Python,
    ``//`` in brace languages) to the end of the line (even in strings)."""
    if language.comment == "#":
        return COMMENT_RE.sub("", code)
    return re.sub(re.escape(language.comment) + r".*", "", code)


def postprocess(prompt: str, raw: str, language: Language = PYTHON) -> str:
    """The metric-time prediction: statement cut, then comments stripped."""
    return strip_comments(statement_cut(prompt, raw, language), language)


def identifiers(code: str, language: Language = PYTHON) -> list[str]:
    keywords = PY_KEYWORDS if language is PYTHON else language.keywords
    without_strings = STRING_RE.sub("", code)
    return [t for t in WORD_RE.findall(without_strings) if IDENTIFIER_RE.match(t) and t not in keywords]


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


def score_sample(prompt: str, raw: str, groundtruth: str, language: Language = PYTHON) -> SampleScore:
    pred = postprocess(prompt, raw, language)
    ref = strip_comments(groundtruth, language)
    pred_ids, ref_ids = identifiers(pred, language), identifiers(ref, language)
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
