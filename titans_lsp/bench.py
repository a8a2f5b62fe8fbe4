"""Completion latency benchmark: replay a typing trace, per mode, against a no-reuse baseline.

The trace is built from real files of a pinned PyPI package (downloaded once with
``pip download --no-deps`` into a cache outside the repository): in each chosen file a user
retypes a few lines deep in the file, one character at a time, with human-like gaps. The editor
side is modelled like Neovim/VS Code: on opening the file the cursor comes to rest where the typing
starts (the editor sends ``titans/cursor``, so the server pre-warms that prompt) and the user
thinks for ``think`` seconds; after each keystroke the editor waits ``debounce`` seconds; if no
key follows it sends an Automatic inline-completion request; a keystroke arriving before the
answer cancels it (and a pre-warm still running). One worker answers requests in order, as the
server does.

Baseline, measured in the same run: the same final prompts (as the engine laid them out)
through a plain ``model.generate`` with no cache reuse, generating the same number of tokens.
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_PACKAGE = "requests==2.32.3"


# ---- trace ------------------------------------------------------------------------------------
@dataclass
class Keystroke:
    at: float  # seconds from the start of the file's session
    prefix: str  # document text before the cursor after this key
    suffix: str  # document text after the cursor


@dataclass
class FileTrace:
    path: str  # relative to the package root
    keys: list[Keystroke]


def build_trace(root: Path, tokenizer, files: int = 3, lines: int = 2, prompt_tokens: int = 1500,
                seed: int = 0) -> list[FileTrace]:
    """In ``files`` of the package's largest .py files, retype ``lines`` lines that start about
    ``prompt_tokens`` tokens into the file (or as deep as the file allows)."""
    rng = random.Random(seed)
    candidates = sorted((p for p in root.rglob("*.py") if p.stat().st_size > 4000), key=lambda p: (-p.stat().st_size, str(p)))
    traces = []
    for path in candidates[: files]:
        text = path.read_text(encoding="utf-8", errors="replace")
        line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        char_at = ids[min(prompt_tokens, len(ids) - 1)][0]
        # The first non-trivial line at or after that depth.
        index = next((i for i, s in enumerate(line_starts) if s >= char_at), len(line_starts) - lines - 1)
        while index < len(line_starts) - lines - 1 and len(text[line_starts[index]:line_starts[index + 1]].strip()) < 16:
            index += 1
        begin, end = line_starts[index], line_starts[min(index + lines, len(line_starts) - 1)]
        typed = text[begin:end].rstrip("\n")
        keys, clock = [], 0.0
        for n in range(1, len(typed) + 1):
            ch = typed[n - 1]
            # Human-like gaps: ~130 ms within words, longer after punctuation, some thinking pauses.
            gap = rng.lognormvariate(-2.0, 0.35)
            if ch in " .(:,\n":
                gap += rng.uniform(0.05, 0.25)
            if rng.random() < 0.08 or ch == "\n":
                gap += rng.uniform(0.4, 1.5)
            clock += gap
            keys.append(Keystroke(at=clock, prefix=text[:begin + n], suffix=text[begin + n:]))
        traces.append(FileTrace(path=str(path.relative_to(root)), keys=keys))
    return traces


# ---- replay -----------------------------------------------------------------------------------
@dataclass
class RequestRecord:
    sent: float
    finished: float | None = None
    cancelled: bool = False
    prefilled: int = 0
    reused: int = 0
    decoded: int = 0
    generated: int = 0
    accepted: int = 0
    prompt_ids: list[int] = field(default_factory=list)
    path: str = ""  # the trace file and text before the cursor (to rebuild the prompt for the baseline)
    prefix: str = ""
    first_in_file: bool = False  # the file's first request (cold unless pre-warmed)
    engine_ms: float | None = None  # the engine's own time for it (latency minus this: server and transport)
    timings_ms: dict = field(default_factory=dict)  # the engine's phases: context, wait (model lock), prefill, decode
    future: object | None = field(default=None, repr=False)  # server backend: the pending response

    @property
    def latency_ms(self) -> float | None:
        return None if self.finished is None or self.cancelled else (self.finished - self.sent) * 1000.0


Complete = Callable[[str, str, str, threading.Event], "object"]  # (path, prefix, suffix, cancel) -> Completion
Prewarm = Callable[[str, str, str, threading.Event], "object"]  # the same, pre-warming only (engine.prepare)


def start_of(trace: FileTrace) -> tuple[str, str]:
    """(prefix, suffix) at the cursor before the trace's first keystroke: where the typing starts."""
    first = trace.keys[0]
    return first.prefix[:-1], first.prefix[-1:] + first.suffix


