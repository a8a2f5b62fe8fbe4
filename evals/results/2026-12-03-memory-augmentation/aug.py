"""Knowledge augmentation at priming time for the ntp memory (issue 20).

usage: aug.py SEED WORKSPACES CFG_JSON FORMS VARIANTS [REPS]

  FORMS    comma list from qual,import,use,dict,bare,leak, or "none" (original text only).
           Each definition found in a primed file (tree-sitter via retrieval.chunking.definition_chunks,
           value via Python's ast) is written once per form; one short sequence per (form, file, rep),
           its facts in a shuffled order, so no sequence holds the same fact twice (no in-context copy).
           "leak" is the recall test's own template (the leak control), never in a tuned row.
  VARIANTS comma list from ntp,ablation,concat (ablation and concat do not prime).
  REPS     sequences per (form, file), each with its own shuffle (default 1).

Priming (ntp variant): ntp_steps Adam steps (ChunkAdam, moments restarted per workspace, as the product's
_write_ntp) on the mean next-token loss over all tokens of (a) the workspace's files joined, one sequence,
and (b) the augmented sequences, batched with padding (pads masked out of the loss and attention); each
step's change clipped to max_update_norm. The cost ratio: priming wall time / one plain forward (no grad,
no memory) over the original joined tokens, both in this process (median of 3 forwards).
"""
import ast
import json
import os
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from titans_lsp.evals import memory_recall as mr
from titans_lsp.model import ntp
from titans_lsp.retrieval.chunking import definition_chunks

torch.set_num_threads(1)
seed, nws, cfg = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
forms = [] if sys.argv[4] == "none" else sys.argv[4].split(",")
variants = sys.argv[5].split(",")
reps = int(sys.argv[6]) if len(sys.argv) > 6 else 1
DIAG = True


def definitions(text: str) -> list[tuple[str, str]]:
    """(name, value source) of the file's top-level assignments to a literal."""
    out = []
    for chunk in definition_chunks(text):
        try:
            node = ast.parse(chunk.text).body[0]
        except (SyntaxError, IndexError):
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            out.append((chunk.name, ast.get_source_segment(chunk.text, node.value)))
    return out


def augment(module: str, defs: list[tuple[str, str]], rng: random.Random) -> list[str]:
    seqs = []
    for form in forms:
        for _ in range(reps):
            d = defs[:]
            rng.shuffle(d)
            if form == "qual":
                seqs.append(f"import {module}\n\n" + "".join(f"{module}.{n} = {v}\n" for n, v in d))
            elif form == "import":
                seqs.append("".join(f"from {module} import {n}  # {v}\n" for n, v in d))
            elif form == "use":
                seqs.append(f"import {module}\n\n" + "".join(f"x = {module}.{n}  # == {v}\n" for n, v in d))
            elif form == "dict":
                seqs.append("CONFIG = {\n" + "".join(f'    "{n}": {v},\n' for n, v in d) + "}\n")
            elif form == "bare":
                seqs.append("".join(f"{n} = {v}\n" for n, v in d))
            elif form == "leak":  # the recall test's prompt template, completed: the leak control
                seqs.append(f"import {module}\n" + "".join(f"\n\ndef test_{n.lower()}():\n    assert {module}.{n} == {v}\n"
                                                          for n, v in d))
            else:
                raise SystemExit(f"unknown form {form}")
    return seqs


