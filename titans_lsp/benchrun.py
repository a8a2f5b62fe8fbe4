"""Runs `titans-lsp bench` through the shared engine (the code path the server calls).

Kept apart from titans_lsp.bench (trace, replay, statistics) so a server-over-stdio backend can
reuse those parts unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import threading
import time
from pathlib import Path

from titans_lsp import bench
from titans_lsp.benchserver import replay_server
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.modes import Mode, parse_modes
from titans_lsp.model.generation import heal_prompt
from titans_lsp.paths import cache_root
from titans_lsp.retrieval.packages import PackageError, fetch_pypi

log = logging.getLogger(__name__)


def run_bench(args: argparse.Namespace) -> dict:
    from titans_lsp.cli import UserError

    try:
        modes = parse_modes(args.modes)
    except ValueError as exc:
        raise UserError(f"--modes: {exc}") from None
    engine = CompletionEngine.load(args.model, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir)
    engine.lookahead = 0 if args.no_lookup else engine.lookahead
    tokenizer = engine.tokenizer
    spec = args.package or bench.DEFAULT_PACKAGE
    try:
        root = fetch_pypi(spec, cache_root(args.cache_dir))
    except PackageError as exc:
        raise UserError(str(exc)) from exc
    traces = bench.build_trace(root, tokenizer, files=args.files, lines=args.lines, prompt_tokens=args.prompt_tokens,
                               seed=args.seed)
    index = _workspace_index(root, cache_root(args.cache_dir)) if any(m.uses_context for m in modes) else None
    notes: list[str] = []
    results: dict = {"package": spec, "files": [t.path for t in traces], "keystrokes": sum(len(t.keys) for t in traces),
                     "debounce_ms": args.debounce_ms, "think_ms": args.think_ms, "prewarm": not args.no_prewarm,
                     "model": engine.loaded.source.label, "device": str(engine.loaded.device),
                     "lookahead": engine.lookahead, "backend": "server (stdio)" if args.server else "engine (in-process)",
                     "modes": {}}

    settings_for = lambda mode: CompletionSettings(mode=mode, max_new_tokens=args.max_new_tokens)  # noqa: E731
    _warm_up(engine, settings_for(Mode.NONE))
    pooled_baseline: list[float] = []
    for mode in modes:
        workspace = Workspace(index=index)
        _progress(f"{mode}: replaying {results['keystrokes']} keystrokes")
        if args.server:
            try:
                acceptance: dict = {}
                records, server_rss = asyncio.run(replay_server(traces, root, mode.value, _serve_args(args),
                                                                args.debounce_ms / 1000.0, args.speed,
                                                                prewarm=not args.no_prewarm, think=args.think_ms / 1000.0,
                                                                events_db=getattr(args, "events_db", None), figures=acceptance))
            except RuntimeError as exc:
                raise UserError(str(exc)) from exc
            _fill_prompts(engine, records, settings_for(mode), index)
        else:
            records = _replay_mode(engine, traces, settings_for(mode), workspace, args)
            server_rss, acceptance = None, {}
        summary = bench.summarize(records)
        if acceptance:
            summary["acceptance"] = acceptance  # events_db: suggestions shown / accepted, the cost of recording them
        summary["request_records"] = bench.asdict_records(records)
        if server_rss is not None:
            summary["server_peak_rss_mb"] = server_rss
        _progress(f"{mode}: baseline for {summary['answered']} answered requests")
        base = _baseline(engine, records, mode, workspace)
        pooled_baseline += base
        summary["baseline"] = bench.percentiles(base) | {"requests": len(base)}
        results["modes"][mode.value] = summary
        log.info("%s: %s", mode, summary)

    if args.priming and any(m.primes for m in modes):
        _progress("memory with background priming vs idle")
        results["priming"] = _priming_comparison(engine, traces, settings_for(Mode.MEMORY), root, args)
    _progress("warm/cold")
    results["baseline"] = bench.percentiles(pooled_baseline) | {"requests": len(pooled_baseline)}
    results["warm_cold"] = _warm_cold(engine, traces, settings_for(Mode.NONE))
    results["peak_rss_mb"] = bench.peak_rss_mb()
    results["notes"] = notes
    return results


def _workspace_index(root: Path, cache: Path):
    """The server's workspace index (BM25) over the package."""
    from titans_lsp.retrieval.index import WorkspaceIndex

    index = WorkspaceIndex(root, state_dir=cache / "bench" / "index", dense_model=None)
    index.build()
    return index


def _progress(message: str) -> None:
    import sys

    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _serve_args(args) -> list[str]:
    serve = ["--model", args.model, "--device", args.device, "--dtype", args.dtype]
    return serve + (["--cache-dir", args.cache_dir] if args.cache_dir else [])


