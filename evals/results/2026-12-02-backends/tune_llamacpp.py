"""Pick llama-server's threads (-t/-tb) and micro-batch (-ub) for this machine: for each setting, a cold
2,000-token prompt (no cache) and 32 greedy tokens, 3 rounds, against local fp32 prefill/decode on the
same ids in the same run. Run under `cpu-slot --exclusive`. Prints and writes JSON (argv[1])."""
import json, statistics, subprocess, sys, time
from pathlib import Path

import httpx, torch

from titans_lsp.backends.llamacpp import find_llama_server, free_port
from titans_lsp.model.loading import resolve_model, load_tokenizer
from titans_lsp.engine import CompletionEngine

gguf = resolve_model("default").location
tok = load_tokenizer("default", None)
src = "\n".join(p.read_text() for p in sorted(Path(torch.__file__).parent.glob("nn/modules/*.py"))[:6])
ids = tok(src, add_special_tokens=False).input_ids[:2000]
binary = find_llama_server(None)
out = {"prompt_tokens": len(ids), "n_predict": 32, "llamacpp": {}, "local": {}}
settings = [(2, 512), (2, 2048), (2, 128), (1, 512)]
for rnd in range(3):
    for threads, ub in settings:
        port = free_port()
        p = subprocess.Popen([binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-c", "4096", "-t", str(threads),
                              "-tb", str(threads), "-b", "2048", "-ub", str(ub), "--parallel", "1", "--no-webui"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            httpx.post(f"http://127.0.0.1:{port}/completion", json={"prompt": ids[:64], "n_predict": 2, "cache_prompt": False}, timeout=300)
            t0 = time.perf_counter()
            r = httpx.post(f"http://127.0.0.1:{port}/completion", json={"prompt": ids, "n_predict": 32, "top_k": 1, "cache_prompt": False,
                                                                         "ignore_eos": True}, timeout=300).json()
            wall = (time.perf_counter() - t0) * 1000
            t = r["timings"]
            key = f"t{threads}-ub{ub}"
            out["llamacpp"].setdefault(key, []).append({"prompt_ms": round(t["prompt_ms"], 1), "decode_ms_per_token": round(t["predicted_per_token_ms"], 2),
                                                        "wall_ms": round(wall, 1)})
            print(key, out["llamacpp"][key][-1], flush=True)
        finally:
            p.terminate(); p.wait()
    # local fp32 on the same ids (2 torch threads), same round
    torch.set_num_threads(2)
    if rnd == 0:
        engine = CompletionEngine.load("default", device="cpu", dtype="float32")
        model = engine.model
    x = torch.tensor([ids])
    with torch.inference_mode():
        t0 = time.perf_counter(); o = model(x, use_cache=True); pre = (time.perf_counter() - t0) * 1000
        past, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(32):
            o = model(nxt, past_key_values=past, use_cache=True); past, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
        dec = (time.perf_counter() - t0) * 1000 / 32
    out["local"].setdefault("fp32-t2", []).append({"prompt_ms": round(pre, 1), "decode_ms_per_token": round(dec, 2)})
    print("local", out["local"]["fp32-t2"][-1], flush=True)
med = lambda xs: round(statistics.median(xs), 2)
out["medians"] = {f"{b}/{k}": {f: med([r[f] for r in rows]) for f in ("prompt_ms", "decode_ms_per_token")}
                  for b in ("llamacpp", "local") for k, rows in out[b].items()}
print(json.dumps(out["medians"], indent=1))
Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + "\n")
