"""What a user waits for when a request cancels llama-server work on a long uncached prompt, with the
prompt sent in PREFILL_STEP-token steps (this change) and as one request (before it), alternating rounds:

  switch: a pre-warm of file A (2,000 tokens, `engine.prepare`, as at a cursor rest) is cancelled 1 s in by a
          request in file B (500 new tokens), as the server does; figure: cancel -> B's answer, ms.
  cold:   one cold 2,000-token request, 16 new tokens at most (the cost of the steps when nothing cancels).

usage: bench_cancel.py OUT.json [ROUNDS]   (run alone: `cpu-slot --exclusive`)"""
import json, statistics, sys, threading, time
from pathlib import Path

import torch

import titans_lsp.backends.llamacpp as llamacpp
from titans_lsp.backends import BackendConfig
from titans_lsp.engine import CompletionEngine, CompletionRequest, Workspace
from titans_lsp.model.generation import Cancelled
from titans_lsp.settings import CompletionSettings

ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
STEPPED, ONE_REQUEST = llamacpp.PREFILL_STEP, 10**9
engine = CompletionEngine.load("default", backend=BackendConfig(name="llamacpp", threads=2))
tok = engine.tokenizer
source = "\n".join(p.read_text() for p in sorted(Path(torch.__file__).parent.glob("nn/modules/*.py"))[:8])
ids = tok(source, add_special_tokens=False).input_ids
settings = CompletionSettings(mode="none", max_new_tokens=16, max_seq=2100)


def text(tag: str, start: int, tokens: int) -> str:
    return f"# {tag}\n" + tok.decode(ids[start:start + tokens])


def switch(tag: str) -> float:
    cancel_a = threading.Event()
    a = CompletionRequest(prefix=text(tag + "a", 0, 2000), settings=settings, doc_key=f"A{tag}", cancel=cancel_a)
    worker = threading.Thread(target=lambda: _quiet(engine.prepare, a))
    worker.start()
    time.sleep(1.0)
    started = time.perf_counter()
    cancel_a.set()
    worker.join()  # the server's one inference worker: B runs after A's pre-warm gives up
    b = CompletionRequest(prefix=text(tag + "b", 4000, 500), settings=settings, doc_key=f"B{tag}",
                          cancel=threading.Event())  # as in the server: every request can be cancelled
    engine.complete(b, Workspace())
    return (time.perf_counter() - started) * 1000


def cold(tag: str) -> float:
    c = engine.complete(CompletionRequest(prefix=text(tag + "c", 6000, 2000), settings=settings, cancel=threading.Event()),
                        Workspace())
    assert c.prompt_tokens >= 1990, c.prompt_tokens
    return c.seconds * 1000


def _quiet(fn, request):
    try:
        fn(request, Workspace())
    except Cancelled:
        pass


engine.complete(CompletionRequest(prefix="def main():\n    return ", settings=settings))  # warm-up
runs: dict = {}
for rnd in range(ROUNDS):
    for name, step in (("stepped", STEPPED), ("one_request", ONE_REQUEST)):
        llamacpp.PREFILL_STEP = step
        tag = f"{rnd}{name}{time.monotonic_ns()}"
        row = {"switch_ms": round(switch(tag)), "cold_request_ms": round(cold(tag))}
        runs.setdefault(name, []).append(row)
        print(name, row, flush=True)
medians = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for name, rows in runs.items()}
out = {"prefill_step": STEPPED, "threads": 2, "rounds": ROUNDS, "runs": runs, "medians": medians,
       "ratios_stepped_over_one_request": {k: round(medians["stepped"][k] / medians["one_request"][k], 3) for k in medians["stepped"]}}
print(json.dumps(out["medians"]), out["ratios_stepped_over_one_request"])
Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + "\n")
engine.close()
