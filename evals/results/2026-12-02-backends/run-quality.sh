#!/bin/sh
# Quality: local vs llamacpp on the committed Python dev set (the first N=60 of 166 samples in the seeded
# order unless N is set), none and concat, 1 thread each.
# Run from the repository root:  sh evals/results/2026-12-02-backends/run-quality.sh
# (The 2026-11-26 rows cannot serve as the local side: that run used a dev set that differs in 73 of 166
# task ids, see evals/datasets/README.md, so local runs again here on the same samples.)
set -x
R=evals/results/2026-12-02-backends
D=evals/datasets/python-dev.jsonl.gz
N=${N:-60}  # the first N of the seeded order (nested subsets); 166 is the whole set
B=${B:-llamacpp}  # the llamacpp rows' folder: llamacpp (first session: the Q4_1 file, flash attention auto),
                  # llamacpp-q8_0 (the backend as now: the cached Q8_0 re-encoding, flash attention off)
date -u
.venv/bin/titans-lsp eval --data $D --modes none,concat --limit $N --seed 0 --backend llamacpp --backend-threads 1 --threads 1 --no-progress --out $R/$B
date -u
.venv/bin/titans-lsp eval --data $D --modes none,concat --limit $N --seed 0 --backend local --threads 1 --no-progress --out $R/local
date -u
.venv/bin/python -m titans_lsp.evals.compare_runs --a $R/local --a-name local --b $R/$B --b-name $B --modes none,concat --out $R/compare-$B.md
date -u