def _fill_prompts(engine, records, settings, index) -> None:
    """Server backend: the server does not return its prompt, so the baseline's prompt is the
    same prefix laid out fresh by the same layout code (the bench's own index for concat)."""
    for record in records:
        if record.latency_ms is None:
            continue
        request = CompletionRequest(prefix=record.prefix, path=record.path, settings=settings, doc_key="baseline")
        workspace = Workspace(index=index)
        record.prompt_ids = engine._prompt_ids(request, workspace, engine.context_for(request, workspace))


def _warm_up(engine: CompletionEngine, settings: CompletionSettings) -> None:
    """First calls pay one-off costs (token texts for healing, allocator growth): not part of the trace."""
    engine.complete(CompletionRequest(prefix="def load_config(path):\n    return ", settings=settings))


def _replay_mode(engine, traces, settings, workspace, args) -> list[bench.RequestRecord]:
    def request(path, prefix, suffix, cancel):
        return CompletionRequest(prefix=prefix, suffix=suffix, path=path, settings=settings, cancel=cancel,
                                 doc_key=path, automatic=True)

    def complete(path, prefix, suffix, cancel):
        return engine.complete(request(path, prefix, suffix, cancel), workspace)

    def prewarm(path, prefix, suffix, cancel):
        return engine.prepare(request(path, prefix, suffix, cancel), workspace)

    return bench.replay(traces, complete, debounce=args.debounce_ms / 1000.0, speed=args.speed,
                        prewarm=None if args.no_prewarm else prewarm, think=args.think_ms / 1000.0)


def _baseline(engine, records, mode: Mode, workspace: Workspace) -> list[float]:
    """Plain generate of the same prompts; memory modes read the same memory state (gates as the mode)."""
    prompts = []
    for record in records:
        if record.latency_ms is None or not record.prompt_ids:
            continue
        ids, _ = heal_prompt(engine.tokenizer, record.prompt_ids)
        prompts.append((ids, max(1, record.generated)))
    with engine.model_lock, engine._memory_context(mode, workspace):
        return bench.baseline_ms(engine.model, prompts)


def _warm_cold(engine, traces, settings) -> dict:
    """Per file: cold (fresh cache) vs warm (one keystroke after a request on the same document)
    latency on the deep prompt, and the cold request vs a plain generate of the same tokens."""
    warm, cold, plain, prompt_tokens = [], [], [], []
    for i, trace in enumerate(traces):
        if len(trace.keys) < 2:
            continue
        before, key = trace.keys[-2], trace.keys[-1]
        workspace = Workspace()
        engine.complete(CompletionRequest(prefix=before.prefix, suffix=before.suffix, settings=settings, doc_key="w"), workspace)
        w = engine.complete(CompletionRequest(prefix=key.prefix, suffix=key.suffix, settings=settings, doc_key="w"), workspace)
        c = engine.complete(CompletionRequest(prefix=key.prefix, suffix=key.suffix, settings=settings, doc_key="c"), Workspace())
        ids, _ = heal_prompt(engine.tokenizer, c.prompt_ids)
        g = bench.baseline_ms(engine.model, [(ids, c.decoded + 1)])[0]
        warm.append(w.seconds * 1000.0)
        cold.append(c.seconds * 1000.0)
        plain.append(g)
        prompt_tokens.append(c.prompt_tokens)
    if not warm:
        return {}
    med = statistics.median
    return {"prompt_tokens": prompt_tokens, "warm_ms": [round(x, 1) for x in warm], "cold_ms": [round(x, 1) for x in cold],
            "plain_generate_ms": [round(x, 1) for x in plain],
            "warm_over_cold": round(med(warm) / med(cold), 3), "cold_over_plain_generate": round(med(cold) / med(plain), 3)}


