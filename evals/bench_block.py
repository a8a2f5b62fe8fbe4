"""Latency of the cross-file block per retriever on a large workspace, all retrievers in the same run.

    /work/bin/cpu-slot .venv/bin/python -m titans_lsp.evals.bench_block --files 3000 \
        --retrieve bm25 imports imports,bm25 --out evals/results/<date>-retrievers/latency.json

The workspace is ``--files`` .py files of installed packages (evals/rss_workspace.py's recipe). Each
query is a random file of it cut at a random line (CrossCodeEval-style); every query is timed for every
retriever in turn (round robin, so a machine shared with other work slows them alike). The figure
per request: retrieval + packing within the 512-token budget (``CompletionEngine.context_for``, the
path a server request takes), each retriever on its own index so none warms another's caches. The
first query of each retriever (imports builds its module map once per index change) is reported apart.
Two passes: ``cold`` (each query's file and the modules it imports mostly seen for the first time: the
definitions of those modules are parsed then) and ``warm`` (the same queries again: what a user who
keeps typing in a file gets). ``--retrieval-only`` times ``WorkspaceIndex.retrieve`` alone (the issue's
latency target is retrieval per request), with the same queries, order and passes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    from titans_lsp.evals.bench_retrieval import make_queries, ms_stats
    from titans_lsp.evals.rss_workspace import DEFAULT_PACKAGES, _package_dir, make_workspace

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--packages", default=",".join(DEFAULT_PACKAGES), help="as evals/rss_workspace.py")
    parser.add_argument("--retrieve", nargs="+", default=["bm25", "imports", "imports,bm25"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="default", help="whose tokenizer counts the block's budget")
    parser.add_argument("--retrieval-only", action="store_true", help="time index.retrieve, not retrieval + packing")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from titans_lsp.engine import RETRIEVE_K, CompletionEngine, CompletionRequest, Workspace
    from titans_lsp.retrieval.index import WorkspaceIndex
    from titans_lsp.settings import CompletionSettings, parse_retriever

    retrievers = [parse_retriever(r) for r in args.retrieve]
    results: dict = {"command": " ".join(["python -m titans_lsp.evals.bench_block", *sys.argv[1:]]),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work), "
                                f"python {platform.python_version()}",
                     "load_average_at_start": [round(x, 1) for x in os.getloadavg()]}
    work = Path(tempfile.mkdtemp(prefix="bench-block-"))
    try:
        packages = [Path(p) if "/" in p else _package_dir(p) for p in args.packages.split(",") if p]
        results["workspace"] = make_workspace(work / "ws", packages, args.files)
        indexes = {}  # one index per retriever: no retriever warms another's caches
        for names in retrievers:
            indexes[names] = WorkspaceIndex(work / "ws", dense_model=None)
            start = time.perf_counter()
            indexes[names].build()
            build_s = time.perf_counter() - start
        index = indexes[retrievers[0]]
        results["index"] = {"files": len(index.files()), "chunks": index.num_chunks(), "build_s": round(build_s, 2)}
        results["timed"] = "index.retrieve" if args.retrieval_only else "engine.context_for (retrieve + pack)"
        print("index", results["index"], flush=True)
        engine = CompletionEngine.load(args.model, device="cpu")
        queries = make_queries(index, args.queries, args.seed)
        first: dict[str, float] = {}
        for phase in ("cold", "warm"):  # cold: files seen first; warm: the same queries again (a user still typing there)
            block_s: dict[tuple, list[float]] = {r: [] for r in retrievers}
            for number, (rel, prefix) in enumerate(queries):
                for names in retrievers:
                    workspace = Workspace(root=indexes[names].root, index=indexes[names])
                    request = CompletionRequest(prefix=prefix, path=rel, settings=CompletionSettings(retriever=names))
                    start = time.perf_counter()
                    if args.retrieval_only:
                        indexes[names].retrieve(prefix, rel, list(names), k=RETRIEVE_K)
                    else:
                        engine.context_for(request, workspace)
                    took = time.perf_counter() - start
                    if number == 0 and phase == "cold":
                        first[",".join(names)] = round(took * 1000, 1)
                    else:
                        block_s[names].append(took)
            results[f"block_{phase}"] = {",".join(r): ms_stats(block_s[r]) for r in retrievers}
            what = "retrieve" if args.retrieval_only else "block (retrieve + pack)"
            for name, r in results[f"block_{phase}"].items():
                print(f"{phase} {name:>14}: {what} p50 {r['p50_ms']} p95 {r['p95_ms']} ms", flush=True)
        engine.close()
        results["first_query_ms"] = first
        results["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
