"""`titans-lsp eval`: the CrossCodeEval tables for every mode; `titans-lsp eval build`: datasets."""

from __future__ import annotations

import argparse
import sys

from titans_lsp.commands import (add_backend_arguments, add_memory_config_argument, add_model_arguments, backend_config,
                               check_output_file, memory_checkpoint_from, memory_config_from, positive_int,
                               whole_number)

HELP = "reproduce the CrossCodeEval tables (EM, edit similarity) for every mode; `eval build` makes datasets"
DESCRIPTION = HELP + """

  titans-lsp eval --data FILE.jsonl --modes memory,ablation,concat,none --out DIR [--vanilla] [--naive]
  titans-lsp eval build --out FILE.jsonl (--dir PATH ... | --pypi NAME==VERSION ... | --npm NAME==VERSION ...)
                        [--language NAME] [--per-repo N] [--seed S]

Outputs in DIR: predictions-<mode>.jsonl, results.json, tables.md, analysis.md, em.png, es.png.
Edit similarity is fuzzywuzzy fuzz.ratio, as the reference.

Data-parallel: `torchrun --nproc_per_node N -m titans_lsp eval ...` gives each process (one GPU each) every
N-th sample; rank 0 merges the predictions and writes the one report. Resuming works with any N."""

BUILD_PER_REPO = 50  # `eval build`'s defaults (None in the parser: given or not is how misuse is found)
BUILD_RETRIEVER = "bm25"
MIN_PROMPT_TOKENS = 64  # the least prompt --max-seq must leave beside the generated tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["build"], help="`build`: make a CrossCodeEval-format file")
    parser.add_argument("--data", help="CrossCodeEval-format JSONL (official file of any variant, or from `eval build`)")
    parser.add_argument("--modes", default="memory,ablation,concat,none",
                        help="comma-separated: none, concat, memory, ablation, hybrid (default: memory,ablation,concat,none)")
    parser.add_argument("--out", help="output directory (eval) or JSONL file (eval build)")
    parser.add_argument("--memory-checkpoint", default=None, help="trained memory parameters (directory from `titans-lsp train`)")
    add_memory_config_argument(parser)
    parser.add_argument("--vanilla", action="store_true", help="also run none and concat on the unpatched model")
    parser.add_argument("--naive", nargs="?", const="none,concat", default="",
                        help="also run these modes (default none,concat) without token healing (rows <mode>-naive)")
    parser.add_argument("--max-seq", type=positive_int, default=2048, help="window: block + prompt + 50 new tokens (reference: 2048)")
    parser.add_argument("--context-budget", type=whole_number(0), default=512,
                        help="tokens for the cross-file block, 0 (no block) to half of --max-seq (reference: 512)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (1 is fastest on an oversubscribed machine)")
    parser.add_argument("--report-only", action="store_true", help="write the reports from the predictions already in --out")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate a seeded random subset of N samples")
    parser.add_argument("--seed", type=int, default=0, help="seed for --limit, bootstrap and `build` (default 0)")
    parser.add_argument("--retrieve", nargs="*", default=None, metavar="R",
                        help="cross-file context retrieved over --repos instead of the file's list, one set of rows "
                             "per R (labelled <mode>-R): a server retriever (bm25, dense, hybrid, imports, usages) or "
                             "a comma-separated list (imports,bm25: definitions, then ranked snippets), built by "
                             "the server's WorkspaceIndex and packed as the server packs; or rg1-bm25 / rg1-dense, "
                             "CrossCodeEval's rg1 recipe and packing (the reference rows). Without R: the server's "
                             "default retriever")
    parser.add_argument("--repos", default=None, help="directory with one folder per metadata.repository")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--fim", action="store_true",
                        help="fill-in-the-middle: the model also sees each sample's right_context (rows <mode>-fim; "
                             "needs a model with FIM tokens)")
    parser.add_argument("--concurrency", type=positive_int, default=1,
                        help="samples sent at once (llamacpp/openai: a server batches them; local runs one at a time)")
    # build
    parser.add_argument("--dir", action="extend", nargs="+", default=[], help="(build) repository directories")
    parser.add_argument("--pypi", action="extend", nargs="+", default=[], help="(build) pinned packages NAME==VERSION")
    parser.add_argument("--npm", action="extend", nargs="+", default=[],
                        help="(build) pinned npm packages NAME==VERSION that ship TypeScript/JavaScript sources")
    parser.add_argument("--language", help="(build) read every repository in this language (default: each one's "
                                           "main language), e.g. python, typescript, javascript, java, go, rust, csharp")
    parser.add_argument("--per-repo", type=positive_int, default=None,
                        help=f"(build) samples per repository (default {BUILD_PER_REPO})")
    parser.add_argument("--retriever", default=None, choices=["bm25", "dense"],
                        help=f"(build) rg1 ranking (default {BUILD_RETRIEVER})")
    add_model_arguments(parser)
    add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from titans_lsp.cli import UserError

    if args.action == "build":
        ignored = [flag for flag, given in (("--data", args.data), ("--repos", args.repos),
                                            ("--retrieve", args.retrieve is not None)) if given]
        if ignored:
            raise UserError(f"{', '.join(ignored)}: not read by `eval build` (they are for evaluating a file it made)")
        return run_build(args)
    build_only = [flag for flag, given in (("--dir", args.dir), ("--pypi", args.pypi), ("--npm", args.npm),
                                           ("--language", args.language), ("--per-repo", args.per_repo is not None),
                                           ("--retriever", args.retriever is not None)) if given]
    if build_only:  # they would be ignored without a word
        raise UserError(f"{', '.join(build_only)}: only read by `titans-lsp eval build` (add `build` after `eval`)")
    if not args.data or not args.out:
        raise UserError("--data FILE.jsonl and --out DIR are required (or `titans-lsp eval build ...`)")
    from titans_lsp.evals.runner import MAX_NEW_TOKENS
    from titans_lsp.settings import max_context_budget

    if args.max_seq < MAX_NEW_TOKENS + MIN_PROMPT_TOKENS:  # the prompt was cut to nothing: a traceback per sample
        raise UserError(f"--max-seq {args.max_seq}: at least {MAX_NEW_TOKENS + MIN_PROMPT_TOKENS} (the {MAX_NEW_TOKENS} "
                        f"generated tokens and a prompt of {MIN_PROMPT_TOKENS})")
    if args.context_budget > max_context_budget(args.max_seq):  # CompletionSettings refused it after the model loaded
        raise UserError(f"--context-budget {args.context_budget}: at most {max_context_budget(args.max_seq)} "
                        f"(half of --max-seq {args.max_seq}, so the prefix keeps room)")
    from titans_lsp.modes import parse_modes

    try:
        modes, naive = parse_modes(args.modes), parse_modes(args.naive)
    except ValueError as exc:
        raise UserError(f"--modes/--naive: {exc}") from None
    if not (modes or naive):
        raise UserError("--modes: give at least one mode")
    args.naive_modes = naive
    if not args.report_only:
        memory_checkpoint_from(args.memory_checkpoint)
    args.backend_config = backend_config(args)
    if args.backend_config.remote and any(m.uses_memory for m in modes + naive):
        from titans_lsp.backends import ModeUnsupported

        memory = next(m for m in modes + naive if m.uses_memory)
        raise UserError(str(ModeUnsupported(memory.value, args.backend)))
    if args.retrieve is not None:
        from titans_lsp.evals.runner import parse_retrieve
        from titans_lsp.settings import CompletionSettings

        try:
            args.retrieve = list(dict.fromkeys(parse_retrieve(r) for r in args.retrieve)) or \
                [",".join(CompletionSettings().retriever)]
        except ValueError as exc:
            raise UserError(f"--retrieve: {exc}") from None
        if not args.repos:
            raise UserError("--retrieve needs --repos DIR (one folder per metadata.repository)")
        if not Path(args.repos).is_dir():  # here, not after the model has loaded
            raise UserError(f"--repos {args.repos}: not a directory")
    elif args.repos:  # without --retrieve the rows read each sample's own list: --repos would be ignored
        raise UserError("--repos is read only by --retrieve: add --retrieve [R ...] to retrieve over it, "
                        "or drop --repos to use each sample's crossfile_context list")
    return run_eval(args, modes)


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from titans_lsp.cli import UserError
    from titans_lsp.evals.build import build
    from titans_lsp.paths import cache_root
    from titans_lsp.retrieval.packages import PackageError, repos_dir

    if not args.out or not (args.dir or args.pypi or args.npm):
        raise UserError("eval build needs --out FILE.jsonl and at least one --dir PATH, --pypi NAME==VERSION "
                        "or --npm NAME==VERSION")
    for d in args.dir:
        if not Path(d).is_dir():
            raise UserError(f"--dir {d}: not a directory")
    check_output_file("--out", Path(args.out))
    language = None
    if args.language:
        from titans_lsp.retrieval.languages import PYTHON, by_name

        try:
            language = by_name(args.language)
        except ValueError as exc:
            raise UserError(f"--language: {exc}") from None
        if language is not PYTHON and language.rules is None:
            raise UserError(f"--language {args.language}: no definition rules (grammar) for it")
    cache = cache_root(args.cache_dir)
    try:
        count, repos = build(Path(args.out), args.dir, args.pypi, args.per_repo or BUILD_PER_REPO, args.seed, cache,
                             args.retriever or BUILD_RETRIEVER,
                             npm=args.npm, language=language)
    except (PackageError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {count} samples from {len(repos)} repositories to {args.out}")
    if args.pypi or args.npm:
        print(f"unpacked packages (use as --repos): {repos_dir(cache)}")
    return 0


def run_eval(args: argparse.Namespace, modes: list) -> int:
    from pathlib import Path

    from titans_lsp.cli import UserError
    from titans_lsp.evals.data import read_samples, select

    if Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: a directory; give the JSONL file (or make one with `titans-lsp eval build`)")
    if not Path(args.data).is_file():
        raise UserError(f"--data {args.data}: no such file")
    try:
        dataset = read_samples(args.data)
    except (OSError, EOFError) as exc:  # a damaged gzip, an unreadable file
        raise UserError(f"--data {args.data}: cannot read it ({exc}); re-download or rebuild it") from None
    for problem in dataset.problems:
        print(f"{args.data}: skipped {problem}", file=sys.stderr)
    samples = select(dataset.samples, args.limit, args.seed)
    if not samples:
        raise UserError(f"--data {args.data}: no usable samples")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only place, a file in the way: before the model loads, not after
        raise UserError(f"--out {out}: cannot create it ({exc.strerror}); choose a writable directory") from None

    import torch

    from titans_lsp import distributed

    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = distributed.from_env(args.device)
    try:
        return _evaluate(args, modes, samples, dataset, out, dist)
    finally:
        torch.set_num_threads(threads_before)  # in-process callers (tests) keep their setting
        distributed.shutdown()


def _evaluate(args: argparse.Namespace, modes: list, samples: list[dict], dataset, out, dist) -> int:
    import platform
    import time
    from pathlib import Path

    from titans_lsp.cli import UserError
    from titans_lsp.engine import CompletionEngine
    from titans_lsp.evals.report import write_reports
    from titans_lsp.distributed import device_for
    from titans_lsp.evals.runner import RunSpec, SnippetSource, retrieve_label, run_mode_sharded
    from titans_lsp.modes import Mode

    engine = None if args.report_only else CompletionEngine.load(
        args.model, device=device_for(args.device, dist), dtype=args.dtype, cache_dir=args.cache_dir,
        memory_checkpoint=args.memory_checkpoint, backend=args.backend_config,
        memory_config=memory_config_from(args.memory_config))
    if engine is not None and args.fim and engine.fim_tokens is None:
        engine.close()
        raise UserError(f"--fim: the model {engine.model_name} has no fill-in-the-middle tokens")
    specs: list[RunSpec] = []
    # Vanilla rows first: the memory patch is installed lazily, so the model is still unpatched here.
    if args.vanilla:
        specs += [RunSpec(f"vanilla-{m}", m) for m in (Mode.CONCAT, Mode.NONE)]
    plain = [m for m in modes if not m.uses_memory]
    specs += [RunSpec(m.value, m) for m in plain]
    specs += [RunSpec(f"{m}-naive", m, heal=False) for m in args.naive_modes]
    specs += [RunSpec(m.value, m) for m in modes if m.uses_memory]
    specs = [RunSpec(s.label + ("-fim" if args.fim else ""), s.mode, s.heal, args.max_seq, args.context_budget, args.fim)
             for s in specs]
    # One set of rows per --retrieve value for the modes that read snippets (labelled <mode>-<retriever>).
    repos = Path(args.repos) if args.repos else None
    runs = [(spec, SnippetSource()) for spec in specs if not spec.mode.reads_snippets or args.retrieve is None]
    for retriever in args.retrieve or []:
        source = SnippetSource(retriever, repos)
        runs += [(RunSpec(retrieve_label(s.label, source.retriever), s.mode, s.heal, s.max_seq, s.context_budget, s.fim),
                  source) for s in specs if s.mode.reads_snippets]
    by_label: dict[str, dict] = {}
    started = time.time()
    for spec, source in runs:
        if spec.label.startswith("vanilla-") and engine is not None and engine.patch is not None:
            raise UserError("internal: the model was patched before the vanilla rows")
        by_label[spec.label] = run_mode_sharded(engine, samples, spec, out, source, dist, progress=not args.no_progress,
                                                compute=not args.report_only, concurrency=args.concurrency)
    by_label = {label: rows for label, rows in by_label.items() if rows}
    if not dist.is_main:  # rank 0 writes the one report
        if engine is not None:
            engine.close()
        return 0
    info = {
        "data": str(args.data), "model": engine.model_name if engine is not None else str(args.model),
        "backend": engine.backend.describe() if engine is not None else args.backend, "fim": args.fim,
        "concurrency": args.concurrency,
        "n": len(samples), "limit": args.limit, "seed": args.seed, "max_new_tokens": 50,
        "max_seq": args.max_seq, "context_budget": args.context_budget, "threads": args.threads,
        "memory_checkpoint": args.memory_checkpoint, "memory_untrained": args.memory_checkpoint is None,
        "memory_config": (engine.patch.config.to_dict() if engine is not None and engine.patch is not None
                          else args.memory_config),
        "memory_note": ("memory UNTRAINED (no --memory-checkpoint): memory/ablation rows measure the untrained patch"
                        if args.memory_checkpoint is None and any(m.uses_memory for m in modes) else ""),
        "retrieval": ", ".join(args.retrieve) if args.retrieve else "the file's crossfile_context list", "skipped_lines": dataset.problems,
        "device": str(engine.loaded.device) if engine is not None and engine.loaded is not None else args.device, "platform": platform.platform(), "wall_s": round(time.time() - started, 1),
        "processes": dist.world,
    }
    if engine is not None:
        engine.close()
    payload = write_reports(by_label, out, info, args.seed)
    print((out / "tables.md").read_text())
    print(f"wrote {out}/results.json ({len([k for k in payload if k not in ('info', 'paired_tests')])} modes)")
    return 0
