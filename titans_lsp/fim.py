"""Fill-in-the-middle: which format a model was trained with, and the prompt laid out in it.

A FIM model completes the hole between the text before the cursor and the text after it, so
completions inside existing code see what follows. The format is detected from the tokenizer's
special tokens (never from the model's name):

| family    | markers (prefix, suffix, middle)                  | repository level            |
| --------- | ------------------------------------------------- | --------------------------- |
| qwen      | ``<|fim_prefix|>`` ``<|fim_suffix|>`` ``<|fim_middle|>`` | ``<|repo_name|>`` ``<|file_sep|>`` |
| starcoder | ``<fim_prefix>`` ``<fim_suffix>`` ``<fim_middle>``       | ``<repo_name>`` ``<file_sep>``     |
| deepseek  | ``<｜fim▁begin｜>`` ``<｜fim▁hole｜>`` ``<｜fim▁end｜>``   | -                           |
| codellama | ``▁<PRE>`` ``▁<SUF>`` ``▁<MID>``                         | -                           |

Layout (prefix-suffix-middle order, which all four were trained on), in token ids so every backend
sees the same prompt:

- repository level (the model has repo/file-separator tokens and there are cross-file snippets):
  ``<repo_name>{repo}\\n<file_sep>{path}\\n{text}\\n... <file_sep>{this file}\\n<P>{prefix}<S>{suffix}<M>``;
- otherwise: ``<P>{cross-file comment block}{prefix}<S>{suffix}<M>``.

The suffix gets at most a quarter of the window (its first lines are what matters); the prefix the
rest, laid out by titans_lsp.layout as without FIM.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FIM_CHOICES = ("auto", "on", "off")
SUFFIX_SHARE = 4  # the suffix gets at most 1/SUFFIX_SHARE of the room left for prefix + suffix


@dataclass(frozen=True)
class FimFormat:
    """One family's markers (token strings as they appear in the tokenizer's vocabulary)."""

    family: str
    prefix: str
    suffix: str
    middle: str
    end: tuple[str, ...] = ()  # tokens that end the middle besides EOS (those in the vocabulary are used)
    repo_name: str | None = None
    file_sep: str | None = None


FORMATS: tuple[FimFormat, ...] = (
    FimFormat("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
              end=("<|fim_pad|>", "<|endoftext|>", "<|file_sep|>", "<|repo_name|>"),
              repo_name="<|repo_name|>", file_sep="<|file_sep|>"),
    FimFormat("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
              end=("<fim_pad>", "<|endoftext|>", "<file_sep>", "<repo_name>"),
              repo_name="<repo_name>", file_sep="<file_sep>"),
    FimFormat("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
              end=("<｜end▁of▁sentence｜>", "<|EOT|>")),
    FimFormat("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", end=("▁<EOT>",)),
)


@dataclass(frozen=True)
class FimTokens:
    """A detected format with its token ids in one tokenizer."""

    format: FimFormat
    prefix: int
    suffix: int
    middle: int
    stop_ids: tuple[int, ...]
    repo_name: int | None
    file_sep: int | None

    @property
    def family(self) -> str:
        return self.format.family

    @property
    def repo_level(self) -> bool:
        return self.repo_name is not None and self.file_sep is not None


def _token_id(vocab: dict[str, int], token: str | None) -> int | None:
    return None if token is None else vocab.get(token)


def detect_fim(tokenizer) -> FimTokens | None:
    """The FIM format the tokenizer's vocabulary carries (all three markers present), else None."""
    vocab = tokenizer.get_vocab()
    for fmt in FORMATS:
        ids = [_token_id(vocab, t) for t in (fmt.prefix, fmt.suffix, fmt.middle)]
        if None in ids:
            continue
        stops = tuple(i for i in (_token_id(vocab, t) for t in fmt.end) if i is not None)
        return FimTokens(fmt, ids[0], ids[1], ids[2], stops, _token_id(vocab, fmt.repo_name),
                         _token_id(vocab, fmt.file_sep))
    return None


def use_fim(setting: str, tokens: FimTokens | None, model_name: str) -> bool:
    """Whether a request uses FIM: ``auto`` when the model has a format, ``on`` always (an error
    naming the fix when it has none), ``off`` never."""
    if setting == "off":
        return False
    if setting == "on" and tokens is None:
        raise ValueError(f"titansLsp.fim is 'on' but the model {model_name} has no fill-in-the-middle tokens "
                         "(qwen, starcoder, deepseek or codellama markers): set titansLsp.fim to 'auto' or 'off', "
                         "or use a FIM-trained model")
    return tokens is not None


def repo_block(tokens: FimTokens, snippets: Iterable, tokenizer, budget_tokens: int, repo: str = "") -> str:
    """The repository-level cross-file block: ``<repo_name>{repo}\\n`` then ``<file_sep>{path}\\n{text}\\n``
    per snippet in rank order while it fits ``budget_tokens`` (stopping at the first that does not,
    as the comment block does); "" when none fits."""
    from titans_lsp.retrieval.prompt import _fields, count_tokens

    fmt = tokens.format
    header = f"{fmt.repo_name}{repo}\n"
    used = count_tokens(tokenizer, header)
    parts: list[str] = []
    for snippet in snippets:
        filename, text = _fields(snippet)
        piece = f"{fmt.file_sep}{filename}\n{text.rstrip()}\n"
        cost = count_tokens(tokenizer, piece)
        if used + cost > budget_tokens:
            break
        parts.append(piece)
        used += cost
    while parts and count_tokens(tokenizer, header + "".join(parts)) > budget_tokens:
        parts.pop()
    return header + "".join(parts) if parts else ""


def file_header_ids(tokens: FimTokens, tokenizer, path: str | None) -> list[int]:
    """``<file_sep>{path}\\n``: the current file's header after a repository-level block."""
    return [tokens.file_sep] + tokenizer(f"{path or 'file.py'}\n", add_special_tokens=False).input_ids


def suffix_ids(tokenizer, suffix: str, room: int) -> list[int]:
    """The suffix's first tokens within ``room``, cut at a line end when it does not fit whole."""
    if not suffix or room <= 0:
        return []
    span = room * 8  # tokenize only the suffix's start (a 10 MB file costs what a small one does)
    while span < len(suffix):
        ids = tokenizer(suffix[:span], add_special_tokens=False).input_ids
        if len(ids) > room + 1:  # enough tokens: the window's cut end cannot reach the kept ones
            break
        span *= 4
    else:
        ids = tokenizer(suffix, add_special_tokens=False).input_ids
    if len(ids) <= room:
        return ids
    text = tokenizer.decode(ids[:room])
    cut = text.rfind("\n")
    if cut > 0:
        ids = tokenizer(text[:cut + 1], add_special_tokens=False).input_ids
    return ids[:room]


def layout_ids(tokens: FimTokens, lead: list[int], block_ids: list[int], header_ids: list[int],
               prefix: list[int], suffix: list[int]) -> list[int]:
    """The prompt in prefix-suffix-middle order (see the module docstring)."""
    if header_ids:  # repository level: the files come first, then this file's FIM part
        return lead + block_ids + header_ids + [tokens.prefix] + prefix + [tokens.suffix] + suffix + [tokens.middle]
    return lead + [tokens.prefix] + block_ids + prefix + [tokens.suffix] + suffix + [tokens.middle]
