"""Engine cold request vs the bare decoding loop on the same prompt ids."""
import statistics, time, torch, transformers, os
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.model.generation import greedy_generate
torch.set_num_threads(1)
engine = CompletionEngine.load("default", device="cpu")
tok = engine.tokenizer
src = open(os.path.join(os.path.dirname(transformers.__file__), "models/llama/modeling_llama.py")).read()
cut = len(tok.decode(tok(src, add_special_tokens=False).input_ids[:1500]))
prefix = src[:cut]
prefix = prefix[:prefix.rfind("\n") + 12]  # mid-line
settings = CompletionSettings(mode="none", max_new_tokens=48)
def run_engine(heal, doc):
    ws = Workspace()
    req = CompletionRequest(prefix=prefix, settings=settings, early_stop=False, heal=heal, doc_key=doc)
    c = engine.complete(req, ws)
    return c
c = run_engine(True, None)
ids = c.prompt_ids
print("prompt tokens", len(ids), "timings", {k: round(v, 3) for k, v in c.timings.items()})
variants = {
    "loop (same ids, la8)": lambda: greedy_generate(engine.model, tok, ids, 48, lookahead=engine.lookahead, stop=None),
    "engine heal, eval layout": lambda: run_engine(True, None),
    "engine no heal": lambda: run_engine(False, None),
    "engine heal, server layout": lambda: run_engine(True, "file:///x.py"),
}
times = {k: [] for k in variants}
for rep in range(2):
    for k, f in variants.items():
        t = time.perf_counter(); r = f(); times[k].append(time.perf_counter() - t)
        extra = {kk: round(v, 3) for kk, v in r.timings.items()} if hasattr(r, "timings") else {"decoded": r.decoded}
        print(rep, k, round(times[k][-1], 2), extra, flush=True)
base = statistics.median(times["loop (same ids, la8)"])
for k, v in times.items():
    print(f"{k:28s} median {statistics.median(v):.2f}s ratio {statistics.median(v)/base:.2f}")
