#!/bin/sh
# Timing runs, one after another, all inside ONE `cpu-slot --exclusive` (nothing else heavy meanwhile):
#   cpu-slot --exclusive sh evals/results/2026-12-02-backends/run-timing.sh   (from the repository root)
# 1. GGUF encoding x flash attention for llama-server against local fp32 on one cold 2,000-token prompt
#    (tune-gguf.json; the first session's threads / micro-batch sweep is tune_llamacpp.py -> tune-llamacpp.json)
# 2. the backends bench: the typing trace through `titans-lsp serve` on local and llamacpp, none and concat,
#    then per-token decode and a cold 2,000-token request on the same prompts (bench-backends.json)
# 3. memory vs ablation on local through the server (bench-memory-ablation.json)
set -x
R=evals/results/2026-12-02-backends
date -u
TUNE_THREADS=2 .venv/bin/python $R/tune_gguf.py $R/tune-gguf.json Q4_1 Q8_0 > $R/output-tune-gguf.txt 2>&1
date -u
.venv/bin/titans-lsp bench --backends local,llamacpp --modes none,concat --cold-tokens 2000 --out $R/bench-backends.json > $R/output-bench-backends.txt 2>&1
date -u
.venv/bin/titans-lsp bench --server --modes memory,ablation --files 3 --out $R/bench-memory-ablation.json > $R/output-memory-ablation.txt 2>&1
date -u
