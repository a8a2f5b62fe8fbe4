import random, sys, time, torch, numpy as np
torch.set_num_threads(1)
from titans_lsp.evals import memory_recall as mr
from titans_lsp.model import ntp, memory
rng = random.Random(1)
ws = [mr.make_workspace(rng, 4, 4)]
plain = ntp.ntp_step
def normalized(old, grads, lr, decay, max_norm):
    gs = [g / (g.norm() + 1e-12) for g in grads]
    return plain(old, gs, lr, decay, max_norm)
configs = [
    ("norm", {"ntp_steps": 4, "ntp_lr": 2.0, "max_update_norm": 1e9}),
    ("norm", {"ntp_steps": 16, "ntp_lr": 2.0, "max_update_norm": 1e9}),
    ("plain", {"ntp_steps": 16, "ntp_lr": 10.0, "max_update_norm": 1e9}),
    ("plain", {"ntp_steps": 8, "ntp_lr": 30.0, "max_update_norm": 1e9}),
    ("norm", {"ntp_steps": 16, "ntp_lr": 2.0, "max_update_norm": 1e9, "layers": list(range(30)), "ntp_rank": 32}),
]
for kind, c in configs:
    ntp.ntp_step = normalized if kind == "norm" else plain
    t = time.time()
    rows = mr.run_variant("ntp", ws, "default", c, 12)
    print(kind, c, "recall", sum(r["recalled"] for r in rows), "/", len(rows), "nll %.3f" % np.mean([r["value_nll"] for r in rows]),
          "%.0fs" % (time.time() - t), [r["completion"][:10] for r in rows[:3]], flush=True)
