import random, sys, time, torch, numpy as np
torch.set_num_threads(1)
from titans_lsp.evals import memory_recall as mr
rng = random.Random(1)
ws = [mr.make_workspace(rng, 4, 4)]
configs = [("ablation", {}), ("concat", {})] + [("ntp", c) for c in [
    {"ntp_steps": 1, "ntp_lr": 1.0, "max_update_norm": 1e9},
    {"ntp_steps": 1, "ntp_lr": 10.0, "max_update_norm": 1e9},
    {"ntp_steps": 1, "ntp_lr": 100.0, "max_update_norm": 1e9},
    {"ntp_steps": 4, "ntp_lr": 1.0, "max_update_norm": 1e9},
    {"ntp_steps": 4, "ntp_lr": 10.0, "max_update_norm": 1e9},
    {"ntp_steps": 8, "ntp_lr": 10.0, "max_update_norm": 1e9, "ntp_rank": 64},
]]
for v, c in configs:
    t = time.time()
    rows = mr.run_variant(v, ws, "default", c, 12)
    print(v, c, "recall", sum(r["recalled"] for r in rows), "/", len(rows), "nll %.3f" % np.mean([r["value_nll"] for r in rows]),
          "%.0fs" % (time.time() - t), [r["completion"][:10] for r in rows[:3]], flush=True)
