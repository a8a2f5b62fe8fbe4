#!/bin/sh
# The rest of the TypeScript table (resumable: rows already in predictions-*.jsonl are skipped).
# A full eval is a long job: run it as `cpu-slot --long sh evals/results/2026-12-02-typescript/run-rest.sh`.
set -x
D=evals/datasets/typescript-dev.jsonl.gz
O=evals/results/2026-12-02-typescript
E=".venv/bin/titans-lsp eval --data $D --threads 1 --no-progress --out $O --seed 0"
$E --modes memory,ablation,hybrid --limit 60
$E --modes none,concat,memory,ablation,hybrid --limit 60 --report-only
$E --modes none,concat
$E --modes memory,ablation,hybrid
$E --modes none,concat,memory,ablation,hybrid --report-only
