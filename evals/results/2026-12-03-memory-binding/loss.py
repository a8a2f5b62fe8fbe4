import json, random, sys, torch
from titans_lsp.evals import memory_recall as mr
from titans_lsp.model import ntp
torch.set_num_threads(1)
cfg = json.loads(sys.argv[1]); losses = []
orig = ntp.next_token_loss
def logged(logits, ids):
    l = orig(logits, ids); losses.append(round(float(l), 3)); return l
ntp.next_token_loss = logged
files = mr.make_workspace(random.Random(1), 4, 4)
from titans_lsp.engine import CompletionEngine, Workspace
from titans_lsp.model.memory import MemoryConfig
engine = CompletionEngine.load("default", memory_config=MemoryConfig(update_rule="ntp", **cfg))
ws = Workspace(memory=engine.new_memory_state())
st = engine.prime(ws, ["\n\n".join(f.text for f in files)], chunk_tokens=4096)
print(cfg.get("ntp_lr"), st.tokens, losses[::4], losses[-1], flush=True)
