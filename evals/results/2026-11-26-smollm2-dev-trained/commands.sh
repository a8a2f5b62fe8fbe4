#!/bin/sh
# Trained-memory rows: the checkpoint of ../2026-11-26-train-smollm2-cpu-142steps/ (24 packages, 142 steps).
OMP_NUM_THREADS=1 titans-lsp eval --data /tmp/dev.jsonl --modes memory --memory-checkpoint /work/runs-train/smollm2-cpu-full \
  --threads 1 --out evals/results/2026-11-26-smollm2-dev-trained
# predictions-none/concat/ablation.jsonl are COPIED from ../2026-11-26-smollm2-dev-full/: none and concat never
# activate the memory, so the trained parameters cannot change them; ablation multiplies the memory read by
# sigmoid(-100) ~ 4e-44, the base model to fp32. Trained hybrid was not run (CPU time).
titans-lsp eval --data /tmp/dev.jsonl --modes memory,ablation,concat,none --memory-checkpoint /work/runs-train/smollm2-cpu-full \
  --report-only --out evals/results/2026-11-26-smollm2-dev-trained
