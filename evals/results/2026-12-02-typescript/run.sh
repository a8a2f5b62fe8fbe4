#!/bin/sh
# TypeScript dev set, all modes; nested --limit subsets so a partial run is a valid table.
set -x
D=evals/datasets/typescript-dev.jsonl.gz
O=evals/results/2026-12-02-typescript
E=".venv/bin/titans-lsp eval --data $D --threads 1 --no-progress --out $O --seed 0"
$E --modes none,concat --limit 60
$E --modes memory,ablation,hybrid --limit 60
$E --modes none,concat --limit 120
$E --modes none,concat
$E --modes memory,ablation,hybrid --limit 120
$E --modes memory,ablation,hybrid
