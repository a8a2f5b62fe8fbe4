#!/bin/sh
# The ntp rows of the recall test (seed 0; the ntp settings were tuned on seed 1). Run from the worktree root:
#   /work/bin/cpu-slot sh evals/results/2026-12-02-memory-variants/run-recall-ntp.sh
R=evals/results/2026-12-02-memory-variants
.venv/bin/python -m titans_lsp.evals.memory_recall --model default --threads 1 --variants ablation,ntp,hybrid-ntp \
  --seed 0 --out $R/recall-ntp > $R/recall-ntp.log 2>&1
.venv/bin/python -m titans_lsp.evals.memory_recall --model default --threads 1 --variants ablation,ntp --seed 0 \
  --ntp-config '{"ntp_steps": 16, "ntp_normalize": true, "ntp_lr": 2.0, "max_update_norm": 1e9}' \
  --out $R/recall-ntp16 > $R/recall-ntp16.log 2>&1
