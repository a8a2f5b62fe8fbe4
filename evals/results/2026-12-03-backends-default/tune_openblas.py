"""Cold 2,000-token prompt + 32 tokens: llama-server built with and without OpenBLAS (Q8_0, started as the backend starts it: flash attention off),
and the engine's local path (CompletionEngine, chunked prefill) on the same text; 3 alternating rounds."""
import json, statistics, sys, time
from pathlib import Path
import httpx, torch
from titans_lsp.backends.llamacpp import LlamaServerProcess, find_llama_server
from titans_lsp.model.gguf_serving import reencode
from titans_lsp.model.loading import default_model_path
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.modes import Mode

bins = {"plain": find_llama_server(None), "openblas": __import__("os").environ["OPENBLAS_LLAMA_SERVER"]}
gguf = str(reencode(default_model_path(), "Q8_0"))
torch.set_num_threads(2)
engine = CompletionEngine.load("default", device="cpu", dtype="float32")
tok = engine.tokenizer
src = "\n".join(p.read_text() for p in sorted(Path(torch.__file__).parent.glob("nn/modules/*.py"))[:6])
ids = tok(src, add_special_tokens=False).input_ids[:2000]
out = {"runs": {}}
for rnd in range(3):
    for name, binary in bins.items():
        server = LlamaServerProcess(binary, gguf, threads=2, parallel=1, log_path=None)  # the served flags
        url = server.start()
        try:
            httpx.post(f"{url}/completion", json={"prompt": ids[:64], "n_predict": 2, "cache_prompt": False}, timeout=300)
            t0 = time.perf_counter()
            r = httpx.post(f"{url}/completion", json={"prompt": ids, "n_predict": 32, "top_k": 1, "cache_prompt": False,
                                                                         "ignore_eos": True}, timeout=300).json()
            wall = (time.perf_counter() - t0) * 1000
            t = r["timings"]
            row = {"prompt_ms": round(t["prompt_ms"], 1), "decode_ms_per_token": round(t["predicted_per_token_ms"], 2), "request_ms": round(wall, 1)}
            out["runs"].setdefault(name, []).append(row); print(name, row, flush=True)
        finally:
            server.stop()
    s = CompletionSettings(mode=Mode.NONE, max_new_tokens=32, max_seq=2032)
    c = engine.complete(CompletionRequest(prefix=f"# round {rnd}\n" + tok.decode(ids[:1990]), settings=s, early_stop=False), Workspace())
    row = {"prompt_ms": round(c.timings["prefill_s"] * 1000, 1), "decode_ms_per_token": round(c.timings["decode_s"] * 1000 / max(1, c.decoded + c.accepted), 2),
           "request_ms": round(c.seconds * 1000, 1), "prompt_tokens": c.prompt_tokens}
    out["runs"].setdefault("local-engine", []).append(row); print("local-engine", row, flush=True)
out["medians"] = {k: {f: round(statistics.median(r[f] for r in rows), 1) for f in ("prompt_ms", "decode_ms_per_token", "request_ms")} for k, rows in out["runs"].items()}
print(json.dumps(out["medians"], indent=1))
Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + "\n")
