"""Retrieval benchmark on a big real tree: index time, one-file update, query latency per retriever.

    .venv/bin/python evals/bench_retrieval.py --root /work/deps-venv/lib/python3.11/site-packages/transformers \
        --dense-subset generation --out evals/results/<date>-retrieval-bench

Queries are CrossCodeEval-style: a random file of the tree cut at a random line; the retriever gets
the prefix (its last 10 non-empty lines are the query) and the file name (excluded from results).
Dense encoding of a whole 100k-chunk tree takes over an hour on 2 CPU cores, so dense and hybrid are
measured on an index of a subfolder (``--dense-subset``), and the dense matrix product at full size
is timed separately on vectors of the same shape.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms_stats(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(pct(ms, 0.5), 2), "p95_ms": round(pct(ms, 0.95), 2),
            "max_ms": round(max(ms), 2), "mean_ms": round(statistics.fmean(ms), 2)}


def make_queries(index, n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    py = [rel for rel in index.files() if rel.endswith(".py") and len(index.entries[rel].chunks) > 3]
    out = []
    for _ in range(n):
        rel = rng.choice(py)
        lines = (index.root / rel).read_text(encoding="utf-8", errors="replace").split("\n")
        out.append((rel, "\n".join(lines[:rng.randrange(10, len(lines))])))
    return out


def typing_queries(index, files: int, steps: int, seed: int) -> list[tuple[str, str]]:
    """Successive prefixes of the same file, as a user typing further down it produces."""
    rng = random.Random(seed)
    py = [rel for rel in index.files() if rel.endswith(".py") and len(index.entries[rel].chunks) > 10]
    out = []
    for rel in rng.sample(py, files):
        lines = (index.root / rel).read_text(encoding="utf-8", errors="replace").split("\n")
        start = rng.randrange(10, max(11, len(lines) - steps * 3))
        out += [(rel, "\n".join(lines[:start + 3 * i])) for i in range(steps)]
    return out


def time_queries(index, queries, retriever) -> list[float]:
    times = []
    for rel, prefix in queries:
        start = time.perf_counter()
        index.retrieve(prefix, rel, retriever, k=5)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="tree to index (read only; it is copied for the update test)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--dense-subset", default="generation", help="subfolder of --root for dense/hybrid ('' skips)")
    parser.add_argument("--dense-queries", type=int, default=50)
    parser.add_argument("--reference-queries", type=int, default=5, help="rank-bm25 queries at full size (slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder for the results file")
    parser.add_argument("--name", default="results.json", help="results file name inside --out")
    args = parser.parse_args(argv)

    import numpy as np

    from titans_lsp.retrieval.chunking import bm25_tokens, last_nonempty_lines
    from titans_lsp.retrieval.index import WorkspaceIndex

    results: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "root": args.root,
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
                     "load_average_at_start": [round(x, 1) for x in os.getloadavg()]}
    work = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    try:
        root = work / Path(args.root).name
        shutil.copytree(args.root, root, ignore=shutil.ignore_patterns("__pycache__"))

        # --- initial index, save, reload
        index = WorkspaceIndex(root, work / "state", dense_model=None)
        start = time.perf_counter()
        index.build()
        results["index"] = {"files": len(index.files()), "chunks": index.num_chunks(), "vocab": len(index.bm25.vocab),
                            "build_s": round(time.perf_counter() - start, 2)}
        start = time.perf_counter()
        index.save()
        results["index"]["save_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        index = WorkspaceIndex.load_or_build(root, work / "state", dense_model=None)
        results["index"]["reload_and_sync_s"] = round(time.perf_counter() - start, 2)
        print("index", results["index"], flush=True)

        # --- queries
        queries = make_queries(index, args.queries, args.seed)
        # typing: 20 files, 10 successive cut points in each (statistics are cached per current file)
        typing = typing_queries(index, 20, 10, args.seed + 3)
        results["bm25_query_typing"] = ms_stats(time_queries(index, typing, "bm25"))
        # worst case: every query in another file with cold caches (as after each save)
        cold = []
        for query in queries:
            index.bm25.clear_caches()
            cold += time_queries(index, [query], "bm25")
        results["bm25_query_cold"] = ms_stats(cold)
        results["imports_query"] = ms_stats(time_queries(index, queries, "imports"))
        print("bm25 typing", results["bm25_query_typing"], "cold", results["bm25_query_cold"], "imports", results["imports_query"], flush=True)

        # --- one-file updates (edit on disk, re-index the file, then the next query)
        rng = random.Random(args.seed + 1)
        update_times, after_times = [], []
        for rel, prefix in rng.sample(queries, args.updates):
            path = root / rel
            path.write_text(path.read_text() + f"\n\ndef bench_edit_{rng.randrange(10**6)}(value):\n    return value\n")
            start = time.perf_counter()
            index.update_file(path)
            update_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            index.retrieve(prefix, rel, "bm25", k=5)
            after_times.append(time.perf_counter() - start)
        results["update_one_file"] = ms_stats(update_times)
        results["bm25_query_after_update"] = ms_stats(after_times)
        print("update", results["update_one_file"], flush=True)

        # --- the faithful reference engine at the same size, for comparison
        from rank_bm25 import BM25Okapi

        docs = [c for c in index.doc_chunk if c is not None]
        start = time.perf_counter()
        reference = BM25Okapi([bm25_tokens(c.text) for c in docs])
        results["rank_bm25"] = {"build_s": round(time.perf_counter() - start, 2)}
        ref_times = []
        for _, prefix in queries[:args.reference_queries]:
            start = time.perf_counter()
            reference.get_scores(bm25_tokens(last_nonempty_lines(prefix)))
            ref_times.append(time.perf_counter() - start)
        results["rank_bm25"]["query"] = ms_stats(ref_times)
        try:
            import bm25s

            start = time.perf_counter()
            fast = bm25s.BM25()
            fast.index([bm25_tokens(c.text) for c in docs], show_progress=False)
            results["bm25s"] = {"build_s_full_rebuild": round(time.perf_counter() - start, 2)}
            bm25s_times = []
            for _, prefix in queries[:50]:
                start = time.perf_counter()
                fast.retrieve([bm25_tokens(last_nonempty_lines(prefix))], k=5, show_progress=False)
                bm25s_times.append(time.perf_counter() - start)
            results["bm25s"]["query"] = ms_stats(bm25s_times)
        except Exception as exc:  # noqa: BLE001 - comparison only
            results["bm25s"] = {"error": f"{type(exc).__name__}: {exc}"}
        print("rank_bm25", results["rank_bm25"], "bm25s", results["bm25s"], flush=True)

        # --- dense and hybrid on a subfolder; the full-size matrix product on same-shape vectors
        if args.dense_subset:
            sub = WorkspaceIndex(root / args.dense_subset, work / "dense-state", dense_model="default")
            sub.build()
            start = time.perf_counter()
            _ = sub.dense.encoder
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            encoded = sub.build_dense()
            encode_s = time.perf_counter() - start
            dense_queries = make_queries(sub, args.dense_queries, args.seed + 2)
            results["dense"] = {
                "subset": args.dense_subset, "files": len(sub.files()), "chunks": sub.num_chunks(),
                "encoder_load_s": round(load_s, 2), "encode_s": round(encode_s, 2),
                "chunks_per_s": round(encoded / encode_s, 1),
                "estimated_full_tree_encode_min": round(results["index"]["chunks"] / (encoded / encode_s) / 60, 1),
                "query": ms_stats(time_queries(sub, dense_queries, "dense")),
                "hybrid_query": ms_stats(time_queries(sub, dense_queries, "hybrid")),
                "bm25_query_same_subset": ms_stats(time_queries(sub, dense_queries, "bm25")),
            }
            rel = dense_queries[0][0]
            path = sub.root / rel
            path.write_text(path.read_text() + "\n\ndef bench_dense_edit(value):\n    return value\n")
            start = time.perf_counter()
            sub.update_file(path)
            sub.build_dense()
            results["dense"]["update_one_file_with_encode_ms"] = round((time.perf_counter() - start) * 1000, 1)
            rows = results["index"]["chunks"]
            matrix = np.random.default_rng(0).standard_normal((rows, sub.dense.matrix.shape[1])).astype(np.float32)
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            query = matrix[0]
            times = []
            for _ in range(30):
                start = time.perf_counter()
                scores = matrix @ query
                np.argpartition(scores, -28)[-28:]
                times.append(time.perf_counter() - start)
            results["dense"]["full_size_matmul_topk"] = {"rows": rows, **ms_stats(times)}
            start = time.perf_counter()
            for _ in range(10):
                sub.dense.encode([last_nonempty_lines(dense_queries[0][1])])
            results["dense"]["query_encode_ms"] = round((time.perf_counter() - start) * 100, 1)
            print("dense", results["dense"], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / args.name).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
