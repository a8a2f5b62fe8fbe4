"""CrossCodeEval's published rg1 retrieval, faithfully, for building eval files and for eval --retrieve.

Recipe (amazon-science/cceval, prompt_builder/augment_with_cfc.py): the repository's other files,
nearest first by directory distance (at most 1000 files); empty lines dropped; 10-line
non-overlapping chunks (chunks without a word token get no id); the first 1000 chunks are ranked
against the prompt's last 10 non-empty lines with rank-bm25's BM25Okapi (or cosine similarity of a
dense encoder); ties go to the larger ``file|n`` id (the reference sorts (score, id) pairs in
reverse); each hit is replaced by the chunk that follows it in its file; duplicates dropped; top 5.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .chunking import bm25_tokens, last_nonempty_lines, rg1_chunks
from .workspace import iter_workspace_files

MAX_FILES = 1000
MAX_CHUNKS_TO_RANK = 1000
MAX_DISTANCE = 100
TOP_K = 5


def file_distance(a: str, b: str) -> int:
    """Directory hops between two relative paths: separators left after their common path."""
    pa, pb = a.split("/"), b.split("/")
    common = 0
    while common < min(len(pa), len(pb)) and pa[common] == pb[common]:
        common += 1
    return (len(pa) - common - 1) + (len(pb) - common - 1)


def repo_python_files(root: str | Path, max_bytes: int = 1_000_000) -> dict[str, str]:
    """A repository's Python files (rel -> text), by the workspace rules (no secrets, no ignored files)."""
    return {f.rel: f.text for f in iter_workspace_files(root, max_bytes, extensions={".py"})}


def candidate_chunks(current_file: str, repo_files: dict[str, str], max_files: int = MAX_FILES,
                     max_distance: int = MAX_DISTANCE) -> tuple[list[str], list[str]]:
    """(chunk texts, ``file|n`` ids) of the other files, nearest files first."""
    others = sorted((file_distance(rel, current_file), rel) for rel in repo_files if rel != current_file)
    texts, ids = [], []
    for rel in [rel for distance, rel in others if distance <= max_distance][:max_files]:
        for chunk in rg1_chunks(repo_files[rel]):
            texts.append(chunk.text)
            ids.append(f"{rel}|{chunk.index}")
    return texts, ids


@lru_cache(maxsize=1)
def default_encoder():
    """The default dense encoder, loaded once per process (pass ``encoder=`` for another model)."""
    from .dense import DenseStore

    return DenseStore("default")


def rank_scores(query: str, docs: list[str], ranker: str = "bm25", encoder=None) -> list[float]:
    if ranker == "bm25":
        from rank_bm25 import BM25Okapi

        return [float(s) for s in BM25Okapi([bm25_tokens(d) for d in docs]).get_scores(bm25_tokens(query))]
    if ranker in ("dense", "cosine_sim"):
        if encoder is None:
            encoder = default_encoder()
        vectors = encoder.encode([query.strip()] + [d.strip() for d in docs])
        return [float(x) for x in vectors[1:] @ vectors[0]]
    raise ValueError(f"unknown ranker {ranker!r} (bm25 or dense)")


def rg1_retrieve(prompt: str, current_file: str, repo_files: dict[str, str], ranker: str = "bm25", k: int = TOP_K,
                 encoder=None, max_chunks: int = MAX_CHUNKS_TO_RANK, max_files: int = MAX_FILES) -> list[dict]:
    """CrossCodeEval ``crossfile_context.list`` for one prompt: dicts with retrieved_chunk, filename, score."""
    texts, ids = candidate_chunks(current_file, repo_files, max_files)
    if not texts:
        return []
    ranked_n = min(max_chunks, len(texts))
    scores = rank_scores(last_nonempty_lines(prompt), texts[:ranked_n], ranker, encoder)
    order = sorted(zip(scores, ids[:ranked_n]), reverse=True)
    position = {chunk_id: i for i, chunk_id in enumerate(ids)}
    out: list[dict] = []
    chosen: list[str] = []
    for score, chunk_id in order:
        rel, n = chunk_id.rsplit("|", 1)
        following = position.get(f"{rel}|{int(n) + 1}", position[chunk_id])
        text = texts[following]
        if text in chosen:
            continue
        chosen.append(text)
        out.append({"retrieved_chunk": text, "filename": rel, "score": score})
        if len(out) == k:
            break
    return out


def crossfile_text(items: list[dict], comment: str = "#") -> str:
    """The ``crossfile_context.text`` field as the reference files write it."""
    text = f"{comment} Here are some relevant code fragments from other files of the repo:\n\n"
    for item in items:
        text += f"{comment} the below code fragment can be found in:\n{comment} {item['filename']}\n"
        text += "\n".join(f"{comment} {line}" for line in item["retrieved_chunk"].strip("\n").splitlines()) + "\n\n"
    return text
