"""An incremental BM25 index with rank-bm25's exact Okapi scoring, fast enough for every keystroke.

Why not bm25s or tantivy: bm25s bakes IDF and length norms into its score matrix at index time, so
one changed file means a full rebuild (seconds at 100k chunks); tantivy keeps deleted documents in
its statistics until a merge and uses Lucene's IDF, so its ranking differs from rank-bm25's
(CrossCodeEval's reference). This index keeps integer statistics (N, document frequencies, total
length) exactly up to date and scores at query time from posting lists with numpy, so an update
costs only the changed documents and the ranking equals ``rank_bm25.BM25Okapi`` over the same corpus.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

K1, B, EPSILON = 1.5, 0.75, 0.25  # rank_bm25.BM25Okapi defaults, as used by CrossCodeEval
SATURATION_CACHE = 8_000_000  # postings whose tf part is kept between queries (about 100 MB)


class IncrementalBM25:
    def __init__(self, k1: float = K1, b: float = B, epsilon: float = EPSILON):
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self.vocab: dict[str, int] = {}
        self.df = np.zeros(0, dtype=np.int64)  # live documents per term
        self.doc_len = np.zeros(0, dtype=np.float64)
        self.alive = np.zeros(0, dtype=bool)
        self.n_docs = 0  # ids handed out (dead ones included)
        self.n_alive = 0
        self.total_len = 0
        # posting lists: frozen numpy arrays plus appended tails, merged when a query needs the term
        self._post_docs: list[np.ndarray] = []
        self._post_tfs: list[np.ndarray] = []
        self._tail: dict[int, tuple[list[int], list[int]]] = {}
        self._doc_terms: dict[int, tuple[np.ndarray, int]] = {}  # live doc -> (term ids, length)
        self._cache: dict = {}  # statistics derived for a given exclusion set, per generation
        self._saturation: dict = {}  # exclusion set -> term id -> (docs, tf part)
        self._cached_postings = 0
        self.generation = 0

    def _grow(self, array: np.ndarray, size: int) -> np.ndarray:
        if size <= len(array):
            return array
        grown = np.zeros(max(size, 2 * len(array), 1024), dtype=array.dtype)
        grown[:len(array)] = array
        return grown

    def _term_id(self, term: str) -> int:
        term_id = self.vocab.get(term)
        if term_id is None:
            term_id = self.vocab[term] = len(self.vocab)
            self._post_docs.append(np.zeros(0, dtype=np.int32))
            self._post_tfs.append(np.zeros(0, dtype=np.float64))
            self.df = self._grow(self.df, term_id + 1)
        return term_id

    def add(self, tokens: list[str]) -> int:
        """Index one document; returns its id (ids are never reused)."""
        doc = self.n_docs
        self.n_docs += 1
        self.doc_len = self._grow(self.doc_len, self.n_docs)
        self.alive = self._grow(self.alive, self.n_docs)
        counts = Counter(tokens)
        term_ids = np.empty(len(counts), dtype=np.int64)
        for i, (term, tf) in enumerate(counts.items()):
            term_id = self._term_id(term)
            term_ids[i] = term_id
            tail = self._tail.get(term_id)
            if tail is None:
                tail = self._tail[term_id] = ([], [])
            tail[0].append(doc)
            tail[1].append(tf)
        self.df[term_ids] += 1
        self.doc_len[doc] = len(tokens)
        self.alive[doc] = True
        self._doc_terms[doc] = (term_ids, len(tokens))
        self.n_alive += 1
        self.total_len += len(tokens)
        self._changed()
        return doc

    def remove(self, doc: int) -> None:
        term_ids, length = self._doc_terms.pop(doc)
        self.df[term_ids] -= 1
        self.alive[doc] = False
        self.n_alive -= 1
        self.total_len -= length
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        if self._cache or self._saturation:
            self.clear_caches()

    def clear_caches(self) -> None:
        """Forget derived statistics (they are recomputed by the next query)."""
        self._cache.clear()
        self._saturation.clear()
        self._cached_postings = 0

    def _postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray]:
        tail = self._tail.pop(term_id, None)
        if tail is not None:
            self._post_docs[term_id] = np.concatenate([self._post_docs[term_id], np.asarray(tail[0], dtype=np.int32)])
            self._post_tfs[term_id] = np.concatenate([self._post_tfs[term_id], np.asarray(tail[1], dtype=np.float64)])
        docs, tfs = self._post_docs[term_id], self._post_tfs[term_id]
        if len(docs) and not self.alive[docs].all() and (~self.alive[docs]).sum() * 4 > len(docs):
            keep = self.alive[docs]  # compact: drop postings of removed documents
            docs, tfs = self._post_docs[term_id], self._post_tfs[term_id] = docs[keep], tfs[keep]
        return docs, tfs

    def docs_with(self, term: str) -> np.ndarray:
        """The live documents that contain ``term`` (a token as :func:`bm25_tokens` gives it)."""
        term_id = self.vocab.get(term)
        if term_id is None:
            return np.zeros(0, dtype=np.int64)
        docs, _ = self._postings(term_id)
        return docs[self.alive[docs]].astype(np.int64)

    def contains(self, term: str, docs: list[int]) -> bool:
        """Whether one of ``docs`` (live documents) contains ``term``: binary searches of its posting
        list (kept in document order) for the range of ``docs``, not a scan."""
        term_id = self.vocab.get(term)
        if term_id is None or not docs:
            return False
        first, last = min(docs), max(docs)
        postings, _ = self._postings(term_id)
        window = postings[np.searchsorted(postings, first, "left"):np.searchsorted(postings, last, "right")]
        if len(docs) == last - first + 1:  # one file's chunks: consecutive ids
            return len(window) > 0
        return bool(np.isin(window, docs).any())

    def freeze(self) -> None:
        """Merge every appended tail (before saving, or after a bulk build)."""
        for term_id in list(self._tail):
            self._postings(term_id)

    def _stats(self, exclude: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(idf per term, length norm per doc, live mask) for the corpus minus ``exclude``.

        Mirrors ``BM25Okapi._calc_idf``: idf = ln(N - n + .5) - ln(n + .5) over terms present in the
        corpus; negative values are floored to epsilon x the mean idf (mean taken before flooring).
        """
        cached = self._cache.get(exclude)
        if cached is not None:
            return cached
        df = self.df[:len(self.vocab)].copy()
        n, total = self.n_alive, self.total_len
        live = self.alive[:self.n_docs].copy()
        for doc in exclude:
            if doc < self.n_docs and live[doc]:
                term_ids, length = self._doc_terms[doc]
                df[term_ids] -= 1
                n -= 1
                total -= length
                live[doc] = False
        idf = np.zeros(len(df), dtype=np.float64)
        if n > 0 and (df > 0).any():
            # idf depends on a term's df only: compute it once per distinct df and sum per df value,
            # which is fast and independent of the vocabulary's order (incremental == rebuild)
            terms_per_df = np.bincount(df[df > 0])
            table = np.log(n - np.arange(len(terms_per_df)) + 0.5) - np.log(np.arange(len(terms_per_df)) + 0.5)
            used = terms_per_df > 0
            mean_idf = math.fsum((table[used] * terms_per_df[used]).tolist()) / int(terms_per_df.sum())
            table[table < 0] = self.epsilon * mean_idf
            table[0] = 0.0
            idf = table[df]
        avgdl = total / n if n > 0 else 1.0
        norm = self.k1 * (1 - self.b + self.b * self.doc_len[:self.n_docs] / avgdl)
        if len(self._cache) > 8:
            self.clear_caches()
        self._cache[exclude] = result = (idf, norm, live)
        return result

    def scores(self, query_tokens: list[str], exclude: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        """BM25 score of every document id for the query, and the mask of documents that count."""
        key = tuple(sorted(exclude))
        idf, norm, live = self._stats(key)
        saturation = self._saturation.setdefault(key, {})  # per-term tf parts, valid for these statistics
        scores = np.zeros(self.n_docs, dtype=np.float64)
        for term, count in Counter(query_tokens).items():  # first-occurrence order: deterministic
            term_id = self.vocab.get(term)
            if term_id is None or idf[term_id] == 0.0:
                continue
            part = saturation.get(term_id)
            if part is None:
                docs, tf = self._postings(term_id)
                values = norm[docs]
                values += tf
                np.divide(tf * (self.k1 + 1), values, out=values)
                part = (docs, values)
                if len(docs) >= 1000 and self._cached_postings + len(docs) <= SATURATION_CACHE:
                    saturation[term_id] = part  # common terms: reused while typing in the same file
                    self._cached_postings += len(docs)
            scores[part[0]] += (count * idf[term_id]) * part[1]
        return scores, live

    # persistence: plain arrays, no per-document Python objects
    def state(self) -> dict:
        self.freeze()
        lengths = np.array([len(d) for d in self._post_docs], dtype=np.int64)
        live_docs = np.array(sorted(self._doc_terms), dtype=np.int64)
        term_lengths = np.array([len(self._doc_terms[d][0]) for d in live_docs], dtype=np.int64)
        return {
            "params": (self.k1, self.b, self.epsilon), "vocab": list(self.vocab),
            "df": self.df[:len(self.vocab)], "doc_len": self.doc_len[:self.n_docs], "alive": self.alive[:self.n_docs],
            "n_docs": self.n_docs, "n_alive": self.n_alive, "total_len": self.total_len,
            "post_lengths": lengths,
            "post_docs": np.concatenate(self._post_docs) if self._post_docs else np.zeros(0, np.int32),
            "post_tfs": np.concatenate(self._post_tfs) if self._post_tfs else np.zeros(0, np.float64),
            "live_docs": live_docs, "term_lengths": term_lengths,
            "doc_terms": np.concatenate([self._doc_terms[d][0] for d in live_docs]) if len(live_docs) else np.zeros(0, np.int64),
        }

    @classmethod
    def from_state(cls, state: dict) -> "IncrementalBM25":
        """The index :meth:`state` saved; ValueError when its arrays do not fit together (a query on
        them would fail, or score nothing)."""
        check_state(state)
        self = cls(*state["params"])
        self.vocab = {term: i for i, term in enumerate(state["vocab"])}
        self.df = np.array(state["df"], dtype=np.int64)
        self.doc_len = np.array(state["doc_len"], dtype=np.float64)
        self.alive = np.array(state["alive"], dtype=bool)
        self.n_docs, self.n_alive, self.total_len = int(state["n_docs"]), int(state["n_alive"]), int(state["total_len"])
        bounds = np.cumsum(state["post_lengths"])[:-1] if len(state["post_lengths"]) else []
        self._post_docs = np.split(state["post_docs"], bounds) if len(self.vocab) else []
        self._post_tfs = np.split(state["post_tfs"], bounds) if len(self.vocab) else []
        term_bounds = np.cumsum(state["term_lengths"])[:-1] if len(state["term_lengths"]) else []
        per_doc = np.split(state["doc_terms"], term_bounds) if len(state["live_docs"]) else []
        self._doc_terms = {int(d): (terms, int(self.doc_len[d])) for d, terms in zip(state["live_docs"], per_doc)}
        if len(self.vocab) != len(self._post_docs) or len(self.df) != len(self.vocab) or self.n_alive != len(self._doc_terms):
            raise ValueError("inconsistent BM25 state")
        return self


def check_state(state: dict) -> None:
    """Every saved array's length and range against the counts, so a state that passes is safe to
    query: ids index what they point into, lengths add up, frequencies are finite and not negative."""
    n_docs, n_terms = int(state["n_docs"]), len(state["vocab"])
    docs, tfs, terms, live = state["post_docs"], state["post_tfs"], state["doc_terms"], state["live_docs"]
    good = {
        "df": len(state["df"]) == n_terms and _counts(state["df"]),
        "doc_len": len(state["doc_len"]) == n_docs and _counts(state["doc_len"]),
        "alive": len(state["alive"]) == n_docs and int(np.count_nonzero(state["alive"])) == int(state["n_alive"]),
        "post_lengths": len(state["post_lengths"]) == n_terms and _counts(state["post_lengths"], len(docs)),
        "post_docs": _ids_below(docs, n_docs),
        "post_tfs": len(tfs) == len(docs) and _counts(tfs) and bool(np.all(tfs > 0)),
        "live_docs": _ids_below(live, n_docs),
        "term_lengths": len(state["term_lengths"]) == len(live) and _counts(state["term_lengths"], len(terms)),
        "doc_terms": _ids_below(terms, n_terms),
    }
    bad = [name for name, ok in good.items() if not ok]
    if bad:
        raise ValueError(f"inconsistent BM25 state: {', '.join(bad)}")


def _ids_below(values: np.ndarray, high: int) -> bool:
    """Every value indexes an array of ``high`` items."""
    return not len(values) or bool(values.min() >= 0 and values.max() < high)


def _counts(values: np.ndarray, total: int | None = None) -> bool:
    """Finite and not negative (and adding up to ``total`` when given)."""
    return bool(np.all(np.isfinite(values) & (values >= 0))) and (total is None or int(values.sum()) == total)
