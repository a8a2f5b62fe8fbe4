#!/bin/bash
# CPU training run of the default model's memory, then the positive control on the held-out repositories.
set -x
cd /work/wt/train
date
.venv/bin/titans-lsp train --model default --device cpu --pypi-file /work/runs-train/packages.txt --require-intra-imports \
  --heldout 4 --heldout-max-files 4 --max-files-per-repo 6 --seq-len 128 \
  --max-steps 60 --warmup-steps 5 --lr 1e-3 --gate-lr-scale 10 --time-limit 30 \
  --eval-every 1000 --checkpoint-every 10 --seed 0 --out /work/runs-train/smollm2-cpu --no-progress
date
.venv/bin/python -m titans_lsp.evals.positive_control --trained /work/runs-train/smollm2-cpu --max-files 6 \
  --prime-fraction 0.5 --bootstrap 2000 --out /work/runs-train/smollm2-cpu/positive_control
date
