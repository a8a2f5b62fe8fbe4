"""Re-derive, with the current code, everything of the baseline rows that does not need the model:
the cross-file block, the prompt length, the cleaned text, the metric-time prediction and scores."""
import json, sys
from pathlib import Path

here = Path(__file__).parent
from titans_lsp.evals.data import read_samples, select, task_id
from titans_lsp.evals.metrics import metric_language, score_sample
from titans_lsp.postprocess import clean_completion
from titans_lsp.retrieval.prompt import Snippet, build_prompt_ids, crossfile_block
from titans_lsp.evals.data import crossfile_chunks
from titans_lsp.engine import CompletionRequest
from titans_lsp.model.loading import load_model
from titans_lsp.model.generation import heal_prompt

tok = load_model("default", device="cpu").tokenizer
samples = {task_id(s): s for s in select(read_samples("/work/data/dev.jsonl").samples, 30, 0)}
diffs = 0
for mode in ("none", "concat"):
    for line in (here / "before" / f"predictions-{mode}.jsonl").open():
        row = json.loads(line)
        s = samples[row["task_id"]]
        lang = metric_language(str(s["metadata"].get("file") or ""))
        req = CompletionRequest(prefix=s["prompt"], language_id=lang.language_ids[0])
        block = crossfile_block([Snippet(n, t) for n, t in crossfile_chunks(s)], tok, 512, comment=req.language.comment) if mode == "concat" else ""
        ids = build_prompt_ids(tok, block, s["prompt"], 2048, 50)
        ids, _ = heal_prompt(tok, ids)
        sc = score_sample(s["prompt"], row["raw"], s["groundtruth"], lang)
        text = clean_completion(row["raw"], s["prompt"], "", "auto", req.language)
        got = (block, len(ids), text, sc.prediction, sc.reference, sc.em, sc.es, sc.id_em, sc.id_f1)
        want = (row["context"], row["prompt_tokens"], row["text"], row["prediction"], row["reference"], row["em"], row["es"], row["id_em"], row["id_f1"])
        if got != want:
            diffs += 1
            print(mode, row["task_id"], [i for i, (a, b) in enumerate(zip(got, want)) if a != b])
print("rows differing:", diffs)
