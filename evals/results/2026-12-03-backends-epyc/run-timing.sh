#!/bin/sh
# The 2026-12-02 timing runs again on an AMD EPYC machine (2 vCPUs), one after another, alone:
#   flock -x /work/.cpu-slot.lock sh evals/results/2026-12-03-backends-epyc/run-timing.sh   (repository root)
set -x
R=evals/results/2026-12-03-backends-epyc
T=evals/results/2026-12-02-backends
date -u
TUNE_THREADS=2 .venv/bin/python $T/tune_gguf.py $R/tune-gguf.json Q4_1 Q8_0 > $R/output-tune-gguf.txt 2>&1
date -u
.venv/bin/titans-lsp bench --backends local,llamacpp --modes none,concat --cold-tokens 2000 --out $R/bench-backends.json > $R/output-bench-backends.txt 2>&1
date -u
