#!/bin/sh
# Memory over a long priming run (markitdown 0.1.9, the dev set's package, as unpacked by `eval build`).
# Run from the worktree root:  /work/bin/cpu-slot sh evals/results/2026-12-02-memory-variants/run-dynamics.sh
R=evals/results/2026-12-02-memory-variants
.venv/bin/python -m titans_lsp.evals.memory_dynamics --model default --threads 1 \
  --workspace ~/.cache/titans-lsp/packages/src/markitdown-0.1.9 --variants sgd titans ntp \
  --max-chunks 80 --every 10 --out $R/dynamics > $R/dynamics.log 2>&1
