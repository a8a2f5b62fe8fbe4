"""Which GGUF encoding / attention path makes llama-server fastest here: for each (weights file, flash
attention) pair, a cold 2,000-token prompt (no cache) + 32 greedy tokens at TUNE_THREADS threads (default 2), 3 alternating rounds,
against local fp32 prefill/decode on the same ids in the same run. Run under `cpu-slot --exclusive`.
usage: [TUNE_THREADS=2] [TUNE_EXTRA="flags"] tune_gguf.py OUT.json ENCODING ...   (Q4_1 = the default file as shipped; others are
re-encodings of it by titans_lsp.model.gguf_serving.reencode)"""
import json, statistics, subprocess, sys, time
from pathlib import Path

import httpx, torch
from transformers import DynamicCache

from titans_lsp.backends.llamacpp import find_llama_server, free_port
from titans_lsp.model.gguf_serving import reencode
from titans_lsp.model.loading import default_model_path, load_tokenizer
from titans_lsp.engine import CompletionEngine

THREADS = __import__("os").environ.get("TUNE_THREADS", "2")
EXTRA = __import__("os").environ.get("TUNE_EXTRA", "").split()  # more llama-server flags, e.g. "-ctk f32 -ctv f32"
files = {enc: str(default_model_path()) if enc == "Q4_1" else str(reencode(default_model_path(), enc)) for enc in sys.argv[2:]}
tok = load_tokenizer("default", None)
src = "\n".join(p.read_text() for p in sorted(Path(torch.__file__).parent.glob("nn/modules/*.py"))[:6])
ids = tok(src, add_special_tokens=False).input_ids[:2000]
binary = find_llama_server(None)
out = {"prompt_tokens": len(ids), "n_predict": 32, "threads": int(THREADS), "extra_flags": EXTRA, "runs": {}}
settings = [(name, fa) for name in files for fa in ("off", "on")]
torch.set_num_threads(int(THREADS))
engine = CompletionEngine.load("default", device="cpu", dtype="float32")
for rnd in range(3):
    for name, fa in settings:
        port = free_port()
        p = subprocess.Popen([binary, "-m", files[name], "--host", "127.0.0.1", "--port", str(port), "-c", "4096", "-t", THREADS,
                              "-tb", THREADS, "--parallel", "1", "--no-webui", "-fa", fa, *EXTRA],
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
            r = httpx.post(f"http://127.0.0.1:{port}/completion", json={"prompt": ids, "n_predict": 32, "top_k": 1, "cache_prompt": False,
                                                                         "ignore_eos": True}, timeout=300).json()
            t = r["timings"]
            key = f"{name}-fa{fa}"
            out["runs"].setdefault(key, []).append({"prompt_ms": round(t["prompt_ms"], 1), "decode_ms_per_token": round(t["predicted_per_token_ms"], 2)})
            print(key, out["runs"][key][-1], flush=True)
        finally:
            p.terminate(); p.wait()
    x = torch.tensor([ids])
    with torch.inference_mode():
        past = DynamicCache(config=engine.model.config)  # `cache=`: transformers 5.40 drops `past_key_values`
        t0 = time.perf_counter(); o = engine.model(x, cache=past, use_cache=True); pre = (time.perf_counter() - t0) * 1000
        nxt = o.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(32):
            o = engine.model(nxt, cache=past, use_cache=True); nxt = o.logits[:, -1:].argmax(-1)
        dec = (time.perf_counter() - t0) * 1000 / 32
    out["runs"].setdefault("local-fp32", []).append({"prompt_ms": round(pre, 1), "decode_ms_per_token": round(dec, 2)})
    print("local-fp32", out["runs"]["local-fp32"][-1], flush=True)
med = lambda xs: round(statistics.median(xs), 2)
out["medians"] = {k: {f: med([r[f] for r in rows]) for f in ("prompt_ms", "decode_ms_per_token")} for k, rows in out["runs"].items()}
print(json.dumps(out["medians"], indent=1))
Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + "\n")
