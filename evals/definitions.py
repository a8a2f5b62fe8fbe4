"""Whether a cross-file block holds the definition of the symbol a sample completes (recall of the
context, next to EM): the block has a fragment from a file the symbol is defined in (the sample's
``metadata.defined_in``) with a line that defines it (``def``/``class``/``function``/... NAME, or
``NAME =`` / ``NAME:`` at a line start)."""

from __future__ import annotations

import re

FRAGMENT = re.compile(r"^(?:#|//) the below code fragment is found in (.+)$")
DEFINING = r"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?(?:def|class|function|interface|type|enum|const|let|var)\s+{0}\b" \
           r"|^\s*{0}\s*(?::[^=\n]*)?=(?!=)"


def definition_in_block(block: str, symbol: str | None, defined_in: list[str] | None) -> bool | None:
    """True/False, or None when the sample names no symbol or defining file (nothing to measure)."""
    if not symbol or not defined_in:
        return None
    pattern = re.compile(DEFINING.format(re.escape(symbol)))
    wanted = set(defined_in)
    current = None
    for line in block.split("\n"):
        match = FRAGMENT.match(line)
        if match:
            current = match.group(1).strip()
            continue
        if current in wanted:
            text = line[2:] if line.startswith("# ") else line[3:] if line.startswith("// ") else line
            if pattern.search(text):
                return True
    return False


def groundtruth_in_block(block: str, groundtruth: str | None) -> bool | None:
    """Whether the block shows the expected completion's first line (stripped) inside one of its lines:
    something the model could copy (a call site, a sibling's signature). None without a groundtruth."""
    expected = (groundtruth or "").split("\n", 1)[0].strip()
    if not expected:
        return None
    for line in block.split("\n"):
        if FRAGMENT.match(line):
            continue
        text = line[2:] if line.startswith("# ") else line[3:] if line.startswith("// ") else line
        if expected in text:
            return True
    return False


def definition_rate(rows: list[dict]) -> tuple[float, int] | None:
    """(fraction of rows whose block holds the definition, rows measured); None when none can be."""
    found = [definition_in_block(str(r.get("context") or ""), r.get("crossfile_symbol"), r.get("defined_in"))
             for r in rows]
    measured = [f for f in found if f is not None]
    return (sum(measured) / len(measured), len(measured)) if measured else None


def main(argv: list[str] | None = None) -> int:
    """Definition-in-block rate per retriever over a dataset, from the very block the eval (and the
    server) would put in the prompt (evals/runner.py ``build_request`` -> ``CompletionEngine.context_for``);
    no generation, so every retriever fits in minutes. Also times each block's retrieval + packing."""
    import argparse
    import json
    import statistics
    import time
    from pathlib import Path

    from titans_lsp.commands import whole_number
    from titans_lsp.engine import CompletionEngine
    from titans_lsp.evals.data import read_samples, select
    from titans_lsp.evals.runner import CONTEXT_BUDGET, MAX_SEQ, RunSpec, SnippetSource, build_request
    from titans_lsp.modes import Mode
    from titans_lsp.settings import max_context_budget

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--repos", required=True, type=Path)
    parser.add_argument("--retrieve", nargs="+", required=True, help="as titans-lsp eval --retrieve")
    parser.add_argument("--model", default="default", help="whose tokenizer counts the budget")
    parser.add_argument("--context-budget", type=whole_number(0, max_context_budget(MAX_SEQ)), default=CONTEXT_BUDGET)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the rates")
    args = parser.parse_args(argv)

    samples = select(read_samples(args.data).samples, args.limit, args.seed)
    engine = CompletionEngine.load(args.model, device="cpu")
    spec = RunSpec("concat", Mode.CONCAT, max_seq=MAX_SEQ, context_budget=args.context_budget)
    report: dict[str, dict] = {}
    for retriever in args.retrieve:
        source = SnippetSource(retriever, args.repos)
        found, copyable, seconds = [], [], []
        for sample in samples:
            source.workspace(sample) if not source.reference else None  # index built outside the timing
            start = time.perf_counter()
            request, workspace, _ = build_request(engine, sample, spec, source)
            block = engine.context_for(request, workspace)
            seconds.append(time.perf_counter() - start)
            meta = sample["metadata"]
            found.append(definition_in_block(block, meta.get("crossfile_symbol"), meta.get("defined_in")))
            copyable.append(groundtruth_in_block(block, sample.get("groundtruth")))
        measured = [f for f in found if f is not None]
        by_repo: dict[str, list[bool]] = {}
        for sample, f in zip(samples, found):
            if f is not None:
                by_repo.setdefault(str(sample["metadata"]["repository"]), []).append(f)
        ordered = sorted(seconds)
        report[source.retriever] = {
            "definition_in_block": sum(measured) / len(measured) if measured else None, "n": len(measured),
            "by_repository": {repo: sum(v) / len(v) for repo, v in sorted(by_repo.items())},
            "groundtruth_in_block": _rate(copyable),
            "block_ms_p50": 1000 * statistics.median(seconds), "block_ms_p95": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        }
        print(f"{source.retriever:>14}: definition in block {100 * report[source.retriever]['definition_in_block']:.1f}% "
              f"of {len(measured)}; groundtruth line in block {100 * (report[source.retriever]['groundtruth_in_block'] or 0):.1f}%; "
              f"block p50 {report[source.retriever]['block_ms_p50']:.1f} ms", flush=True)
    engine.close()
    if args.out is not None:
        args.out.write_text(json.dumps({"data": str(args.data), "context_budget": args.context_budget,
                                        "limit": args.limit, "seed": args.seed, "model": args.model, "retrievers": report}, indent=2) + "\n")
    return 0


def _rate(values: list[bool | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return sum(measured) / len(measured) if measured else None


if __name__ == "__main__":
    raise SystemExit(main())
