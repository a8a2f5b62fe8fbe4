#!/bin/sh
# Timing runs, one after another, all inside ONE `cpu-slot --exclusive` (nothing else heavy meanwhile):
#   cpu-slot --exclusive sh evals/results/2026-12-02-backends/run-timing.sh   (from the worktree root)
# 1. llama-server threads / micro-batch against local fp32 on one cold 2,000-token prompt (tune-llamacpp.json)
# 2. the backends bench: the typing trace through `titans-lsp serve` on local and llamacpp, none and concat,
#    then per-token decode and a cold 2,000-token request on the same prompts (bench-backends.json)
# 3. memory vs ablation on local through the server (bench-memory-ablation.json)
set -x
R=evals/results/2026-12-02-backends
date -u
.venv/bin/python $R/tune_llamacpp.py $R/tune-llamacpp.json > $R/output-tune.txt 2>&1
date -u
.venv/bin/titans-lsp bench --backends local,llamacpp --modes none,concat --cold-tokens 2000 --out $R/bench-backends.json > $R/output-bench-backends.txt 2>&1
date -u
.venv/bin/titans-lsp bench --server --modes memory,ablation --files 3 --out $R/bench-memory-ablation.json > $R/output-memory-ablation.txt 2>&1
date -u