def _priming_comparison(engine, traces, settings, root: Path, args) -> dict:
    """The memory mode's trace with background priming running (looping over the package's files)
    against the same trace idle."""
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(root.rglob("*.py"))]
    idle = bench.summarize(_replay_mode(engine, traces, settings, Workspace(), args))
    workspace = Workspace()
    stop = threading.Event()
    primed = {"tokens": 0, "seconds": 0.0, "yields": 0}

    def background() -> None:
        while not stop.is_set():
            for text in texts:
                if stop.is_set():
                    return
                # as the server primes: into the working copy, published every engine.publish_every_s
                # the server's chunk size (the engine's default, as training and the eval): a
                # completion that arrives mid-chunk waits for the chunk's end
                stats = engine.prime(workspace, [text], should_yield=stop.is_set, publish=False)
                primed["tokens"] += stats.tokens
                primed["seconds"] += stats.seconds
                primed["yields"] += int(stats.stopped_early)
                time.sleep(0)  # let a waiting completion take the lock

    thread = threading.Thread(target=background, name="bench-priming", daemon=True)
    thread.start()
    try:
        busy = bench.summarize(_replay_mode(engine, traces, settings, workspace, args))
    finally:
        stop.set()
        thread.join()
    ratio = round(busy["p95_ms"] / idle["p95_ms"], 3) if busy.get("p95_ms") and idle.get("p95_ms") else None
    return {"idle": idle, "priming": busy, "p95_priming_over_idle": ratio,
            "priming_tokens_per_s": round(primed["tokens"] / primed["seconds"], 1) if primed["seconds"] else None,
            "priming_yields": primed["yields"]}


# ---- backends compared in one run (titans-lsp bench --backends local,llamacpp) --------------------------------
def run_backends_bench(args: argparse.Namespace) -> dict:
    """The same typing trace through `titans-lsp serve` on each backend, then in-process speed on the
    same prompts: per-token decode over ``args.max_new_tokens`` tokens and a cold request on a
    ``args.cold_tokens``-token prompt. Keys: ``backends.<name>.<mode>.<figure>`` and
    ``backends.<name>.speed``, so ratios come from one run."""
    from titans_lsp.backends.config import BACKEND_NAMES
    from titans_lsp.cli import UserError
    from titans_lsp.commands import backend_config
    from titans_lsp.model.loading import load_tokenizer

    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    bad = [n for n in names if n not in BACKEND_NAMES]
    if bad or not names:
        raise UserError(f"--backends: {', '.join(bad) or 'none given'}: choose from {', '.join(BACKEND_NAMES)}")
    try:
        modes = parse_modes(args.modes)
    except ValueError as exc:
        raise UserError(f"--modes: {exc}") from None
    if any(m.uses_memory for m in modes) and any(n != "local" for n in names):
        raise UserError("--backends: memory modes run on the local backend only; bench them with --modes none,concat")
    tokenizer = load_tokenizer(args.model, args.cache_dir)
    spec = args.package or bench.DEFAULT_PACKAGE
    try:
        root = fetch_pypi(spec, cache_root(args.cache_dir))
    except RuntimeError as exc:
        raise UserError(str(exc)) from exc
    traces = bench.build_trace(root, tokenizer, files=args.files, lines=args.lines, prompt_tokens=args.prompt_tokens,
                               seed=args.seed)
    results: dict = {"package": spec, "files": [t.path for t in traces], "keystrokes": sum(len(t.keys) for t in traces),
                     "debounce_ms": args.debounce_ms, "think_ms": args.think_ms, "prewarm": not args.no_prewarm,
                     "model": args.model, "max_new_tokens": args.max_new_tokens, "backends": {}}
    for name in names:
        args.backend = name
        config = backend_config(args)
        serve = _serve_args(args) + ["--backend", name] + _backend_flags(args)
        per_mode: dict = {}
        for mode in modes:
            _progress(f"{name}/{mode}: replaying {results['keystrokes']} keystrokes through the server")
            try:
                records, server_rss = asyncio.run(replay_server(traces, root, mode.value, serve, args.debounce_ms / 1000.0,
                                                                args.speed, prewarm=not args.no_prewarm,
                                                                think=args.think_ms / 1000.0))
            except RuntimeError as exc:
                raise UserError(f"{name}/{mode}: {exc}") from exc
            per_mode[mode.value] = backend_figures(records) | {"server_peak_rss_mb": server_rss}
        _progress(f"{name}: in-process speed on the same prompts")
        engine = CompletionEngine.load(args.model, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir,
                                       backend=config)
        try:
            per_mode["speed"] = _speed(engine, traces, args)
        finally:
            engine.close()
        results["backends"][name] = per_mode
    results["ratios"] = _ratios(results["backends"], [m.value for m in modes])
    results["peak_rss_mb"] = bench.peak_rss_mb()
    return results


def _backend_flags(args) -> list[str]:
    flags = []
    for flag, value in (("--backend-url", args.backend_url), ("--backend-model", args.backend_model),
                        ("--backend-threads", args.backend_threads), ("--llama-server", args.llama_server)):
        if value is not None:
            flags += [flag, str(value)]
    return flags


