"""The per-workspace index: rg1 chunks under BM25 (and optionally a dense encoder), kept current
file by file, persisted on disk, queried on every keystroke.

Retrieval follows CrossCodeEval's rg1 recipe: the query is the prefix's last 10 non-empty lines,
chunks of the current file never count (neither in the results nor in the BM25 statistics, so the
ranking equals rank-bm25 over the other files' chunks), and each hit is replaced by the chunk that
follows it in its file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .bm25 import IncrementalBM25
from .chunking import Chunk, bm25_tokens, last_nonempty_lines, rg1_chunks
from .imports import DefinitionLookup, ModuleMap, import_context, workspace_names
from .usages import first_use, import_lines, use_window
from .workspace import DEFAULT_MAX_BYTES, WorkspaceFilter

log = logging.getLogger(__name__)

INDEX_SCHEMA = 2  # index.json + index.npz (schema 1 was a pickle, never read: it could run code)
BM25_ARRAYS = ("df", "doc_len", "alive", "post_lengths", "post_docs", "post_tfs", "live_docs", "term_lengths",
               "doc_terms")
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
RETRIEVERS = ("bm25", "dense", "hybrid", "imports", "usages")  # the names editors and the eval select
USAGE_POOL = 400  # chunks holding an imported name that ``usages`` looks at, best BM25 match first
RANKED_RETRIEVERS = ("bm25", "dense")  # ranked over every chunk; several in one list are fused by rank
DENSE_RETRIEVERS = ("dense", "hybrid")  # retrievers that need the dense encoder's vectors


@dataclass(frozen=True)
class Snippet:
    """A retrieved cross-file chunk (also built directly by the eval from CrossCodeEval files)."""

    filename: str
    text: str
    score: float = 0.0
    retriever: str = ""
    start_line: int = -1


@dataclass
class FileEntry:
    mtime_ns: int
    size: int
    chunks: list[Chunk]
    doc_ids: list[int]
    clean_digest: str = ""  # of the indexed (cleaned) text: a save or touch that leaves it alone re-indexes nothing


def clean_digest(text: str) -> str:
    """The digest :class:`FileEntry` keeps of the text it indexed."""
    return hashlib.blake2b(text.encode("utf-8", errors="surrogatepass"), digest_size=16).hexdigest()


class WorkspaceIndex:
    def __init__(self, root: str | Path, state_dir: str | Path | None = None, dense_model: str | None = "default",
                 max_bytes: int = DEFAULT_MAX_BYTES, dense_sync_limit: int | None = None):
        """``dense_sync_limit``: how many not-yet-encoded chunks a dense query may encode before it
        answers (None: all, exact - the eval; 0 or a small number for the server, which then runs
        ``build_dense`` in a background thread and gets dense results over what is encoded so far)."""
        self.root = Path(root).resolve()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.dense_model = dense_model
        self.dense_sync_limit = dense_sync_limit
        self.rules = WorkspaceFilter(self.root, max_bytes)
        self.bm25 = IncrementalBM25()
        self.entries: dict[str, FileEntry] = {}
        self.doc_file: list[str | None] = []  # doc id -> rel (None once removed)
        self.doc_chunk: list[Chunk | None] = []
        self._dense = None
        self._doc_row = np.zeros(0, dtype=np.int64)  # doc id -> row of the dense matrix (-1: not encoded)
        self._modules: ModuleMap | None = None
        self._lookup: DefinitionLookup | None = None
        self.lock = threading.RLock()  # the server updates from a watcher thread while completing

    # ---- building and updating
    def build(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Index every workspace file from scratch."""
        with self.lock:
            self._reset()
            rels = list(self.rules.iter_rel_paths())
            for done, rel in enumerate(rels, 1):
                loaded = self.rules.load(self.root / rel, check_ignored=False)
                if loaded is not None:
                    self._add(rel, loaded.text, self.root / rel)
                if progress is not None and (done % 50 == 0 or done == len(rels)):
                    progress(done, len(rels))
            self.bm25.freeze()

    def _reset(self) -> None:
        self.bm25 = IncrementalBM25()
        self.entries.clear()
        self.doc_file.clear()
        self.doc_chunk.clear()
        self._doc_row = np.zeros(0, dtype=np.int64)
        self._modules = self._lookup = None

    def _add(self, rel: str, text: str, path: Path | None) -> None:
        stat = _stat(path)
        chunks = rg1_chunks(text)
        doc_ids = []
        for chunk in chunks:
            doc_ids.append(self.bm25.add(bm25_tokens(chunk.text)))
            self.doc_file.append(rel)
            self.doc_chunk.append(chunk)
        if self._dense is not None:  # new chunks whose text is encoded already need no encoding
            self._grow_rows()
            self._map_rows(doc_ids)
        self.entries[rel] = FileEntry(stat.st_mtime_ns if stat else 0, stat.st_size if stat else -1, chunks, doc_ids,
                                      clean_digest(text))

    def _same_text(self, rel: str, text: str, path: Path | None) -> bool:
        """Whether ``rel`` is indexed with exactly ``text``; if so its entry takes the file's new
        (mtime, size) and nothing else changes (no BM25 update, so no query cache is dropped)."""
        entry = self.entries.get(rel)
        if entry is None or not entry.clean_digest or entry.clean_digest != clean_digest(text):
            return False
        stat = _stat(path)
        entry.mtime_ns, entry.size = (stat.st_mtime_ns, stat.st_size) if stat else (0, -1)
        return True

    def _remove(self, rel: str) -> None:
        entry = self.entries.pop(rel, None)
        if entry is None:
            return
        for doc in entry.doc_ids:
            self.bm25.remove(doc)
            self.doc_file[doc] = None
            self.doc_chunk[doc] = None

    def _rel(self, path: str | Path) -> str | None:
        path = Path(path)
        if not path.is_absolute():
            return path.as_posix()
        try:
            return path.absolute().relative_to(self.root).as_posix()
        except ValueError:
            try:
                return path.resolve().relative_to(self.root).as_posix()
            except ValueError:
                return None

    def update_file(self, path: str | Path, text: str | None = None) -> bool:
        """Re-index one file (from ``text`` when given, e.g. an unsaved editor buffer, else from disk);
        a file the rules exclude or that is gone is removed. Returns whether the file is indexed."""
        rel = self._rel(path)
        if rel is None:
            return False
        with self.lock:
            if rel.rsplit("/", 1)[-1] == ".gitignore":
                old, self.rules = self.rules, WorkspaceFilter(self.root, self.rules.max_bytes)
                self.rules.redacted, self.rules.skipped_secrets = old.redacted, old.skipped_secrets  # still true
                self.sync()
                return False
            loaded = self.rules.load(self.root / rel)
            new_file = rel not in self.entries
            cleaned = None if loaded is None else loaded.text if text is None else self.rules.clean(rel, text)
            if loaded is None or cleaned is None:
                self._remove(rel)
                self._forget_modules()
                return False
            if self._same_text(rel, cleaned, self.root / rel):
                return True
            self._remove(rel)
            self._add(rel, cleaned, self.root / rel)
            if new_file:
                self._forget_modules()
            return True

    def remove_file(self, path: str | Path) -> None:
        rel = self._rel(path)
        with self.lock:
            if rel is not None:
                self._remove(rel)
                self._forget_modules()

    def _forget_modules(self) -> None:
        self._modules = self._lookup = None

    def sync(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Bring the index up to date with the disk (after a restart): re-index changed, new and
        deleted files only (a file whose cleaned text is unchanged only gets its new mtime). Returns
        the number of entries touched (re-indexed, removed or re-stamped: the index is worth saving)."""
        with self.lock:
            rels = list(self.rules.iter_rel_paths())
            wanted = set(rels)
            touched = reindexed = 0
            for rel in [r for r in self.entries if r not in wanted]:
                self._remove(rel)
                touched += 1
                reindexed = 1
            for done, rel in enumerate(rels, 1):
                entry = self.entries.get(rel)
                try:
                    stat = (self.root / rel).stat()
                except OSError:
                    stat = None
                if entry is None or stat is None or (entry.mtime_ns, entry.size) != (stat.st_mtime_ns, stat.st_size):
                    loaded = self.rules.load(self.root / rel, check_ignored=False)
                    if loaded is None or not self._same_text(rel, loaded.text, self.root / rel):
                        self._remove(rel)
                        if loaded is not None:
                            self._add(rel, loaded.text, self.root / rel)
                        reindexed = 1
                    touched += 1
                if progress is not None and (done % 200 == 0 or done == len(rels)):
                    progress(done, len(rels))
            if reindexed:
                self._forget_modules()
            return touched

    # ---- persistence
    def _state_path(self) -> Path:
        """The index's JSON half; its arrays are in :meth:`_arrays_path`. Neither format can run code
        when read (no pickle): a planted file is at worst rejected and the index rebuilt."""
        if self.state_dir is None:
            raise ValueError("this index has no state_dir")
        return self.state_dir / "index.json"

    def _arrays_path(self) -> Path:
        return self._state_path().with_name("index.npz")

    def _dense_path(self) -> Path:
        import hashlib

        tag = hashlib.sha1(str(self.dense_model).encode()).hexdigest()[:10]
        return self.state_dir / f"dense-{tag}.npz"

    def save(self) -> None:
        """Write the index atomically: the arrays (index.npz), then the JSON (index.json) holding the
        arrays file's SHA-256, so a crash between the two leaves a pair that is detected as mismatched."""
        with self.lock:
            path, arrays_path = self._state_path(), self._arrays_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            bm25 = self.bm25.state()
            arrays = {key: np.asarray(value) for key, value in bm25.items() if key in BM25_ARRAYS}
            tmp_arrays = arrays_path.with_name("index.tmp.npz")
            np.savez(tmp_arrays, **arrays)
            digest = hashlib.sha256(tmp_arrays.read_bytes()).hexdigest()
            state = {
                "schema": INDEX_SCHEMA, "root": str(self.root), "arrays_sha256": digest,
                "bm25": {"params": list(bm25["params"]), "vocab": bm25["vocab"], "n_docs": int(bm25["n_docs"]),
                         "n_alive": int(bm25["n_alive"]), "total_len": int(bm25["total_len"])},
                "entries": {rel: {"mtime_ns": e.mtime_ns, "size": e.size, "doc_ids": [int(d) for d in e.doc_ids],
                                  "clean_digest": e.clean_digest,
                                  "chunks": [[c.text, c.index, c.start_line, c.end_line, c.kind, c.name] for c in e.chunks]}
                            for rel, e in self.entries.items()},
            }
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp_arrays, arrays_path)
            os.replace(tmp, path)
            stale = path.with_name("index.pkl")  # the old pickle format is never read again
            if stale.exists():
                stale.unlink()
            if self._dense is not None and self._dense.matrix is not None:
                self._dense.save(self._dense_path())

    def _load_state(self) -> None:
        """Read index.json + index.npz, checking every field's type and range (ValueError on any
        mismatch; the caller then rebuilds)."""
        state = json.loads(self._state_path().read_text(encoding="utf-8"))
        if not isinstance(state, dict) or state.get("schema") != INDEX_SCHEMA or state.get("root") != str(self.root):
            raise ValueError("index schema or root differs")
        data = self._arrays_path().read_bytes()
        if hashlib.sha256(data).hexdigest() != state.get("arrays_sha256"):
            raise ValueError("index.npz does not belong to index.json")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in BM25_ARRAYS}
        meta = state["bm25"]
        params, vocab = meta["params"], meta["vocab"]
        if not (isinstance(params, list) and len(params) == 3 and all(isinstance(p, (int, float)) for p in params)):
            raise ValueError("bad BM25 params")
        if not (isinstance(vocab, list) and all(isinstance(t, str) for t in vocab)):
            raise ValueError("bad BM25 vocabulary")
        counts = [meta[k] for k in ("n_docs", "n_alive", "total_len")]
        if not all(_is_count(v) for v in counts):
            raise ValueError("bad BM25 counts")
        for key, array in arrays.items():
            if array.dtype.kind not in "biuf" or array.ndim != 1:
                raise ValueError(f"index array {key} has dtype {array.dtype} and {array.ndim} dimensions")
        bm25 = IncrementalBM25.from_state({**arrays, "params": tuple(params), "vocab": vocab, "n_docs": counts[0],
                                           "n_alive": counts[1], "total_len": counts[2]})
        doc_file: list[str | None] = [None] * bm25.n_docs
        doc_chunk: list[Chunk | None] = [None] * bm25.n_docs
        entries = {}
        if not isinstance(state["entries"], dict):
            raise ValueError("bad index entries")
        for rel, entry in state["entries"].items():
            mtime_ns, size, doc_ids, raw = entry["mtime_ns"], entry["size"], entry["doc_ids"], entry["chunks"]
            digest = entry.get("clean_digest", "")  # "" (an index saved before digests): compared as unknown
            if not (_is_count(mtime_ns) and _is_count(size) and isinstance(doc_ids, list) and isinstance(raw, list)
                    and len(doc_ids) == len(raw) and all(_is_count(d) and d < bm25.n_docs for d in doc_ids)
                    and isinstance(digest, str)):
                raise ValueError(f"bad index entry for {rel!r}")
            chunks = [_chunk(c) for c in raw]
            entries[rel] = FileEntry(mtime_ns, size, chunks, doc_ids, digest)
            for doc, chunk in zip(doc_ids, chunks):
                doc_file[doc], doc_chunk[doc] = rel, chunk
        if sum(len(e.doc_ids) for e in entries.values()) != bm25.n_alive:
            raise ValueError("index entries and BM25 statistics disagree")
        self.bm25, self.entries, self.doc_file, self.doc_chunk = bm25, entries, doc_file, doc_chunk
        self._doc_row = np.zeros(0, dtype=np.int64)

    @classmethod
    def load_or_build(cls, root: str | Path, state_dir: str | Path, progress: Callable[[int, int], None] | None = None,
                      on_save_error: Callable[[OSError], None] | None = None, **kwargs) -> "WorkspaceIndex":
        """Reload the saved index and re-index what changed on disk since; build when there is none;
        rebuild (with a log line) when the saved one is unreadable. A failed save raises, or with
        ``on_save_error`` is handed to it and the index is returned all the same (a server keeps it in memory)."""
        index = cls(root, state_dir, **kwargs)
        path = index._state_path()
        loaded = False
        if path.exists():
            try:
                index._load_state()
                touched = index.sync(progress)
                loaded = True
            except Exception as exc:  # noqa: BLE001 - any damage means: rebuild
                log.warning("index at %s is unreadable (%s: %s); rebuilding", path, type(exc).__name__, exc)
                index._reset()
        if not loaded:
            index.build(progress)
            touched = True
        if touched:  # outside the try: a disk that cannot take the index is not a damaged index
            try:
                index.save()
            except OSError as exc:
                if on_save_error is None:
                    raise
                on_save_error(exc)
        return index

    # ---- dense (lazy, incremental)
    @property
    def dense(self):
        if self.dense_model is None:
            raise ValueError("this index has no dense model (dense_model=None)")
        if self._dense is None:
            from .dense import DenseStore

            store = DenseStore(self.dense_model)
            if self.state_dir is not None and self._dense_path().exists():
                try:
                    store.load(self._dense_path())
                except Exception as exc:  # noqa: BLE001
                    log.warning("dense cache %s is unreadable (%s); re-encoding", self._dense_path(), exc)
            self._dense = store
            self._map_rows(self._pending_dense())  # one pass: rows for every text in the disk cache
        return self._dense

    def build_dense(self, progress: Callable[[int, int], None] | None = None, batch: int = 256) -> int:
        """Encode the live chunks not encoded yet (new or changed text only); returns how many.
        Meant for a background thread: batches are encoded outside the lock, so queries keep running
        (a dense query sees the chunks encoded so far when ``dense_sync_limit`` lets it answer early)."""
        encoded = 0
        while True:
            with self.lock:
                store = self.dense
                pending = self._pending_dense()
                total = encoded + len(pending)
                pending = pending[:batch]
                texts = [self.doc_chunk[d].text for d in pending]
            if not texts:
                return encoded
            vectors = store.encode(texts)
            with self.lock:
                store.append(texts, vectors)
                self._map_rows(pending)
            encoded += len(texts)
            if progress is not None:
                progress(encoded, total)

    def _pending_dense(self) -> np.ndarray:
        n = self._grow_rows()
        return np.flatnonzero(self.bm25.alive[:n] & (self._doc_row[:n] < 0))

    def _grow_rows(self) -> int:
        n = self.bm25.n_docs
        if len(self._doc_row) < n:  # new documents: no row until encoded
            extra = max(n - len(self._doc_row), len(self._doc_row))
            self._doc_row = np.concatenate([self._doc_row, np.full(extra, -1, dtype=np.int64)])
        return n

    def _map_rows(self, docs) -> None:
        """Give documents whose text is encoded already (unchanged chunks, the disk cache) their row."""
        docs = np.asarray(docs, dtype=np.int64)
        if len(docs):
            self._doc_row[docs] = self._dense.rows([self.doc_chunk[d].text for d in docs])

    def _encode_pending(self, limit: int | None) -> None:
        pending = self._pending_dense()
        if limit is not None:
            pending = pending[:limit]
        if len(pending):
            self.dense.add([self.doc_chunk[d].text for d in pending])
            self._map_rows(pending)

    # ---- queries
    def files(self) -> list[str]:
        return sorted(self.entries)

    def num_chunks(self) -> int:
        return self.bm25.n_alive

    def retrieve(self, prefix: str, current_file: str | None = None, retriever: str | list[str] = "bm25",
                 k: int = 5, next_chunk: bool = True) -> list[Snippet]:
        """Snippets from files other than ``current_file`` for the code before the cursor, in block order.

        ``retriever``: a name of :data:`RETRIEVERS` or a list of them. ``imports`` gives the definitions
        of the names the file imports (imported-but-unused first, then nearest use to the cursor);
        ``usages`` windows around other files' uses of those names (call sites), best BM25 match
        first; the ranked retrievers (``bm25``, ``dense``; ``hybrid`` is both) give their top ``k``,
        several of them fused by reciprocal rank into one group. Each source gives up to ``k``
        snippets, and the groups follow the order of the list (the ranked group where its first
        member is named), so the last one named ends nearest the cursor; the block's packing drops
        repeats and cuts at the token budget."""
        names = expand_retrievers(retriever)
        current = self._rel(current_file) if current_file else None
        ranked_names = [n for n in names if n in RANKED_RETRIEVERS]
        depth = k if len(ranked_names) <= 1 else max(4 * k, 20)
        groups: list[list[Snippet]] = []
        with self.lock:
            for name in names:
                if name == "imports":
                    groups.append(self.import_snippets(prefix, current, k))
                elif name == "usages":
                    groups.append(self.usage_snippets(prefix, current, k))
                elif name == ranked_names[0]:
                    ranked = [self._retrieve_one(n, prefix, current, depth, next_chunk) for n in ranked_names]
                    groups.append(ranked[0][:k] if len(ranked) == 1 else rrf(ranked, k))
        return [snippet for group in groups for snippet in group]

    def _retrieve_one(self, name: str, prefix: str, current: str | None, k: int, next_chunk: bool) -> list[Snippet]:
        query = last_nonempty_lines(prefix)
        exclude = tuple(self.entries[current].doc_ids) if current in self.entries else ()
        if not query.strip():
            return []  # nothing typed yet: no query (and no 100k-way tie to sort)
        if name == "bm25":
            scores, live = self.bm25.scores(bm25_tokens(query), exclude)
        else:
            scores, live = self._dense_scores(query)
            for doc in exclude:
                live[doc] = False
        return self._top_snippets(scores, live, k, next_chunk, name)

    def _dense_scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        self._encode_pending(self.dense_sync_limit)  # lazy and incremental
        n = self.bm25.n_docs
        rows = self._doc_row[:n]
        have = self.bm25.alive[:n] & (rows >= 0)
        scores = np.full(n, -np.inf)
        if have.any():
            scores[have] = self.dense.matrix[rows[have]] @ self.dense.encode([query])[0]
        return scores, have

    def _top_snippets(self, scores: np.ndarray, live: np.ndarray, k: int, next_chunk: bool, name: str) -> list[Snippet]:
        """Best chunks first (ties: file path, then chunk order), each replaced by its following chunk,
        duplicates dropped - CrossCodeEval's rg1 selection."""
        n_live = int(live.sum())
        if n_live == 0:
            return []
        masked = np.where(live, scores, -np.inf)
        want = min(n_live, 4 * k + 8)  # room for duplicates dropped below
        threshold = np.partition(masked, len(masked) - want)[len(masked) - want]
        pool = np.flatnonzero((masked >= threshold) & live)
        order = sorted(pool.tolist(), key=lambda d: (-scores[d], self.doc_file[d], self.doc_chunk[d].index))
        out: list[Snippet] = []
        seen: set[str] = set()
        for doc in order:
            rel, chunk = self.doc_file[doc], self.doc_chunk[doc]
            if next_chunk:
                chunks = self.entries[rel].chunks
                if chunk.index + 1 < len(chunks):
                    chunk = chunks[chunk.index + 1]
            if chunk.text in seen:
                continue
            seen.add(chunk.text)
            out.append(Snippet(rel, chunk.text, float(scores[doc]), name, chunk.start_line))
            if len(out) == k:
                break
        return out

    # ---- import-aware context
    def _read_rel(self, rel: str) -> str | None:
        loaded = self.rules.load(self.root / rel, check_ignored=False) if rel in self.entries else None
        return loaded.text if loaded is not None else None

    def _file_version(self, rel: str) -> tuple[int, int] | None:
        """What the definitions cache keys a file by: its indexed (mtime, size); None when not indexed."""
        entry = self.entries.get(rel)
        return (entry.mtime_ns, entry.size) if entry is not None and entry.size >= 0 else None

    def module_map(self) -> ModuleMap:
        if self._modules is None:
            root_package = self.root.name if (self.root / "__init__.py").exists() else ""
            self._modules = ModuleMap(self.entries, root_package, self.rules.load_config)
            self._lookup = DefinitionLookup(self._modules, self._read_rel, self._file_version)
        return self._modules

    def import_snippets(self, prefix: str, current: str | None, k: int = 20) -> list[Snippet]:
        modules = self.module_map()
        found = import_context(prefix, current, modules, self._read_rel, limit=k, lookup=self._lookup)
        return [Snippet(s.filename, s.text, 1.0 / (1 + rank), "imports") for rank, s in enumerate(found)]

    def _mentions(self, rel: str, word: str) -> bool:
        """Whether indexed file ``rel`` has ``word`` as a BM25 token (from the postings: no file read)."""
        entry = self.entries.get(rel)
        return entry is not None and self.bm25.contains(word, entry.doc_ids)

    def usage_snippets(self, prefix: str, current: str | None, k: int = 5, max_names: int = 20) -> list[Snippet]:
        """Windows around uses, in other files, of the names the prefix imports from workspace modules
        (``workspace_names``: resolved with the module map alone, no definition file read on this hot
        path): the chunks holding such a use ranked by BM25 against the rg1 query (the prefix's last
        lines), each shown as the lines leading to its first use and the two after it
        (retrieval/usages.py). Overlapping windows of one file count once."""
        query = last_nonempty_lines(prefix)
        if not query.strip():
            return []
        words = tuple(workspace_names(prefix, current, self.module_map(), max_names, self._mentions))
        if not words:
            return []
        candidate = np.zeros(self.bm25.n_docs, dtype=bool)  # a mask: no sort or set operation per request
        for word in words:
            candidate[self.bm25.docs_with(word)] = True
        exclude = tuple(self.entries[current].doc_ids) if current in self.entries else ()
        candidate[np.asarray(exclude, dtype=np.int64)] = False
        docs = np.flatnonzero(candidate)
        if not len(docs):
            return []
        scores, _ = self.bm25.scores(bm25_tokens(query), exclude)
        if len(docs) > USAGE_POOL:  # a common name: only the best-matching chunks can make the top k
            docs = docs[np.argpartition(-scores[docs], USAGE_POOL - 1)[:USAGE_POOL]]
        order = sorted(docs.tolist(), key=lambda d: (-scores[d], self.doc_file[d], self.doc_chunk[d].index))
        out: list[Snippet] = []
        shown: dict[str, list[tuple[tuple[int, int], tuple[int, int]]]] = {}  # file -> windows shown, by line key
        for doc in order:
            rel, chunk = self.doc_file[doc], self.doc_chunk[doc]
            chunks = self.entries[rel].chunks
            around = chunks[max(0, chunk.index - 1):chunk.index + 2]  # the windows before and after, for context
            keys = [(c.index, j) for c in around for j in range(c.text.count("\n") + 1)]  # file-wide line order
            lines = [line for c in around for line in c.text.split("\n")]
            own = [i for i, key in enumerate(keys) if key[0] == chunk.index]
            use = first_use(lines, words, own[0], own[-1] + 1, import_lines(lines))
            if use is None:
                continue  # the names are only imported or defined here
            first, last = use_window(lines, use)
            span = (keys[first], keys[last - 1])
            if any(a <= span[1] and span[0] <= b for a, b in shown.get(rel, [])):
                continue
            shown.setdefault(rel, []).append(span)
            out.append(Snippet(rel, "\n".join(lines[first:last]), float(scores[doc]), "usages", -1))
            if len(out) == k:
                break
        return out


