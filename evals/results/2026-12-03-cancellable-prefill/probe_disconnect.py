"""What llama-server does with a prompt whose client has gone, on the default GGUF at 2 threads:
- a client that disconnects 3 s into a 2,000-token prompt: is the prompt abandoned, or processed to the end
  (then the same prompt sent right after waits for the rest and finds it all cached)?
- a prompt evicted from the slot by another one: is it restored from the server's prompt cache in RAM?
- the whole prompt sent in 256-token prefill steps against one request (total seconds).
usage: python probe_disconnect.py | tee probe-disconnect.txt   (run alone: `cpu-slot --exclusive`)"""
import subprocess, time, httpx, torch, json
from pathlib import Path
from titans_lsp.backends.llamacpp import find_llama_server, free_port
from titans_lsp.model.gguf_serving import serving_gguf
from titans_lsp.model.loading import load_tokenizer
tok = load_tokenizer("default", None)
src = "\n".join(p.read_text() for p in sorted(Path(torch.__file__).parent.glob("nn/modules/*.py"))[:6])
ids = tok(src, add_special_tokens=False).input_ids[:2000]
port = free_port()
p = subprocess.Popen([find_llama_server(None), "-m", serving_gguf("default", None), "--port", str(port), "-c", "4096", "-t", "2", "-tb", "2",
                      "--parallel", "1", "--no-webui", "--flash-attn", "off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
url = f"http://127.0.0.1:{port}"
for _ in range(600):
    try:
        if httpx.get(url + "/health").status_code == 200: break
    except httpx.HTTPError: pass
    time.sleep(0.1)
def req(prompt, n=1, stream_cut=None):
    body = {"prompt": prompt, "n_predict": n, "cache_prompt": True, "stream": True, "top_k": 1, "return_tokens": True}
    t0 = time.perf_counter(); timings = {}
    try:
        with httpx.stream("POST", url + "/completion", json=body, timeout=httpx.Timeout(300, read=stream_cut or 300)) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    ev = json.loads(line[5:]); timings = ev.get("timings") or timings
    except httpx.ReadTimeout:
        return "cut", time.perf_counter() - t0
    return {k: round(timings.get(k, -1), 1) for k in ("cache_n", "prompt_n", "prompt_ms")}, round(time.perf_counter() - t0, 2)
print("warm-up", req(ids[:32]))
print("cut after 3s", req(ids, stream_cut=3.0))
time.sleep(1.5)
print("same prompt again", req(ids))
print("different tail", req(ids[:1000] + ids[1500:1600]))
# stepwise catch-up cost vs one shot
other = tok(src[::-1][:20000], add_special_tokens=False).input_ids[:2000]
print("reset to other", req(other[:8]))
t0 = time.perf_counter()
for k in range(256, 2001, 256):
    req(ids[:k], n=0)
req(ids, n=0)
print("stepwise 256 total s", round(time.perf_counter() - t0, 2))
print("reset", req(other[:8]))
t0 = time.perf_counter(); print("one shot", req(ids, n=0), round(time.perf_counter() - t0, 2))
p.terminate()
