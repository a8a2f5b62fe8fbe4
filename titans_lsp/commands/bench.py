"""`titans-lsp bench`: completion latency per mode on a replayed typing trace, with a baseline."""

import argparse

from titans_lsp.commands import (add_backend_arguments, add_model_arguments, check_output_file, number_at_least, number_in,
                               positive_int)

HELP = "replay a typing trace through the engine and report completion latency per mode"
DESCRIPTION = """Replay a typing trace (real files of a pinned PyPI package, retyped key by key with
human-like gaps, Automatic requests after a debounce, cancelled by the next key) per mode, and
report p50/p95/p99 latency from request to answer, cancelled counts, tokens prefilled/decoded per
request and peak RSS, against a baseline measured in the same run: the same final prompts through
a plain `model.generate` with no reuse. The machine's load moves absolute numbers: compare ratios."""

MAX_SPEED = 100.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--modes", default="none,concat", help="comma-separated modes (memory modes need the memory patch)")
    parser.add_argument("--package", default=None, help="pinned PyPI package whose files are typed (default requests==2.32.3)")
    parser.add_argument("--files", type=positive_int, default=3, help="files to type in")
    parser.add_argument("--lines", type=positive_int, default=2, help="lines retyped per file")
    parser.add_argument("--prompt-tokens", type=positive_int, default=1500, help="how deep in each file the typing starts")
    parser.add_argument("--debounce-ms", type=number_at_least(0), default=150.0, help="editor debounce before a request")
    # Above 100x the trace's ~130 ms key gaps shrink to about 1 ms: no longer typing, every request is cancelled.
    parser.add_argument("--speed", type=number_in(0, MAX_SPEED), default=1.0,
                        help=f"replay speed factor, > 0 and <= {MAX_SPEED:g} (>1: faster typing)")
    parser.add_argument("--think-ms", type=number_at_least(0), default=3000.0,
                        help="pause between opening a file (cursor placed where the typing starts) and the first key")
    parser.add_argument("--no-prewarm", action="store_true",
                        help="do not pre-warm the cursor's prompt when a file opens (no titans/cursor)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=48)
    parser.add_argument("--no-lookup", action="store_true", help="disable prompt-lookup speculative decoding")
    parser.add_argument("--priming", action="store_true", help="memory modes: also replay with background priming running")
    parser.add_argument("--server", action="store_true",
                        help="replay through `titans-lsp serve` over stdio (the real server) instead of the engine in-process")
    parser.add_argument("--events-db", default=None, metavar="PATH",
                        help="--server: record acceptance events in PATH (read it with `titans-lsp stats --db PATH`); "
                             "the replayed user accepts a suggestion when the file's real text after the cursor starts "
                             "with it (without this flag the bench's server records nothing)")
    parser.add_argument("--backends", default=None,
                        help="compare backends in one run, e.g. local,llamacpp: the trace through the server on each, "
                             "then per-token decode and a cold request on the same prompts (JSON: backends.<name>.<mode>)")
    parser.add_argument("--cold-tokens", type=positive_int, default=2000, help="--backends: prompt tokens of the cold request")
    add_backend_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from titans_lsp.benchrun import run_backends_bench, run_bench
    from titans_lsp.bench import format_table, write_json
    from pathlib import Path

    if args.out:
        check_output_file("--out", Path(args.out))
    if args.backends:
        import json

        results = run_backends_bench(args)
        print(json.dumps({name: {k: v for k, v in figures.items()} for name, figures in results["backends"].items()}, indent=1))
        print(json.dumps(results["ratios"], indent=1))
        if args.out:
            write_json(Path(args.out), results)
        return 0
    from titans_lsp.cli import UserError

    if args.events_db and not args.server:
        raise UserError("--events-db needs --server (the events are the server's)")
    results = run_bench(args)
    print(format_table(results))
    for mode, figures in results["modes"].items():
        if figures.get("acceptance"):
            print(f"acceptance {mode}: {figures['acceptance']}")
    for key in ("warm_cold", "priming", "notes"):
        if results.get(key):
            print(f"{key}: {results[key]}")
    print(f"peak RSS: {results['peak_rss_mb']} MiB")
    if args.out:
        write_json(Path(args.out), results)
    return 0
