#!/bin/sh
# Dev-set subset (--limit, seeded): ntp memory vs ablation vs concat vs hybrid. Run from the worktree root:
#   /work/bin/cpu-slot sh evals/results/2026-12-02-memory-variants/run-dev.sh 24
R=evals/results/2026-12-02-memory-variants
.venv/bin/titans-lsp eval --data evals/datasets/python-dev.jsonl.gz --modes memory,ablation,concat,hybrid \
  --memory-config '{"update_rule": "ntp"}' --limit "${1:-24}" --seed 0 --threads 1 --no-progress \
  --out $R/dev-ntp-subset > $R/dev-ntp-subset.log 2>&1
