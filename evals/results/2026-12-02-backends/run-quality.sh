#!/bin/sh
# Quality runs inside ONE shared slot (1 thread each):
#   cpu-slot sh evals/results/2026-12-02-backends/run-quality.sh   (from the worktree root)
# 1. local, 10 seeded samples, none/concat -> local-check/: are the local predictions still identical to
#    ../2026-11-26-smollm2-dev-full (same code path through LocalBackend)? check_identical.py says.
# 2. llamacpp, all 166 dev samples, none/concat -> llamacpp/ (llama-server with 1 thread).
# 3. local on all 166 -> local/ ONLY if step 1 found a difference; then the paired table (compare.md).
set -x
R=evals/results/2026-12-02-backends
OLD=evals/results/2026-11-26-smollm2-dev-full
date -u
.venv/bin/titans-lsp eval --data /work/data/dev.jsonl --modes none,concat --limit 10 --seed 0 --threads 1 --no-progress --out $R/local-check
if .venv/bin/python $R/check_identical.py $OLD $R/local-check none,concat > $R/local-check/identical.txt; then LOCAL=$OLD; else LOCAL=$R/local; fi
cat $R/local-check/identical.txt
date -u
.venv/bin/titans-lsp eval --data /work/data/dev.jsonl --modes none,concat --backend llamacpp --backend-threads 1 --threads 1 --no-progress --out $R/llamacpp
date -u
if [ "$LOCAL" = "$R/local" ]; then
  .venv/bin/titans-lsp eval --data /work/data/dev.jsonl --modes none,concat --threads 1 --no-progress --out $R/local
  date -u
fi
.venv/bin/python -m titans_lsp.evals.compare_runs --a $LOCAL --a-name local --b $R/llamacpp --b-name llamacpp --modes none,concat --out $R/compare.md
date -u
