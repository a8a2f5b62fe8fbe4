#!/bin/sh
# Second process (while run.sh holds the other slot): ablation and hybrid on the nested 30-sample subset.
set -x
D=evals/datasets/typescript-dev.jsonl.gz
O=evals/results/2026-12-02-typescript
.venv/bin/titans-lsp eval --data $D --threads 1 --no-progress --out $O --seed 0 --modes ablation,hybrid --limit 30