def backend_figures(records: list[bench.RequestRecord]) -> dict:
    """p50/p95/p99 latency, decode ms per generated token and time to the first token (latency minus
    decoding: transport, queue, context, prefill) over the answered requests."""
    answered = [r for r in records if r.latency_ms is not None]
    per_token, first = [], []
    for r in answered:
        decode_ms = (r.timings_ms or {}).get("decode_s")
        if decode_ms is None:
            continue
        first.append(r.latency_ms - decode_ms)
        tokens = r.decoded + r.accepted
        if tokens > 0:
            per_token.append(decode_ms / tokens)
    med = lambda xs: round(statistics.median(xs), 2) if xs else None  # noqa: E731
    return {**bench.percentiles([r.latency_ms for r in answered]), "ms_per_token": med(per_token),
            "first_token_ms": med(first), "answered": len(answered), "cancelled": sum(r.cancelled for r in records),
            "requests": len(records)}


def _speed(engine: CompletionEngine, traces, args) -> dict:
    """Per-token decode (no early stop, plain greedy: no prompt lookup) on each trace file's deep
    prompt, and cold requests (fresh caches) on a ``cold_tokens``-token prompt; medians."""
    engine.lookahead = 0
    _warm_up(engine, CompletionSettings(mode=Mode.NONE, max_new_tokens=4))
    settings = CompletionSettings(mode=Mode.NONE, max_new_tokens=args.max_new_tokens)
    decode, prefill = [], []
    for i, trace in enumerate(traces):
        prefix = trace.keys[-1].prefix
        c = engine.complete(CompletionRequest(prefix=prefix, settings=settings, early_stop=False, doc_key=f"speed-{i}"),
                            Workspace())
        tokens = c.decoded + c.accepted
        if tokens:
            decode.append(c.timings["decode_s"] * 1000 / tokens)
        prefill.append(c.timings["prefill_s"] * 1000)
    cold_settings = CompletionSettings(mode=Mode.NONE, max_new_tokens=args.max_new_tokens, max_seq=args.cold_tokens + args.max_new_tokens)
    cold, cold_tokens = [], []
    texts = [trace.keys[-1].prefix + trace.keys[-1].suffix for trace in traces]
    for i in range(len(traces)):
        ids = _cold_prompt_ids(engine.tokenizer, texts[i:] + texts[:i], args.cold_tokens + 200)
        prefix = engine.tokenizer.decode(ids[-args.cold_tokens - 200:])  # the window keeps the last cold_tokens
        # no document key: the prompt is left-truncated to exactly cold_tokens (the server's stable line cut
        # for a document would shorten it to ~3/4 of the window)
        c = engine.complete(CompletionRequest(prefix=f"# cold {i}\n" + prefix, settings=cold_settings), Workspace())
        cold.append(c.seconds * 1000)
        cold_tokens.append(c.prompt_tokens)
    med = lambda xs: round(statistics.median(xs), 2) if xs else None  # noqa: E731
    return {"decode_ms_per_token": med(decode), "decode_ms_per_token_all": [round(x, 2) for x in decode],
            "prefill_ms": med(prefill), "cold_request_ms": med(cold), "cold_request_ms_all": [round(x, 1) for x in cold],
            "cold_prompt_tokens": cold_tokens, "max_new_tokens": args.max_new_tokens, "lookahead": 0}


def _cold_prompt_ids(tokenizer, texts: list[str], want: int) -> list[int]:
    """Token ids of ``texts`` joined (the trace's own file first), cycled until there are ``want``: trace
    files are often shorter than --cold-tokens, and a cold figure on a shorter prompt would understate it."""
    pieces = [tokenizer(text + "\n\n", add_special_tokens=False).input_ids for text in texts if text]
    ids: list[int] = []
    while pieces and len(ids) < want:
        for piece in pieces:
            ids = piece + ids  # earlier pieces end up nearest the end, so the trace's own file stays last
            if len(ids) >= want:
                break
    return ids


def _ratios(backends: dict, modes: list[str]) -> dict:
    """Each backend against ``local`` (when both ran): latency, decode and cold-request ratios."""
    if "local" not in backends:
        return {}
    base = backends["local"]
    out = {}
    for name, figures in backends.items():
        if name == "local":
            continue
        entry = {}
        for mode in modes:
            for key in ("p50_ms", "p95_ms", "ms_per_token", "first_token_ms"):
                a, b = figures.get(mode, {}).get(key), base.get(mode, {}).get(key)
                entry[f"{mode}.{key}"] = round(a / b, 3) if a and b else None
        for key in ("decode_ms_per_token", "cold_request_ms", "prefill_ms"):
            a, b = figures["speed"].get(key), base["speed"].get(key)
            entry[f"speed.{key}"] = round(a / b, 3) if a and b else None
        out[f"{name}/local"] = entry
    return out