def prime_aug(engine, state, orig_text: str, seqs: list[str]) -> dict:
    patch = engine.ensure_memory()
    c = patch.config
    tok = engine.tokenizer
    orig = torch.tensor([tok(orig_text, add_special_tokens=False).input_ids])
    batch = None
    if seqs:
        ids = [tok(s, add_special_tokens=False).input_ids for s in seqs]
        width = max(map(len, ids))
        inp = torch.zeros(len(ids), width, dtype=torch.long)
        mask = torch.zeros(len(ids), width, dtype=torch.long)
        labels = torch.full((len(ids), width), -100, dtype=torch.long)
        for r, row in enumerate(ids):
            inp[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
            labels[r, :len(row)] = torch.tensor(row)
        batch = (inp, mask, labels)
    n_tok = orig.shape[1] - 1 + (int((batch[2][:, 1:] != -100).sum()) if batch else 0)
    layers = patch.layers
    adam = ntp.ChunkAdam()
    losses = []
    start = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(c.ntp_steps):
            old = [state.weights[i][0] for i in layers]
            leaves = [b.detach().clone().requires_grad_(True) for b in old]
            for i, leaf in zip(layers, leaves):
                state.weights[i] = [leaf]
            try:
                with patch.activate(state, gates="open", write=True):
                    logits = engine.model(input_ids=orig, use_cache=False).logits
                    total = F.cross_entropy(logits[0, :-1].float(), orig[0, 1:], reduction="sum")
                    if batch:
                        inp, mask, labels = batch
                        logits = engine.model(input_ids=inp, attention_mask=mask, use_cache=False).logits
                        total = total + F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                        labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
                    loss = total / n_tok
                grads = torch.autograd.grad(loss, leaves)
            finally:
                for i, b in zip(layers, old):
                    state.weights[i] = [b]
            losses.append(round(float(loss.detach()), 4))
            print(f"step {len(losses)} loss {losses[-1]} {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
            new, _norm = ntp.ntp_step([b.detach() for b in old], adam.direction([g.detach() for g in grads]),
                                      c.ntp_lr, c.ntp_decay, c.max_update_norm, c.ntp_normalize)
            for i, b in zip(layers, new):
                state.weights[i] = [b]
    prime_s = time.perf_counter() - start
    state.updates += 1  # the read hook skips a memory with no updates (an empty memory is the base model)
    state.tokens_written += n_tok + 1
    fwd = []
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            engine.model(input_ids=orig, use_cache=False)
            fwd.append(time.perf_counter() - t)
    return {"orig_tokens": orig.shape[1], "aug_seqs": len(seqs), "aug_tokens": n_tok - orig.shape[1] + 1,
            "padded_aug_tokens": int(batch[0].numel()) if batch else 0, "prime_s": round(prime_s, 2),
            "fwd_s": round(statistics.median(fwd), 3), "ratio": round(prime_s / statistics.median(fwd), 1),
            "loss": losses[::4] + [losses[-1]]}


rng = random.Random(seed)
workspaces = [mr.make_workspace(rng, 4, 4) for _ in range(nws)]
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.model.memory import MemoryConfig
from titans_lsp.modes import Mode
from titans_lsp.retrieval.index import Snippet

engine = CompletionEngine.load("default", memory_config=MemoryConfig(update_rule="ntp", **cfg))
engine.ensure_memory()
for variant in variants:
    mode = Mode({"ntp": "memory"}.get(variant, variant))
    k = n = ink = wrong = 0
    nll, costs = [], []
    t0 = time.time()
    for w, files in enumerate(workspaces):
        ws = Workspace(memory=engine.new_memory_state())
        if variant == "ntp":
            arng = random.Random(1000 * seed + w)
            seqs = [s for f in files for s in augment(f.module, definitions(f.text), arng)]
            arng.shuffle(seqs)
            if w == 0 and seqs:
                print("example augmented sequence:\n" + seqs[0], flush=True)
            costs.append(prime_aug(engine, ws.memory, "\n\n".join(f.text for f in files), seqs))
            print(json.dumps(costs[-1]), flush=True)
        vals = [fa.value for f in files for fa in f.facts]
        for f in files:
            block = [Snippet(filename=f"{f.module}.py", text=f.text)] if variant == "concat" else []
            for fact in f.facts:
                req = CompletionRequest(prefix=fact.prompt(), path=f"test_{f.module}.py", snippets=block,
                                        settings=CompletionSettings(mode=mode, max_new_tokens=12), early_stop=False)
                c = engine.complete(req, ws)
                ok = fact.recalled(c.raw)
                k += ok
                n += 1
                wrong += (not ok) and any(c.raw.startswith(v) for v in vals if v != fact.value)
                nll.append(mr.value_nll(engine, c.prompt_ids, fact, mode, ws))
                cut = f.text.index(fact.name)
                ind = f.text[:cut] + fact.name + (' = "' if fact.kind == "str" else " = ")
                c2 = engine.complete(CompletionRequest(prefix=ind, path=f"{f.module}.py", snippets=block,
                                                       settings=CompletionSettings(mode=mode, max_new_tokens=12),
                                                       early_stop=False), ws)
                ink += fact.recalled(c2.raw)
                print(variant, fact.name, fact.value, "| test:", repr(c.raw[:14]), "| in-file:", repr(c2.raw[:14]), flush=True)
    summary = {"variant": variant, "seed": seed, "workspaces": nws, "cfg": cfg, "forms": forms, "reps": reps,
               "recalled": f"{k}/{n}", "in_file": f"{ink}/{n}", "wrong": wrong, "nll": round(sum(nll) / len(nll), 3),
               "s": round(time.time() - t0, 1)}
    if costs:
        summary["ratio"] = [c["ratio"] for c in costs]
        summary["final_loss"] = [c["loss"][-1] for c in costs]
    print("SUMMARY " + json.dumps(summary), flush=True)
