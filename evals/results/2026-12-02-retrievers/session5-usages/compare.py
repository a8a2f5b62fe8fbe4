"""Session 5: the `usages` concat row re-run with the current retriever (session5-usages/) against the
committed rg1-bm25 row (paired, same samples) and against the session-3 `usages` row (what changed:
predictions, blocks, EM). Prints markdown; reads only the predictions files.

    .venv/bin/python evals/results/2026-12-02-retrievers/session5-usages/compare.py
"""
from pathlib import Path

from titans_lsp.evals.data import read_samples, select, task_id
from titans_lsp.evals.report import paired_test, summarize
from titans_lsp.evals.runner import read_predictions

here = Path(__file__).resolve().parent
results = here.parent
DATA = results.parents[1] / "datasets" / "python-dev.jsonl.gz"
SEED = 0

new = read_predictions(here / "predictions-concat-usages.jsonl")
old = read_predictions(results / "predictions-concat-usages.jsonl")
rg1 = read_predictions(results / "predictions-concat-rg1-bm25.jsonl")
samples = read_samples(DATA).samples
every = {task_id(s) for s in samples}
screen = {task_id(s) for s in select(samples, 60, SEED)}
parts = {f"all ({len(every)})": every, "screening (60)": screen, f"held out ({len(every - screen)})": every - screen}


def ci(e: dict, metric: str) -> str:
    return f"{e[metric]:.1f} [{e[metric + '_ci95'][0]:.1f}, {e[metric + '_ci95'][1]:.1f}]"


print(f"new usages rows: {len(new)} of {len(every)}\n")
print("| samples | row | n | EM % [95% CI] | ES [95% CI] | EM diff vs rg1-bm25 (only this / only rg1 right) | McNemar p |"
      " ES diff [95% CI] | permutation p |")
print("|---|---|---|---|---|---|---|---|---|")
for part, ids in parts.items():
    ids = ids & set(new)  # (only the samples the new row has, if it is not complete)
    for name, rows in (("rg1-bm25", rg1), ("usages (session 3)", old), ("usages (session 5)", new)):
        have = {i: rows[i] for i in ids}
        e = summarize({name: have}, SEED)[name]
        cells = [part if len(ids) == len(parts[part]) else f"{part}: {len(ids)} run", name, str(e["n"]), ci(e, "em"), ci(e, "es")]
        if name == "rg1-bm25":
            cells += ["reference", "", "", ""]
        else:
            t = paired_test(have, {i: rg1[i] for i in ids}, SEED)
            lo, hi = t["es_diff_ci95"]
            cells += [f"{t['em_diff']:+.1f} ({t['em_only_first']} / {t['em_only_second']})", f"{t['em_mcnemar_p']:.3g}",
                      f"{t['es_diff']:+.1f} [{lo:+.1f}, {hi:+.1f}]", f"{t['es_permutation_p']:.3g}"]
        print("| " + " | ".join(cells) + " |")

ids = sorted(set(new) & set(old))
t = paired_test({i: new[i] for i in ids}, {i: old[i] for i in ids}, SEED)
same_block = [i for i in ids if new[i]["context"] == old[i]["context"]]
same_pred = [i for i in ids if new[i]["prediction"] == old[i]["prediction"]]
print(f"\nsession 5 vs session 3 usages on {len(ids)} samples: same block {len(same_block)}, same prediction "
      f"{len(same_pred)}; EM {t['em_diff']:+.1f} (only new / only old right: {t['em_only_first']} / {t['em_only_second']}, "
      f"McNemar p {t['em_mcnemar_p']:.3g}); ES {t['es_diff']:+.2f}")
for i in ids:
    if new[i]["prediction"] != old[i]["prediction"] or new[i]["context"] != old[i]["context"]:
        print(f"- {i}: block {'same' if new[i]['context'] == old[i]['context'] else 'changed'}, prediction "
              f"{'same' if new[i]['prediction'] == old[i]['prediction'] else 'changed'}, EM {old[i]['em']} -> {new[i]['em']}, "
              f"ES {old[i]['es']:.1f} -> {new[i]['es']:.1f}")
