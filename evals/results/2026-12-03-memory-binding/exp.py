"""Scratch: ntp recall tuning. usage: exp.py SEED WORKSPACES JSON_CONFIG [joined] [topk_frac] [passes]"""
import json, random, sys, time
import torch, torch.nn.functional as F
from titans_lsp.evals import memory_recall as mr
from titans_lsp.model import ntp

seed, nws, cfg = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
joined = len(sys.argv) > 4 and sys.argv[4] == "joined"
topk = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
passes = int(sys.argv[6]) if len(sys.argv) > 6 else 1
torch.set_num_threads(1)
if topk < 1.0:
    def surprise_loss(logits, ids):
        per = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        k = max(1, int(per.numel() * topk))
        return per.topk(k).values.mean()
    ntp.next_token_loss = surprise_loss
rng = random.Random(seed)
workspaces = [mr.make_workspace(rng, 4, 4) for _ in range(nws)]
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.modes import Mode
from titans_lsp.model.memory import MemoryConfig
engine = CompletionEngine.load("default", memory_config=MemoryConfig(update_rule="ntp", **cfg))
k = n = wrong = 0; nll = []; t0 = time.time(); bypos = [[0, 0] for _ in range(4)]
for files in workspaces:
    ws = Workspace(memory=engine.new_memory_state())
    for _ in range(passes):
        if joined:
            engine.prime(ws, ["\n\n".join(f.text for f in files)], chunk_tokens=4096)
        else:
            for f in files:
                engine.prime(ws, [f.text])
    vals = [fa.value for f in files for fa in f.facts]
    for f in files:
        for fact in f.facts:
            req = CompletionRequest(prefix=fact.prompt(), path=f"test_{f.module}.py",
                                    settings=CompletionSettings(mode=Mode("memory"), max_new_tokens=12), early_stop=False)
            c = engine.complete(req, ws)
            ok = fact.recalled(c.raw); k += ok; n += 1; bypos[fact.position][0] += ok; bypos[fact.position][1] += 1
            wrong += (not ok) and any(c.raw.startswith(v) for v in vals if v != fact.value)
            nll.append(mr.value_nll(engine, c.prompt_ids, fact, Mode("memory"), ws))
print(json.dumps({"cfg": cfg, "joined": joined, "topk": topk, "passes": passes, "recalled": f"{k}/{n}", "wrong": wrong,
                  "nll": round(sum(nll) / len(nll), 3), "bypos": bypos, "s": round(time.time() - t0, 1)}), flush=True)
