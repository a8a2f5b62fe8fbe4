"""Where does the engine's cold request lose against a plain generate? Same prompt, alternating runs."""
import statistics, time, torch, transformers, os
from titans_lsp.model.loading import load_model
from titans_lsp.model.generation import greedy_generate
torch.set_num_threads(1)
lm = load_model("default", device="cpu")
src = open(os.path.join(os.path.dirname(transformers.__file__), "models/llama/modeling_llama.py")).read()
ids = lm.tokenizer(src, add_special_tokens=False).input_ids[:1500]
N = 48
def plain():
    out = lm.model.generate(torch.tensor([ids]), max_new_tokens=N, min_new_tokens=N, do_sample=False, pad_token_id=0)
    return out.shape[1] - len(ids)
def ours(lookahead, chunk):
    r = greedy_generate(lm.model, lm.tokenizer, ids, N, lookahead=lookahead, prefill_chunk=chunk, stop=None)
    return r.decoded
variants = {"generate": plain, "ours la0 c256": lambda: ours(0, 256), "ours la8 c256": lambda: ours(8, 256),
            "ours la0 c4096": lambda: ours(0, 4096), "ours la8 c4096": lambda: ours(8, 4096)}
times = {k: [] for k in variants}
for rep in range(2):
    for k, f in variants.items():
        t = time.perf_counter(); n = f(); times[k].append(time.perf_counter() - t)
        print(rep, k, round(times[k][-1], 2), "s", n, "tokens", flush=True)
base = statistics.median(times["generate"])
for k, v in times.items():
    print(f"{k:16s} median {statistics.median(v):.2f}s  ratio {statistics.median(v)/base:.2f}")