def replay(traces: list[FileTrace], complete: Complete, debounce: float = 0.15, speed: float = 1.0,
           prewarm: Prewarm | None = None, think: float = 0.0) -> list[RequestRecord]:
    """Replay keystrokes in real time (``speed`` > 1 replays faster); returns one record per request sent.
    With ``prewarm``, each file starts with a pre-warm at the typing position and ``think`` seconds
    before the first key (which cancels the pre-warm if it is still running)."""
    from titans_lsp.engine import Cancelled

    records: list[RequestRecord] = []
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-worker")

    def run(record: RequestRecord, path: str, key: Keystroke, cancel: threading.Event) -> None:
        try:
            completion = complete(path, key.prefix, key.suffix, cancel)
        except Cancelled:
            record.cancelled = True
            return
        record.finished = time.perf_counter()
        record.cancelled = cancel.is_set()  # answered after a newer keystroke: the editor drops it
        record.engine_ms = completion.seconds * 1000.0
        record.timings_ms = {k: round(v * 1000.0, 1) for k, v in getattr(completion, "timings", {}).items()}
        record.prefilled, record.reused, record.decoded = completion.prefilled, completion.reused, completion.decoded
        record.generated = completion.decoded + 1
        record.accepted = getattr(completion, "accepted", 0)
        record.prompt_ids = list(getattr(completion, "prompt_ids", []))

    def warm(path: str, prefix: str, suffix: str, cancel: threading.Event) -> None:
        try:
            prewarm(path, prefix, suffix, cancel)
        except Cancelled:
            pass

    try:
        for trace in traces:
            pending: threading.Event | None = None
            if prewarm is not None:
                pending = threading.Event()
                worker.submit(warm, trace.path, *start_of(trace), pending)
            t0 = time.perf_counter() + think / speed
            first = True
            for i, key in enumerate(trace.keys):
                _sleep_until(t0 + key.at / speed)
                if pending is not None:
                    pending.set()  # the user typed on: the editor cancels the open request
                    pending = None
                next_at = trace.keys[i + 1].at if i + 1 < len(trace.keys) else key.at + 10.0
                if next_at - key.at > debounce:
                    _sleep_until(t0 + (key.at + debounce) / speed)
                    record = RequestRecord(sent=time.perf_counter(), path=trace.path, prefix=key.prefix,
                                           first_in_file=first)
                    first = False
                    pending = threading.Event()
                    records.append(record)
                    worker.submit(run, record, trace.path, key, pending)
            worker.submit(lambda: None).result()  # let the last request finish before the next file
    finally:
        worker.shutdown(wait=True)
    return records


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


# ---- baseline and statistics ------------------------------------------------------------------
def baseline_ms(model, prompts: list[tuple[list[int], int]]) -> list[float]:
    """Time a plain ``model.generate`` (fresh cache, greedy) of ``n`` tokens after each prompt."""
    import torch

    device = next(model.parameters()).device
    times = []
    for ids, n in prompts:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=torch.tensor([ids], device=device), attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                           max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    ordered = sorted(values)

    def pick(q: float) -> float:  # nearest-rank percentile
        return round(ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))], 1)

    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99)}


def summarize(records: list[RequestRecord]) -> dict:
    answered = [r for r in records if r.latency_ms is not None]
    mean = lambda xs: round(statistics.fmean(xs), 1) if xs else None  # noqa: E731
    timed = [r for r in answered if r.engine_ms is not None]
    overhead = [r.latency_ms - r.engine_ms for r in timed]
    return {
        **percentiles([r.latency_ms for r in answered]),
        "first_in_file_ms": [round(r.latency_ms, 1) for r in answered if r.first_in_file],
        "later_requests": percentiles([r.latency_ms for r in answered if not r.first_in_file]),
        # Request-to-answer time outside the engine: JSON-RPC, the event loop, the inference queue.
        "overhead_p50_ms": round(statistics.median(overhead), 1) if overhead else None,
        "overhead_share_p50": round(statistics.median(o / r.latency_ms for o, r in zip(overhead, timed)), 3) if timed else None,
        "requests": len(records), "answered": len(answered), "cancelled": sum(r.cancelled for r in records),
        "prefilled_per_request": mean([r.prefilled for r in answered]),
        "reused_per_request": mean([r.reused for r in answered]),
        "decoded_per_request": mean([r.decoded for r in answered]),
        "accepted_guesses_per_request": mean([r.accepted for r in answered]),
        "prompt_tokens_per_request": mean([len(r.prompt_ids) for r in answered]),
    }


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def write_json(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def format_table(results: dict) -> str:
    """One row per mode (and its same-run baseline), for the terminal and the committed note."""
    header = ("mode", "p50_ms", "p95_ms", "p99_ms", "base_p50", "base_p95", "p50/base", "first_ms", "overhead_ms",
              "answered", "cancelled", "prefill/req", "reused/req", "decoded/req", "accepted/req")
    rows = [header]
    for mode, r in results["modes"].items():
        b = r.get("baseline", {})
        ratio = (round(r["p50_ms"] / b["p50_ms"], 2) if r.get("p50_ms") and b.get("p50_ms") else None)
        first = r.get("first_in_file_ms") or []
        rows.append((mode, r["p50_ms"], r["p95_ms"], r["p99_ms"], b.get("p50_ms"), b.get("p95_ms"), ratio,
                     max(first) if first else None, r.get("overhead_p50_ms"), r["answered"], r["cancelled"], r["prefilled_per_request"], r["reused_per_request"],
                     r["decoded_per_request"], r["accepted_guesses_per_request"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(v).rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def asdict_records(records: list[RequestRecord]) -> list[dict]:
    """Per-request rows for the JSON output (times relative to the first request, in ms)."""
    t0 = min((r.sent for r in records), default=0.0)
    skip = ("prompt_ids", "prefix", "future", "sent", "finished")
    return [{"sent_ms": round((r.sent - t0) * 1000.0, 1), "latency_ms": r.latency_ms and round(r.latency_ms, 1)}
            | {f.name: getattr(r, f.name) for f in fields(r) if f.name not in skip} for r in records]