def expand_retrievers(retriever: str | list[str] | tuple[str, ...]) -> list[str]:
    """The basic retrievers (bm25, dense, imports) behind a name or list (``hybrid`` is bm25 + dense),
    each once, in the order given. Raises ValueError naming an unknown one."""
    given = [retriever] if isinstance(retriever, str) else list(retriever)
    names: list[str] = []
    for name in given:
        if name not in RETRIEVERS:
            raise ValueError(f"unknown retriever {name!r}; choose from {', '.join(RETRIEVERS)}")
        for basic in (("bm25", "dense") if name == "hybrid" else (name,)):
            if basic not in names:
                names.append(basic)
    if not names:
        raise ValueError(f"no retriever given; choose from {', '.join(RETRIEVERS)}")
    return names


def rrf(rankings: list[list[Snippet]], k: int, constant: int = RRF_K) -> list[Snippet]:
    """Reciprocal-rank fusion of ranked snippet lists (same file + text = same item)."""
    fused: dict[tuple[str, str], float] = {}
    first: dict[tuple[str, str], Snippet] = {}
    for ranking in rankings:
        for rank, snippet in enumerate(ranking):
            key = (snippet.filename, snippet.text)
            fused[key] = fused.get(key, 0.0) + 1.0 / (constant + rank + 1)
            first.setdefault(key, snippet)
    order = sorted(fused, key=lambda key: (-fused[key], key))
    return [Snippet(key[0], key[1], fused[key], "rrf", first[key].start_line) for key in order[:k]]


def _stat(path: Path | None) -> os.stat_result | None:
    try:
        return path.stat() if path is not None else None
    except OSError:
        return None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _chunk(raw) -> Chunk:
    """A chunk from its JSON row [text, index, start_line, end_line, kind, name] (ValueError otherwise)."""
    if not (isinstance(raw, list) and len(raw) == 6 and isinstance(raw[0], str) and all(_is_count(v) for v in raw[1:4])
            and isinstance(raw[4], str) and isinstance(raw[5], str)):
        raise ValueError(f"bad chunk {str(raw)[:80]}")
    return Chunk(raw[0], raw[1], raw[2], raw[3], raw[4], raw[5])
