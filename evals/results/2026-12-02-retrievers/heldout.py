"""EM / ES per row and the paired tests against rg1-bm25, split into the screening samples (the seeded
`--limit 60 --seed 0` subset, where candidates were chosen) and the held-out rest of the dev set, plus
all samples. Reads the predictions-*.jsonl files of this folder; prints markdown.

    .venv/bin/python evals/results/2026-12-02-retrievers/heldout.py
"""
import sys
from pathlib import Path

from titans_lsp.evals.data import read_samples, select, task_id
from titans_lsp.evals.report import paired_test, summarize
from titans_lsp.evals.runner import read_predictions

here = Path(__file__).resolve().parent
DATA = here.parents[1] / "datasets" / "python-dev.jsonl.gz"
REFERENCE = "concat-rg1-bm25"
SCREEN_LIMIT, SEED = 60, 0

samples = read_samples(DATA).samples
every = {task_id(s) for s in samples}
screen = {task_id(s) for s in select(samples, SCREEN_LIMIT, SEED)}
parts = {"screening (60)": screen, f"held out ({len(every - screen)})": every - screen, f"all ({len(every)})": every}
labels = sorted(p.name[len("predictions-"):-len(".jsonl")] for p in here.glob("predictions-*.jsonl"))
rows = {label: read_predictions(here / f"predictions-{label}.jsonl") for label in labels}
reference = rows[REFERENCE]

print("| samples | row | n | EM % [95% CI] | ES [95% CI] | EM diff vs rg1-bm25 (only this / only rg1 right) | McNemar p | "
      "ES diff [95% CI] | permutation p |")
print("|---|---|---|---|---|---|---|---|---|")
for part, ids in parts.items():
    for label in labels:
        have = {i: r for i, r in rows[label].items() if i in ids}
        if len(have) < len(ids):
            continue  # this row was not run on every sample of this part
        e = summarize({label: have}, SEED)[label]
        cells = [part, label.removeprefix("concat-"), str(e["n"]), f"{e['em']:.1f} [{e['em_ci95'][0]:.1f}, {e['em_ci95'][1]:.1f}]",
                 f"{e['es']:.1f} [{e['es_ci95'][0]:.1f}, {e['es_ci95'][1]:.1f}]"]
        if label == REFERENCE:
            cells += ["reference", "", "", ""]
        elif all(i in reference for i in have):
            t = paired_test(have, {i: reference[i] for i in have}, SEED)
            lo, hi = t["es_diff_ci95"]
            cells += [f"{t['em_diff']:+.1f} "
                      f"({t['em_only_first']} / {t['em_only_second']})", f"{t['em_mcnemar_p']:.3g}",
                      f"{t['es_diff']:+.1f} [{lo:+.1f}, {hi:+.1f}]", f"{t['es_permutation_p']:.3g}"]
        else:
            cells += ["rg1-bm25 not run on these samples", "", "", ""]
        print("| " + " | ".join(cells) + " |")
sys.exit(0)
