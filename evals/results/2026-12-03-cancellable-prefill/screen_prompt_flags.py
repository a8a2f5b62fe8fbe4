"""Screen llama-server prompt-processing flags against the local engine on a cold 2,000-token prompt + 32
tokens (Q8_0 serving file, flash attention off, 2 threads), 3 alternating rounds; medians printed.
usage: python screen_prompt_flags.py OUT.json   (run alone: `cpu-slot --exclusive`)"""
import json, statistics, subprocess, sys, time
from pathlib import Path
import httpx, torch
from titans_lsp.backends.llamacpp import find_llama_server, free_port
from titans_lsp.model.gguf_serving import serving_gguf
from titans_lsp.engine import CompletionEngine, CompletionRequest, Workspace
from titans_lsp.settings import CompletionSettings
from titans_lsp.modes import Mode
SETTINGS = {"base": [], "ub1024": ["-ub", "1024"], "ub2048": ["-ub", "2048", "-b", "2048"], "ctk-q8": ["-ctk", "q8_0"]}
torch.set_num_threads(2)
engine = CompletionEngine.load("default", device="cpu", dtype="float32")
tok = engine.tokenizer
src = "\n".join(p.read_text() for p in sorted(Path(torch.__file__).parent.glob("nn/modules/*.py"))[:6])
ids = tok(src, add_special_tokens=False).input_ids[:2000]
out = {}
for rnd in range(3):
    for name, flags in SETTINGS.items():
        port = free_port()
        p = subprocess.Popen([find_llama_server(None), "-m", serving_gguf("default", None), "--port", str(port), "-c", "4096", "-t", "2", "-tb", "2",
                              "--parallel", "1", "--no-webui", "--flash-attn", "off", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/health").status_code == 200: break
                except httpx.HTTPError: pass
                time.sleep(0.1)
            httpx.post(url + "/completion", json={"prompt": ids[:64], "n_predict": 2, "cache_prompt": False}, timeout=300)
            t = httpx.post(url + "/completion", json={"prompt": ids, "n_predict": 32, "top_k": 1, "cache_prompt": False, "ignore_eos": True}, timeout=300).json()["timings"]
            out.setdefault(name, []).append((round(t["prompt_ms"]), round(t["predicted_per_token_ms"], 1)))
            print(name, out[name][-1], flush=True)
        finally:
            p.terminate(); p.wait()
    s = CompletionSettings(mode=Mode.NONE, max_new_tokens=32, max_seq=2100)
    c = engine.complete(CompletionRequest(prefix=tok.decode(ids), settings=s, early_stop=False), Workspace())
    out.setdefault("local-engine", []).append((round(c.timings["prefill_s"] * 1000), round(c.timings["decode_s"] * 1000 / max(1, c.decoded + c.accepted), 1)))
    print("local-engine", out["local-engine"][-1], c.prompt_tokens, flush=True)
print({k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v)) for k, v in out.items()})
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
