"""Does priming in another thread slow later decoding in memory mode? In-process, no server."""
import sys, threading, time, statistics, inspect
import torch
from titans_lsp.engine import CompletionEngine, CompletionRequest, Workspace
from titans_lsp.settings import CompletionSettings
import json.decoder as jd, json.encoder as je, argparse as ap

eng = CompletionEngine.load("default", device="cpu")
src = inspect.getsource(ap)
prefix = src[:6000]
prime_text = inspect.getsource(jd) + inspect.getsource(je)

def per_token(mode, ws, rounds=3):
    out = []
    for _ in range(rounds):
        req = CompletionRequest(prefix=prefix, path="x.py", settings=CompletionSettings(mode=mode, max_new_tokens=16), early_stop=False)
        c = eng.complete(req, ws)
        out.append(1000 * c.timings["decode_s"] / max(1, c.decoded))
    return statistics.median(out)

def run_in_thread(fn):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", fn())); t.start(); t.join(); return box["r"]

ws = Workspace()
print("threads", torch.get_num_threads(), flush=True)
res = {}
res["ablation main"] = per_token("ablation", ws)
res["memory fresh main"] = per_token("memory", ws)
run_in_thread(lambda: eng.prime(ws, [prime_text]))
res["memory primed-in-bg main"] = per_token("memory", ws)
res["ablation after bg prime main"] = per_token("ablation", ws)
res["memory primed-in-bg, decode in 3rd thread"] = run_in_thread(lambda: per_token("memory", ws))
res["ablation decode in 3rd thread"] = run_in_thread(lambda: per_token("ablation", ws))
# keep a background thread alive that primed and now waits (like the server's worker)
ev = threading.Event()
def bg_worker():
    eng.prime(ws, [prime_text[:3000]])
    ev.wait()
t = threading.Thread(target=bg_worker, daemon=True); t.start(); time.sleep(3)
res["memory, bg primer alive+idle, decode 3rd thread"] = run_in_thread(lambda: per_token("memory", ws))
res["ablation, bg primer alive+idle, decode 3rd thread"] = run_in_thread(lambda: per_token("ablation", ws))
for k, v in res.items(): print(f"{v:7.1f} ms/token  {k}", flush=True)
